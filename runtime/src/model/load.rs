use std::path::PathBuf;
use std::sync::Arc;

use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

use super::profile::{self, Profile};
use super::{Bundle, analyse, depthwise, family, fp16, int8, validate, winograd};
use crate::error::{Error, Result, chain};

/// Which tensors a loaded model returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Outputs {
    /// The graph's own output (logits, detections).
    #[default]
    Head,
    /// The manifest's feature taps, in manifest order.
    Taps,
}

#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Threads for matrix products (1 = run on the calling thread).
    pub threads: usize,
    /// Input width and height; `None` keeps the manifest's size.
    pub input_size: Option<(u32, u32)>,
    /// Run quantized (QDQ) models as integer operators; `false` runs them as
    /// written, in float (the reference the integer path is checked against).
    pub integer: bool,
    /// Compute 3×3 stride-1 float convolutions by Winograd's F(4×4, 3×3)
    /// ([`super::winograd`]), and int8 ones by F(2×2, 3×3) on the cores where
    /// that pays ([`super::int8::winograd`]); `false` leaves them to direct
    /// convolution.
    pub winograd: bool,
    /// Float layers in half precision where the core computes it natively
    /// (ARMv8.2 FEAT_FP16: Pi 5, Jetson Orin). Off by default: docs/speed.md has
    /// its accuracy on the shared photos. Other cores, and quantized models, stay
    /// in f32 and the load log says so.
    pub fp16: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            threads: 1,
            input_size: None,
            integer: true,
            winograd: true,
            fp16: false,
        }
    }
}

/// A network loaded and optimized once for one input size, run frame after frame.
///
/// The plan's state is kept between runs so its scratch buffers are reused.
pub struct Model {
    state: TypedSimpleState,
    input_shape: [usize; 4],
    /// The plan takes f16 (fp16 on): frames are cast on the way in.
    half_input: bool,
    path: PathBuf,
}

impl Model {
    pub fn load(bundle: &Bundle, options: &ModelOptions, outputs: Outputs) -> Result<Model> {
        family::init()?;
        let path = bundle.network_path();
        let spec = &bundle.manifest.input;
        let (width, height) = options.input_size.unwrap_or((spec.width, spec.height));
        let input_shape = [1, 3, height as usize, width as usize];
        let outputs: Vec<&str> = match outputs {
            Outputs::Head => bundle
                .manifest
                .output
                .name
                .iter()
                .map(|s| s.as_str())
                .collect(),
            Outputs::Taps => bundle
                .manifest
                .taps
                .iter()
                .map(|t| t.tensor.as_str())
                .collect(),
        };
        let plan =
            optimize(&path, input_shape, &outputs, options).map_err(|e| Error::model(&path, &e))?;
        let half_input = plan
            .model()
            .input_fact(0)
            .is_ok_and(|f| f.datum_type == f16::datum_type());
        let state = plan.spawn().map_err(|e| Error::model(&path, &e))?;
        log::info!(
            "loaded {} for {width}x{height} input, {} thread(s), kernels {}",
            path.display(),
            options.threads,
            family::describe()
        );
        Ok(Model {
            state,
            input_shape,
            half_input,
            path,
        })
    }

    /// `[1, 3, height, width]`
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// The shape of output `index` when the plan fixes it (it does for a fixed
    /// input size and the usual networks).
    pub fn output_shape(&self, index: usize) -> Option<Vec<usize>> {
        let fact = self.state.model().output_fact(index).ok()?;
        fact.shape.as_concrete().map(<[usize]>::to_vec)
    }

    pub fn run(&mut self, input: TValue) -> Result<TVec<TValue>> {
        let input = self.prepared(input)?;
        self.state
            .run(tvec![input])
            .map_err(|e| Error::Inference(format!("{}: {}", self.path.display(), chain(&e))))
    }

    /// [`Model::run`], timing every operator into `profile`.
    pub fn run_profiled(&mut self, input: TValue, profile: &mut Profile) -> Result<TVec<TValue>> {
        let input = self.prepared(input)?;
        profile::run(&mut self.state, tvec![input], profile)
            .map_err(|e| Error::Inference(format!("{}: {}", self.path.display(), chain(&e))))
    }

    /// The input checked against the plan's shape, in the plan's precision.
    fn prepared(&self, input: TValue) -> Result<TValue> {
        if input.shape() != self.input_shape {
            return Err(Error::Inference(format!(
                "{}: input shape {:?}, the model was loaded for {:?}",
                self.path.display(),
                input.shape(),
                self.input_shape
            )));
        }
        let input = if self.half_input {
            let half = fp16::convert(&input, f16::datum_type())
                .map_err(|e| Error::Inference(format!("{}: {e}", self.path.display())))?;
            half.into_tvalue()
        } else {
            input
        };
        Ok(input)
    }
}

fn optimize(
    path: &std::path::Path,
    input_shape: [usize; 4],
    outputs: &[&str],
    options: &ModelOptions,
) -> TractResult<Arc<TypedRunnableModel>> {
    let mut onnx = tract_onnx::onnx();
    let mut proto = onnx.proto_model_for_path(path)?;
    if let Some(graph) = &proto.graph {
        validate::graph(graph).map_err(TractError::msg)?;
    }
    // Always: tract's own QuantizeLinear can overflow (see the module).
    int8::quantize::register(&mut onnx);
    if options.integer {
        int8::register(&mut onnx, options.winograd);
        log_summary(path, &int8::rewrite(&mut proto, outputs));
    }
    if options.winograd {
        winograd::register(&mut onnx);
        let convs = winograd::rewrite(&mut proto, outputs);
        log::info!(
            "{}: {} convolutions by Winograd F(4x4,3x3)",
            path.display(),
            convs.len()
        );
    }
    if depthwise::PAYS {
        depthwise::register(&mut onnx);
        let convs = depthwise::rewrite(&mut proto, outputs);
        log::info!(
            "{}: {} depthwise convolutions by edgebone's kernel",
            path.display(),
            convs.len()
        );
    }
    let model = onnx.model_for_proto_model(&proto)?;
    // tract indexes its list of inputs here (a panic on a graph with none,
    // found by the `onnx_bytes` fuzz target).
    if model.inputs.is_empty() {
        return Err(TractError::msg(
            "the graph has no input; an image tensor [1, 3, height, width] expected",
        ));
    }
    let mut model = model.with_input_fact(0, f32::fact(input_shape).into())?;
    if !outputs.is_empty() {
        model = model.with_outputs_by_name(outputs)?;
    }
    // Shapes are known only once tract has inferred them; checked before it
    // builds the operators that would compute with them. The analysis stops at
    // the first node it cannot type (see `analyse` for why it is ours); a
    // convolution whose kernel does not fit is named from what was inferred
    // before that, rather than the first node after it that fails.
    let analysed = analyse::analyse(&mut model);
    if let Some(graph) = &proto.graph {
        validate::convolutions_fit(graph, &model)?;
    }
    analysed?;
    let executor = if options.threads > 1 {
        Executor::multithread(options.threads)
    } else {
        Executor::SingleThread
    };
    let run_options = RunOptions {
        executor: Some(executor),
        ..Default::default()
    };
    let mut typed = model.into_typed()?.into_decluttered()?;
    if options.fp16 && half_precision_applies(path, &proto) {
        typed = fp16::to_f16(&typed)?;
    }
    typed
        .into_optimized()?
        .into_runnable_with_options(&run_options)
}

/// Whether the float layers can run in f16: on a core with fp16 arithmetic, and
/// for a float model (a quantized one keeps its float boundary layers in f32,
/// where its scales were measured).
fn half_precision_applies(path: &std::path::Path, proto: &tract_onnx::pb::ModelProto) -> bool {
    let quantized = proto
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear");
    let reason = if !family::has_fp16() {
        "this core has no fp16 arithmetic"
    } else if quantized {
        "the model is quantized"
    } else {
        log::info!("{}: float layers in fp16", path.display());
        return true;
    };
    log::info!(
        "{}: fp16 asked, float layers stay f32: {reason}",
        path.display()
    );
    false
}

/// Says which quantized layers run as integer operators and why others do not.
fn log_summary(path: &std::path::Path, summary: &int8::Summary) {
    if !summary.is_quantized() {
        return;
    }
    log::info!(
        "{}: {} quantized layers run as int8 operators, {} in float",
        path.display(),
        summary.integer.len(),
        summary.float.len()
    );
    for (node, reason) in &summary.float {
        log::info!("{}: {node} runs in float: {reason}", path.display());
    }
}
