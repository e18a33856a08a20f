//! `quantize`: the host tool. PyTorch checkpoints to edgebone bundles
//! (`convert`, `inspect`) and post-training int8 quantization of bundles: float
//! bundle and calibration photos in; an int8 QDQ bundle out, with a
//! float-against-int8 report.

mod activations;
mod auto;
mod bundle;
mod calibrate;
mod convert;
mod eval;
mod fold;
mod head;
mod images;
mod qdq;
#[cfg(test)]
mod testing;
mod torch;
mod train;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use edgebone::Bundle;
use edgebone::onnx;

use calibrate::Method;

#[derive(Parser)]
#[command(
    name = "quantize",
    version,
    about = "PyTorch checkpoints to edgebone bundles, and their int8 quantization"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Static int8 quantization: weights per output channel (symmetric),
    /// activations per tensor, ranges from calibration photos.
    Int8(Int8Args),
    /// Float against int8 on a folder of photos (top-1 with the folder's
    /// labels.tsv, agreement, output cosine).
    Eval(EvalArgs),
    /// A torchvision checkpoint (state_dict) or an Ultralytics YOLOv5 `.pt` to
    /// an edgebone bundle: the ONNX graph of the architecture with the
    /// checkpoint's weights, a manifest with its preprocessing and feature taps,
    /// labels. An ONNX file is wrapped in a bundle as it is.
    Convert(ConvertArgs),
    /// The named tensors of a PyTorch checkpoint, bundle or ONNX file, in
    /// state_dict order, as PyTorch prints them, and the parameter count; for a
    /// bundle with a new or trained head, which layer is the head and what is frozen.
    Inspect {
        /// A torch.save file (zip archive or legacy format), a bundle or an ONNX file.
        checkpoint: PathBuf,
    },
    /// A bundle with its classifier replaced by a fresh N-class linear layer
    /// (PyTorch's default Linear init, seeded); the backbone is kept as it is.
    Head(HeadArgs),
    /// A new classifier trained on a frozen backbone from an ImageFolder-style
    /// folder (one subfolder of photos per class; folder names become labels).
    TrainHead(train::TrainArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("classes_or_labels").required(true).args(["classes", "labels"])))]
struct HeadArgs {
    /// The bundle whose classifier is replaced.
    bundle: PathBuf,
    /// The number of classes (labels class0, class1, …).
    #[arg(long)]
    classes: Option<usize>,
    /// A labels file, one class name per line; its line count is the class count.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Where to write the new bundle.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct Int8Args {
    /// The float model bundle (a folder with manifest.toml).
    model: PathBuf,
    /// Photos like the ones the device will see; never the evaluation photos.
    #[arg(long)]
    calib: PathBuf,
    /// Where to write the int8 bundle.
    #[arg(long)]
    out: PathBuf,
    /// How activation ranges are chosen. `auto` tries min-max, percentile and
    /// entropy, each with and without bias correction and with the first and
    /// last layers int8 or float, by k-fold cross-validation on the calibration
    /// photos (agreement with float), and keeps the best.
    #[arg(long, value_enum, default_value_t = Method::Auto)]
    method: Method,
    /// For `--method auto`: how many folds the calibration photos are split into.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// For `--method percentile`: the share of each sign's values kept inside the range.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Leave the first and last weighted layers (the stem, the classifier or
    /// detect heads) in float; `auto` decides this itself.
    #[arg(long)]
    ends_float: bool,
    /// A layer (node name) to leave in float; repeatable.
    #[arg(long)]
    keep_float: Vec<String>,
    /// Keep ReLU/ReLU6 nodes between a layer and its quantize step instead of
    /// folding them into it.
    #[arg(long)]
    keep_clamps: bool,
    /// Correct each layer's bias for the average output shift its int8 weights
    /// cause (from the calibration photos' per-channel input means); `auto`
    /// decides this itself.
    #[arg(long)]
    bias_correction: bool,
    /// Compare float and int8 on this folder of photos once written.
    #[arg(long)]
    eval: Option<PathBuf>,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
struct ConvertArgs {
    /// A torch.save file holding a state_dict (bare, or under `state_dict` or
    /// `model`), an Ultralytics YOLOv5 `.pt` (a pickled model), or an ONNX file.
    #[arg(required_unless_present = "random_seed")]
    checkpoint: Option<PathBuf>,
    /// The architecture, as torchvision names it; `yolov5` for an Ultralytics
    /// YOLOv5 of any size (read from its yaml), `yolov5n`, `yolov5s`, … to also
    /// check the size.
    #[arg(long, value_enum)]
    arch: convert::Arch,
    /// For an ONNX file: class names, one per line (default: ImageNet's for 1000
    /// classes, COCO's for an 80-class YOLOv5).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Where to write the bundle.
    #[arg(long)]
    out: PathBuf,
    /// No checkpoint: seeded weights (for tests and benchmarks, never accuracy).
    #[arg(long, conflicts_with = "checkpoint")]
    random_seed: Option<u64>,
}

#[derive(Args)]
struct EvalArgs {
    /// The float bundle.
    float: PathBuf,
    /// The int8 bundle.
    int8: PathBuf,
    /// Photos to compare on: folders (with a labels.tsv for top-1 accuracy) or
    /// single images; repeatable, or several after one `--images`.
    #[arg(long, required = true, num_args = 1..)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
struct Output {
    /// Print the evaluation as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Threads for inference.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Int8(args) => int8(args),
        Command::Eval(args) => eval(args),
        Command::Convert(args) => convert(args),
        Command::Inspect { checkpoint } => inspect(checkpoint),
        Command::Head(args) => new_head(args),
        Command::TrainHead(args) => train::train_head(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("{err:#}");
            ExitCode::from(2)
        }
    }
}

fn int8(args: &Int8Args) -> Result<()> {
    if !(50.0..=100.0).contains(&args.percentile) {
        anyhow::bail!(
            "--percentile {}: expected a value between 50 and 100",
            args.percentile
        );
    }
    let source = Bundle::open(&args.model)?;
    let files = images::list(&args.calib, "calibration")?;
    let auto = args.method == Method::Auto;
    if auto && args.folds < 2 {
        anyhow::bail!("--folds {}: expected 2 or more", args.folds);
    }
    if auto && (args.bias_correction || args.ends_float) {
        log::warn!(
            "--bias-correction, --ends-float: --method auto tries both itself; give a method to force them"
        );
    }
    let mut proto = onnx::load(&source.network_path())?;
    let graph = onnx::graph_mut(&mut proto);
    fold::inline_identities(graph);
    let folded = fold::fold_batch_norms(graph)?;
    let keep: HashSet<String> = args.keep_float.iter().cloned().collect();
    let ends = qdq::end_layers(graph);
    let mut plans = auto::Plans {
        all_int8: qdq::plan(graph, &keep)?,
        wide_ends: qdq::plan(graph, &keep.iter().chain(&ends).cloned().collect())?,
    };
    let clamps = plans.all_int8.clamps.len();
    if args.keep_clamps {
        plans.all_int8.clamps.clear();
        plans.wide_ends.clamps.clear();
    }
    let plan = &plans.all_int8;
    log::info!(
        "{}: {} BatchNorm folded, {} layers to int8 ({} kept float), {} activations to calibrate on {} photos",
        source.network_path().display(),
        folded,
        plan.layers.len(),
        plan.float_layers.len(),
        plan.activations.len(),
        files.len()
    );
    let spec = &source.manifest.input;
    let head = match &source.manifest.output.name {
        Some(name) => name.clone(),
        None => onnx::graph_mut(&mut proto).output[0].name.clone(),
    };
    let (tensors, folds) = if auto {
        (plans.activations(), args.folds)
    } else if args.ends_float {
        (plans.wide_ends.activations.clone(), 1)
    } else {
        (plans.all_int8.activations.clone(), 1)
    };
    let observed = activations::observe(
        &proto,
        spec,
        &files,
        &tensors,
        args.method != Method::MinMax,
        folds,
        auto.then_some(head.as_str()),
    )?;
    let search = auto::Search {
        source: &source,
        proto: &proto,
        plans: &plans,
        ends,
        percentile: args.percentile,
        threads: args.output.threads,
    };
    if auto && observed.used < args.folds {
        anyhow::bail!(
            "--folds {}: expected 2 to {} (the readable calibration photos in {})",
            args.folds,
            observed.used,
            args.calib.display()
        );
    }
    let (setting, choice) = if auto {
        let choice = search.run(&observed)?;
        if args.output.json {
            log::info!("{choice}");
        } else {
            println!("{choice}");
        }
        (choice.setting.expect("auto chose a setting"), Some(choice))
    } else {
        let setting = auto::Setting {
            method: args.method,
            percentile: args.percentile,
            bias_correction: args.bias_correction,
            wide_ends: args.ends_float,
        };
        (setting, None)
    };
    let model = auto::apply(
        &proto,
        plans.get(&setting),
        &observed.merged(None),
        &setting,
    )?;
    log::info!(
        "{} of {clamps} ReLU/ReLU6 clamps after a layer folded into its quantize step{}",
        model.folded.len(),
        if args.keep_clamps {
            " (--keep-clamps)"
        } else {
            ""
        }
    );
    let record = search.record(&model, &setting, observed.used, choice);
    let out = bundle::write(&source, &model.proto, &args.out, &record)?;
    head::copy_sidecar(&source.dir, &out)?;
    log::info!("wrote {} ({})", out.display(), setting.name());
    if let Some(dir) = &args.eval {
        let int8 = Bundle::open(&out)?;
        print(
            &eval::compare(
                &source,
                &int8,
                std::slice::from_ref(dir),
                args.output.threads,
            )?,
            &args.output,
        )?;
    }
    Ok(())
}

fn eval(args: &EvalArgs) -> Result<()> {
    let float = Bundle::open(&args.float)?;
    let int8 = Bundle::open(&args.int8)?;
    print(
        &eval::compare(&float, &int8, &args.images, args.output.threads)?,
        &args.output,
    )
}

fn convert(args: &ConvertArgs) -> Result<()> {
    if let Some(path) = args
        .checkpoint
        .as_ref()
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
    {
        return convert_onnx(args, path);
    }
    if args.labels.is_some() {
        anyhow::bail!("--labels is for an ONNX file; a checkpoint's labels come with it");
    }
    let (converted, origin) = match (&args.checkpoint, args.random_seed) {
        (Some(path), _) => {
            let checkpoint = torch::read(path)?;
            let converted = convert::from_checkpoint(args.arch, &checkpoint)
                .with_context(|| path.display().to_string())?;
            let sha = edgebone::model::sha256_hex(path)?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            (converted, format!("{name} (sha256 {sha})"))
        }
        (None, Some(seed)) => (
            convert::from_formula(args.arch, Some(seed))?,
            format!("seeded weights (--random-seed {seed}): never for accuracy"),
        ),
        (None, None) => unreachable!("clap requires one"),
    };
    let out = convert::write_bundle(args.arch, &converted, &args.out, &origin)?;
    check_loads(&out)?;
    let params: usize = converted
        .model
        .graph
        .iter()
        .flat_map(|g| &g.initializer)
        .filter(|t| !t.name.ends_with("running_mean") && !t.name.ends_with("running_var"))
        .map(|t| t.dims.iter().product::<i64>() as usize)
        .sum();
    log::info!(
        "wrote {} ({}, {} classes, {params} parameters, taps {})",
        out.display(),
        args.arch.name(),
        converted.classes,
        converted
            .taps
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// The bundle must load as `edgebone classify` (or `detect`) loads it.
fn check_loads(out: &std::path::Path) -> Result<()> {
    let bundle = Bundle::open(out)?;
    let task = edgebone::Task::head(&bundle.manifest);
    edgebone::Pipeline::load(bundle, task, &Default::default())?;
    Ok(())
}

fn convert_onnx(args: &ConvertArgs, path: &std::path::Path) -> Result<()> {
    let labels = args
        .labels
        .as_deref()
        .map(|file| head::labels(None, Some(file)))
        .transpose()?;
    let out = convert::from_onnx(path, args.arch, labels, &args.out)?;
    check_loads(&out)?;
    let bundle = Bundle::open(&out)?;
    log::info!(
        "wrote {} around {} ({}, {} labels, taps {})",
        out.display(),
        path.display(),
        args.arch.name(),
        bundle.labels.len(),
        bundle
            .manifest
            .taps
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn new_head(args: &HeadArgs) -> Result<()> {
    let labels = head::labels(args.classes, args.labels.as_deref())?;
    let source = Bundle::open(&args.bundle)?;
    let mut proto = onnx::load(&source.network_path())?;
    let graph = onnx::graph_mut(&mut proto);
    let old = head::find(graph, source.manifest.output.name.as_deref())
        .with_context(|| source.network_path().display().to_string())?;
    let (w, b) = head::linear_init(labels.len(), old.features, args.seed);
    let new = head::replace(graph, &old, &w, &b)?;
    let sidecar = head::Sidecar::new(&source, &new, args.seed);
    let out = head::write_bundle(
        &source,
        &proto,
        &new,
        &labels,
        &args.out,
        &sidecar,
        "a new head from `quantize head`",
    )?;
    // The bundle must load as `edgebone classify` loads it.
    let bundle = Bundle::open(&out)?;
    edgebone::Pipeline::load(
        bundle,
        edgebone::Task::Classify { top_k: 1 },
        &Default::default(),
    )?;
    log::info!(
        "wrote {}: {} [{}, {}] replaced by [{}, {}] ({}, seed {}); the rest frozen",
        out.display(),
        old.layer,
        old.classes,
        old.features,
        new.classes,
        new.features,
        head::INIT,
        args.seed
    );
    Ok(())
}

fn inspect(path: &std::path::Path) -> Result<()> {
    // A bundle or an ONNX file: its weights under their PyTorch names
    // (edgebone's own inspect), printed the way a checkpoint's are.
    let network = if path.is_dir() {
        Some(Bundle::open(path)?.network_path())
    } else {
        (path.extension().is_some_and(|e| e == "onnx")).then(|| path.to_path_buf())
    };
    if let Some(network) = network {
        let info = edgebone::inspect::inspect(&network)?;
        let mut out = String::new();
        for p in &info.parameters {
            let shape: Vec<usize> = p.shape.iter().map(|&d| d.max(0) as usize).collect();
            out += &format!("{} {}\n", p.name, torch::TorchSize(&shape));
        }
        // The checkpoint's rule: BatchNorm's running statistics are buffers.
        let count: u64 = info
            .parameters
            .iter()
            .filter(|p| !p.name.ends_with("running_mean") && !p.name.ends_with("running_var"))
            .map(|p| p.numel())
            .sum();
        out += &format!(
            "total: {count} parameters in {} tensors ({})\n",
            info.parameters.len(),
            network.display()
        );
        if let Some(sidecar) = path
            .is_dir()
            .then(|| head::Sidecar::read(path))
            .transpose()?
            .flatten()
        {
            out += &head_lines(&sidecar, &info.parameters);
        }
        print!("{out}");
        return Ok(());
    }
    let checkpoint = torch::read(path)?;
    let sd = &checkpoint.state_dict;
    let mut out = String::new();
    for (name, tensor) in &sd.entries {
        out += &format!("{name} {}\n", torch::TorchSize(&tensor.shape));
    }
    let mut dtypes: Vec<&str> = Vec::new();
    for (_, t) in &sd.entries {
        if !dtypes.contains(&t.dtype.torch_name()) {
            dtypes.push(t.dtype.torch_name());
        }
    }
    let rule = if sd.parameters.is_some() {
        "parameters: the model's own, buffers aside"
    } else {
        "parameters: floating tensors other than running_mean/running_var"
    };
    out += &format!(
        "total: {} parameters in {} tensors ({}; {rule})\n",
        sd.parameter_count(),
        sd.len(),
        dtypes.join(", ")
    );
    let format = match checkpoint.format {
        torch::Format::Zip => "zip archive",
        torch::Format::Legacy => "legacy pickle stream",
    };
    let what = match &checkpoint.model {
        Some(model) => format!("a pickled {} (read as data)", model.class),
        None => "state_dict".to_string(),
    };
    let key = if checkpoint.key.is_empty() {
        format!(", a {what}")
    } else {
        format!(", {what} under `{}`", checkpoint.key)
    };
    out += &format!("format: {format}{key}\n");
    print!("{out}");
    Ok(())
}

/// Which tensors are the head (from the bundle's head.json) and which are frozen.
fn head_lines(sidecar: &head::Sidecar, parameters: &[edgebone::inspect::Parameter]) -> String {
    // An int8 bundle holds the head's weight and bias quantized, under other
    // names (their levels, scales, zero points) but in the head's module.
    let is_head = |p: &&edgebone::inspect::Parameter| {
        sidecar.parameters.contains(&p.name)
            || p.name
                .rsplit_once('.')
                .is_some_and(|(m, _)| m == sidecar.layer)
    };
    let state = match &sidecar.training {
        Some(t) => format!(
            "trained by `quantize train-head` on {} (best epoch {}, validation accuracy {:.4})",
            t["data"].as_str().unwrap_or("?"),
            t["best_epoch"]["epoch"],
            t["best_epoch"]["val_accuracy"].as_f64().unwrap_or(f64::NAN)
        ),
        None => format!("new, untrained (seed {})", sidecar.seed),
    };
    let head: Vec<String> = parameters
        .iter()
        .filter(is_head)
        .map(|p| {
            let shape: Vec<usize> = p.shape.iter().map(|&d| d.max(0) as usize).collect();
            format!("{} {}", p.name, torch::TorchSize(&shape))
        })
        .collect();
    let frozen: Vec<_> = parameters.iter().filter(|p| !is_head(p)).collect();
    let frozen_count: u64 = frozen
        .iter()
        .filter(|p| !p.name.ends_with("running_mean") && !p.name.ends_with("running_var"))
        .map(|p| p.numel())
        .sum();
    format!(
        "head: {} ({}), {} classes: {state}\n\
         frozen: the other {} tensors, {frozen_count} parameters (the backbone of {}, sha256 {})\n",
        sidecar.layer,
        head.join(", "),
        sidecar.classes,
        frozen.len(),
        sidecar.source,
        sidecar.source_sha256
    )
}

fn print(report: &eval::Report, output: &Output) -> Result<()> {
    if output.json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
