//! `edgebone bench`: inference time alone, median of many runs after warm-up,
//! so it can be set beside ONNX Runtime's on the same file and input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use edgebone::model::Profile;
use edgebone::{Bundle, ModelOptions, Pipeline, Task};
use serde::Serialize;
use tract_onnx::prelude::{IntoTValue, Tensor};

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Timed runs.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Raw little-endian f32 input tensor of the model's shape; zeros otherwise.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Run a quantized (QDQ) model as written, in float, instead of as int8 operators.
    #[arg(long)]
    qdq_as_float: bool,
    /// Leave 3×3 stride-1 convolutions to direct convolution instead of
    /// Winograd's F(4×4, 3×3) (float) and F(2×2, 3×3) (int8, on the cores where it runs).
    #[arg(long)]
    direct_conv: bool,
    /// Float layers in half precision, on cores with fp16 arithmetic (Pi 5, Jetson Orin).
    #[arg(long)]
    fp16: bool,
    /// Also time every operator of the plan over the timed runs (which then
    /// include the timing's own cost) and report them, slowest first.
    #[arg(long)]
    profile: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    model: &'a Path,
    threads: u16,
    winograd: bool,
    fp16: bool,
    /// The instruction-set features the kernels used (`EDGEBONE_KERNELS` forces fewer).
    kernels: String,
    runs: usize,
    median_ms: f64,
    p10_ms: f64,
    p90_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<Vec<OpReport>>,
}

/// One operator's mean time per run, with `--profile`.
#[derive(Serialize)]
struct OpReport {
    op: String,
    nodes: usize,
    ms: f64,
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let bundle = Bundle::open(&args.model)?;
    let options = ModelOptions {
        threads: args.threads.into(),
        integer: !args.qdq_as_float,
        winograd: !args.direct_conv,
        fp16: args.fp16,
        ..Default::default()
    };
    let task = Task::head(&bundle.manifest);
    let mut pipeline = Pipeline::load(bundle, task, &options)?;
    let input = input_tensor(&pipeline, args.input.as_deref())?.into_tvalue();
    for _ in 0..args.warmup {
        pipeline.infer(input.clone())?;
    }
    let mut profile = Profile::default();
    let mut times: Vec<f64> = (0..args.runs)
        .map(|_| {
            let start = Instant::now();
            if args.profile {
                pipeline.infer_profiled(input.clone(), &mut profile)?;
            } else {
                pipeline.infer(input.clone())?;
            }
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let report = Report {
        model: &args.model,
        threads: args.threads,
        winograd: !args.direct_conv,
        fp16: args.fp16,
        kernels: edgebone::model::family::describe(),
        runs: args.runs,
        median_ms: at(0.5),
        p10_ms: at(0.1),
        p90_ms: at(0.9),
        profile: args.profile.then(|| ops_report(&profile)),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn ops_report(profile: &Profile) -> Vec<OpReport> {
    profile
        .by_time()
        .into_iter()
        .map(|op| OpReport {
            op: op.op,
            nodes: op.nodes,
            ms: op.per_run.as_secs_f64() * 1e3,
        })
        .collect()
}

fn input_tensor(pipeline: &Pipeline, path: Option<&Path>) -> Result<Tensor> {
    let shape = pipeline.input_shape();
    let Some(path) = path else {
        return Tensor::zero::<f32>(&shape);
    };
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let expected = shape.iter().product::<usize>() * 4;
    if bytes.len() != expected {
        bail!(
            "{}: {} bytes, expected {expected} (f32 {shape:?})",
            path.display(),
            bytes.len()
        );
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor::from_shape(&shape, &values)
}
