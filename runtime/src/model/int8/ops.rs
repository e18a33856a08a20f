//! The integer operators, as tract operators: parsed from the nodes
//! [`super::rewrite`] writes, typed and run inside tract's plan.

use std::sync::Arc;

use tract_linalg::BinOp;
use tract_linalg::mmm::{
    AsInputValue, EagerPackedInput, FusedSpec, MMMInputFormat, MMMInputValue, MatMatMul,
    MmmDispatch, PackedExoticFact, Query,
};
use tract_linalg::multithread::{
    Executor, current_tract_executor, multithread_tract_scope, par_chunks_mut,
};
use tract_linalg::pack::{PackedFormat, PackedI8K4};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{AttributeProto, NodeProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, expand,
};

use super::kernels::{self, Geometry, Panels, Requant};
use super::winograd::{self, Winograd};
use super::{madd, widening};

pub const CONV: &str = "EdgeboneQConv";
pub const ADD: &str = "EdgeboneQAdd";
pub const LOOKUP: &str = "EdgeboneQLookup";

/// i32 accumulators per block of a matrix-product convolution (256 KiB).
const BLOCK_ACCUMULATORS: usize = 64 * 1024;

/// Adds the parsers for the nodes [`super::rewrite`] writes; `winograd: false`
/// keeps 3×3 stride-1 convolutions off [`winograd`] (to compare, or to test).
pub fn register(onnx: &mut tract_onnx::Onnx, winograd: bool) {
    let conv = if winograd {
        parse_conv
    } else {
        parse_conv_direct
    };
    onnx.op_register.insert(CONV, conv);
    onnx.op_register.insert(ADD, parse_add);
    onnx.op_register.insert(LOOKUP, parse_lookup);
    onnx.op_register
        .insert(super::pool::POOL, super::pool::parse);
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> TractResult<&'a AttributeProto> {
    crate::onnx::attr::find(node, name)
        .with_context(|| format!("{}: no attribute {name}", node.name))
}

fn ints(node: &NodeProto, name: &str) -> TractResult<Vec<i64>> {
    Ok(attr(node, name)?.ints.clone())
}

fn int(node: &NodeProto, name: &str) -> TractResult<i32> {
    Ok(attr(node, name)?.i as i32)
}

fn requant_of(node: &NodeProto) -> TractResult<Requant> {
    Ok(Requant {
        zero: int(node, "zero_out")?,
        min: int(node, "min")?,
        max: int(node, "max")?,
    })
}

fn slice<D: Datum>(t: &Tensor) -> TractResult<&[D]> {
    t.try_as_plain_ram()?.as_slice::<D>()
}

/// Runs an operator's work on the plan's thread pool when it has one, with the
/// pool set as tract's executor there too (so matrix kernels and
/// [`par_chunks_mut`] split work across it). Running on the calling thread
/// instead leaves the pool's idle workers spinning against it: measured, a
/// 2-thread MobileNetV2 int8 was slower than a 1-thread one.
pub(crate) fn on_plan_threads<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 => {
            let executor = Executor::MultiThread(pool.clone());
            pool.install(|| multithread_tract_scope(executor, work))
        }
        _ => work(),
    }
}

/// An int8 tensor of `like`'s shape, filled by `fill(range, out)` a range of
/// whole planes at a time, in parallel on the plan's threads (the elementwise ops).
fn int8_like(
    like: &Tensor,
    fill: impl Fn(std::ops::Range<usize>, &mut [i8]) + Sync + Send,
) -> TractResult<TVec<TValue>> {
    let plane = like.shape().iter().skip(2).product::<usize>().max(1);
    let out = on_plan_threads(|| {
        let mut out = unsafe { Tensor::uninitialized::<i8>(like.shape())? };
        let mut view = out.try_as_plain_ram_mut()?;
        let values = view.as_slice_mut::<i8>()?;
        let total = values.len();
        par_chunks_mut(values, plane, total, |first, chunk| {
            fill(first * plane..first * plane + chunk.len(), chunk);
            Ok(())
        })?;
        TractResult::Ok(out)
    })?;
    Ok(tvec!(out.into_tvalue()))
}

/// Consecutive output channels of a convolution, `n` values each, in the
/// operator's output type.
enum Rows<'a> {
    Int8(&'a mut [i8]),
    Float(&'a mut [f32]),
}

impl Rows<'_> {
    /// The `i`-th channel's row.
    fn channel(&mut self, i: usize, n: usize) -> Rows<'_> {
        match self {
            Rows::Int8(r) => Rows::Int8(&mut r[i * n..][..n]),
            Rows::Float(r) => Rows::Float(&mut r[i * n..][..n]),
        }
    }
}

/// Runs `work(channels, rows)` over all output channels of `out` (`[1, c, h, w]`),
/// split in parallel on whole channels.
fn for_channels(
    out: &mut Tensor,
    work: usize,
    f: impl Fn(std::ops::Range<usize>, Rows) -> TractResult<()> + Sync + Send,
) -> TractResult<()> {
    let n: usize = out.shape()[2..].iter().product();
    let float = out.datum_type() == f32::datum_type();
    let mut view = out.try_as_plain_ram_mut()?;
    let range = |first: usize, len: usize| first..first + len / n;
    if float {
        let values = view.as_slice_mut::<f32>()?;
        par_chunks_mut(values, n, work, |first, chunk| {
            f(range(first, chunk.len()), Rows::Float(chunk))
        })
    } else {
        let values = view.as_slice_mut::<i8>()?;
        par_chunks_mut(values, n, work, |first, chunk| {
            f(range(first, chunk.len()), Rows::Int8(chunk))
        })
    }
}

fn bytes_as_i8(bytes: &[u8]) -> Vec<i8> {
    bytes.iter().map(|&b| b as i8).collect()
}

/// A convolution's integer parameters, as written by the rewrite.
#[derive(Debug, Clone)]
struct ConvParams {
    /// `[c_out, c_in / group, kh, kw]`
    weights: Arc<Tensor>,
    /// Per output channel, in accumulator units.
    bias: Vec<i32>,
    /// Per output channel: input scale · weight scale / output scale.
    scales: Vec<f32>,
    group: usize,
    stride: (usize, usize),
    pads: [usize; 4],
    zero_in: i8,
    requant: Requant,
    /// Write `acc · scale` as f32 instead of requantizing (the scales are then
    /// input scale · weight scale).
    float_out: bool,
    /// Whether 3×3 stride-1 layers may take [`winograd`].
    winograd: bool,
}

fn parse_conv(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(conv_params(node, true)?), vec![]))
}

fn parse_conv_direct(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(conv_params(node, false)?), vec![]))
}

fn conv_params(node: &NodeProto, winograd: bool) -> TractResult<ConvParams> {
    let w = attr(node, "weights")?
        .t
        .as_ref()
        .context("weights is not a tensor")?;
    // The rewrite writes these from a graph the loader has validated; checked
    // again because a node of this type may also come straight from a file.
    let name = &node.name;
    ensure!(
        w.dims.len() == 4 && w.dims.iter().all(|&d| d > 0),
        "{name}: weights of shape {:?}, [c_out, c_in / group, kh, kw] expected",
        w.dims
    );
    let shape: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
    let weights = Tensor::from_shape(&shape, &bytes_as_i8(&w.raw_data))?;
    let (&[sh, sw], &[top, left, bottom, right]) =
        (&ints(node, "strides")?[..], &ints(node, "pads")?[..])
    else {
        bail!("{name}: two strides and four pads expected");
    };
    ensure!(
        sh >= 1 && sw >= 1 && [top, left, bottom, right].iter().all(|&p| p >= 0),
        "{name}: strides below 1 or negative pads"
    );
    let bias: Vec<i32> = ints(node, "bias")?.iter().map(|&b| b as i32).collect();
    let scales = attr(node, "scales")?.floats.clone();
    let group = int(node, "group")?;
    ensure!(
        bias.len() == shape[0] && scales.len() == shape[0] && group >= 1,
        "{name}: {} bias values and {} scales for {} output channels, group {group}",
        bias.len(),
        scales.len(),
        shape[0]
    );
    let params = ConvParams {
        weights: Arc::new(weights),
        bias,
        scales,
        group: group as usize,
        stride: (sh as usize, sw as usize),
        // ONNX order: top, left, bottom, right
        pads: [top, left, bottom, right].map(|p| p as usize),
        zero_in: int(node, "zero_in")? as i8,
        requant: requant_of(node)?,
        float_out: int(node, "float_out")? != 0,
        winograd,
    };
    Ok(params)
}

impl ConvParams {
    fn output_channels(&self) -> usize {
        self.weights.shape()[0]
    }

    fn output_type(&self) -> DatumType {
        if self.float_out {
            f32::datum_type()
        } else {
            i8::datum_type()
        }
    }

    fn geometry(&self, shape: &[usize]) -> Geometry {
        let ws = self.weights.shape();
        Geometry {
            channels: shape[1],
            height: shape[2],
            width: shape[3],
            kernel: (ws[2], ws[3]),
            stride: self.stride,
            pads: self.pads,
        }
    }
}

impl Expansion for ConvParams {
    fn name(&self) -> StaticName {
        CONV.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        s.equals(&outputs[0].datum_type, self.output_type())?;
        s.equals(&inputs[0].rank, 4)?;
        s.given(&inputs[0].shape, move |s, shape| {
            let concrete: Vec<usize> = shape
                .iter()
                .map(|d| d.to_usize())
                .collect::<Result<_, _>>()?;
            ensure!(
                concrete.len() == 4,
                "input of shape {concrete:?}, NCHW expected"
            );
            let geometry = self.geometry(&concrete);
            let (oh, ow) = geometry.checked_output_size().with_context(|| {
                format!(
                    "kernel {:?} larger than its padded {}x{} input",
                    geometry.kernel, concrete[2], concrete[3]
                )
            })?;
            let out: TVec<TDim> = tvec![
                shape[0].clone(),
                self.output_channels().to_dim(),
                oh.to_dim(),
                ow.to_dim()
            ];
            s.equals(&outputs[0].shape, out)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?;
        ensure!(
            fact.datum_type == i8::datum_type(),
            "{prefix}: int8 input expected, got {:?}",
            fact.datum_type
        );
        let shape = fact
            .shape
            .as_concrete()
            .with_context(|| format!("{prefix}: input shape must be known"))?;
        ensure!(shape[0] == 1, "{prefix}: one image at a time");
        let op = QConv::new(prefix, self.clone(), self.geometry(shape))?;
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// Columns per block of a matrix-product convolution of `m` rows and `n`
/// columns: whole panels of `nr`, their accumulators within
/// [`BLOCK_ACCUMULATORS`].
fn block_columns(m: usize, n: usize, nr: usize) -> usize {
    (BLOCK_ACCUMULATORS / m).max(nr).next_multiple_of(nr).min(n)
}

/// How a convolution's accumulators are computed.
#[derive(Clone, Debug)]
enum Engine {
    /// Patches times the packed weights, by tract-linalg's int8 matrix kernels.
    Matrix(Matrix),
    /// Patches times weights by one of edgebone's own int8 kernels, on the
    /// cores where tract-linalg's int8 kernel is slower than float.
    Own(Own),
    /// 3×3 stride-1 convolutions by [`winograd`], where it runs.
    Winograd(Arc<Winograd>),
    Depthwise,
}

#[derive(Clone, Debug)]
struct Matrix {
    mmm: Box<dyn MatMatMul>,
    packing: usize,
    weights: Arc<Box<dyn MMMInputValue>>,
    /// Writes patches straight into the kernel's panels; `None` when the
    /// kernel's packing is not one [`PatchPacker`] knows.
    patches: Option<PatchPacker>,
}

/// A convolution's weights packed for one of edgebone's own kernels.
#[derive(Clone, Debug)]
enum OwnWeights {
    /// [`widening`]: aarch64 without the dot product (Cortex-A72), 16
    /// multiply-accumulates in 3 instructions where tract-linalg's takes 4.
    Widening(Vec<i8>),
    /// [`madd`]: x86-64 AVX2 without VNNI.
    Madd(Vec<i16>),
}

#[derive(Clone, Debug)]
struct Own {
    weights: Arc<OwnWeights>,
    k: usize,
    /// How the patches are gathered (the weights are packed to match).
    gather: Arc<kernels::Gather>,
}

impl Own {
    /// One of ours when it runs on this CPU and is exact for these weights.
    fn new(weights: &[i8], m: usize, k: usize, geometry: &Geometry) -> Option<Own> {
        let (packed, gather) = if widening::runs_here() && widening::exact_for(weights) {
            let gather = kernels::Gather::new(geometry, widening::KB);
            let ordered = gather.weights(weights, m, geometry.channels);
            (
                OwnWeights::Widening(widening::pack_weights(&ordered, m, k)),
                gather,
            )
        } else if madd::runs_here() {
            let gather = kernels::Gather::new(geometry, madd::KB);
            let ordered = gather.weights(weights, m, geometry.channels);
            (OwnWeights::Madd(madd::pack_weights(&ordered, m, k)), gather)
        } else {
            return None;
        };
        Some(Own {
            weights: Arc::new(packed),
            k,
            gather: Arc::new(gather),
        })
    }

    /// Tile rows and columns, the patch panels, and k padded.
    fn shape(&self) -> (usize, usize, Panels, usize) {
        match *self.weights {
            OwnWeights::Widening(_) => (
                widening::MR,
                widening::NR,
                widening::panels(self.k),
                widening::k_padded(self.k),
            ),
            OwnWeights::Madd(_) => (
                madd::MR,
                madd::NR,
                madd::panels(self.k),
                madd::k_padded(self.k),
            ),
        }
    }

    /// The products of rows `first..first + m` into `acc` (rows `stride` apart).
    fn matmul(
        &self,
        first: usize,
        patches: &[i8],
        (m, n, kp): (usize, usize, usize),
        bias: &[i32],
        acc: &mut [i32],
        stride: usize,
    ) {
        let shape = (m, n, kp);
        match &*self.weights {
            OwnWeights::Widening(w) => {
                widening::matmul(&w[first * kp..], patches, shape, bias, acc, stride)
            }
            OwnWeights::Madd(w) => {
                madd::matmul(&w[first * kp..], patches, shape, bias, acc, stride)
            }
        }
    }

    fn name(&self) -> &'static str {
        match *self.weights {
            OwnWeights::Widening(_) => "int8 widening kernel (smull, smlal2, sadalp)",
            OwnWeights::Madd(_) => "int8 AVX2 kernel (vpmaddwd)",
        }
    }
}

/// Packs blocks of a convolution's patch matrix for the matrix kernel without
/// writing the matrix first ([`kernels::pack_patches`]).
#[derive(Clone, Debug)]
struct PatchPacker {
    format: Box<dyn MMMInputFormat>,
    panels: Panels,
    alignment: usize,
    k: usize,
    /// How the patches are gathered (the weights are packed to match).
    gather: kernels::Gather,
}

impl PatchPacker {
    fn new(format: &dyn MMMInputFormat, geometry: &Geometry, k: usize) -> Option<PatchPacker> {
        let (format, group, r, len, alignment): (Box<dyn MMMInputFormat>, _, _, _, _) =
            if let Some(f) = format.downcast_ref::<PackedI8K4>() {
                let len = f.single_panel_len(k);
                (Box::new(f.clone()), 4, f.r, len, f.alignment())
            } else {
                let f = format.downcast_ref::<PackedFormat>()?;
                if f.dt.unquantized() != i8::datum_type() {
                    return None;
                }
                let len = f.single_panel_len(k);
                (Box::new(f.clone()), 1, f.r, len, f.alignment())
            };
        Some(PatchPacker {
            format,
            panels: Panels { r, group, len },
            alignment,
            k,
            gather: kernels::Gather::new(geometry, group),
        })
    }

    fn pack(
        &self,
        padded: &[i8],
        geometry: &Geometry,
        start: usize,
        width: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        let r = self.panels.r;
        let len = width.div_ceil(r) * self.panels.len;
        // SAFETY: every byte is written (zeroed) before the blob is read.
        let mut blob = unsafe { Blob::new_for_size_and_align(len, self.alignment) };
        let bytes = blob.as_bytes_mut();
        bytes.fill(0);
        // SAFETY: i8 and u8 have one size and alignment.
        let values = unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut i8, len) };
        // Panels split in parallel: each chunk is whole panels, columns from `first · r`.
        par_chunks_mut(values, self.panels.len, len, |first, chunk| {
            let from = first * r;
            let columns = (chunk.len() / self.panels.len * r).min(width - from);
            let columns = start + from..start + from + columns;
            self.gather
                .pack(padded, geometry, self.panels, columns, chunk);
            Ok(())
        })?;
        Ok(Box::new(EagerPackedInput {
            fact: PackedExoticFact {
                format: self.format.clone(),
                mn: width.to_dim(),
                k: self.k,
            },
            packed: Arc::new(blob),
            panel_bytes: self.panels.len,
            mn: width,
        }))
    }
}

/// Where a convolution's blocks of columns come from.
enum Columns<'a> {
    /// Gathered from the padded input straight into panels.
    Packed(&'a PatchPacker, &'a [i8]),
    /// Packed from a patch matrix by tract-linalg.
    Matrix(Tensor),
}

impl Columns<'_> {
    fn block(
        &self,
        format: &dyn MMMInputFormat,
        geometry: &Geometry,
        start: usize,
        width: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        match self {
            Columns::Packed(packer, padded) => packer.pack(padded, geometry, start, width),
            // A layer that fits one block is packed as it is, not copied first.
            Columns::Matrix(cols) if width == cols.shape()[1] => format.prepare_one(cols, 0, 1),
            Columns::Matrix(cols) => {
                format.prepare_one(&cols.slice(1, start, start + width)?, 0, 1)
            }
        }
    }
}

/// An int8 convolution: int8 in, int8 out, requantized per output channel.
#[derive(Clone, Debug)]
pub struct QConv {
    name: String,
    params: ConvParams,
    geometry: Geometry,
    engine: Engine,
    /// Bias with the input zero point folded in: `b − z_in · Σw` per channel.
    bias: Arc<Tensor>,
}

impl PartialEq for QConv {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for QConv {}

impl QConv {
    fn new(name: &str, params: ConvParams, geometry: Geometry) -> TractResult<QConv> {
        let c_out = params.output_channels();
        let per_channel = params.weights.len() / c_out;
        let weights = slice::<i8>(&params.weights)?;
        let depthwise =
            params.group == geometry.channels && params.group == c_out && params.group > 1;
        ensure!(
            params.group == 1 || depthwise,
            "{name}: grouped convolution (group {}) is neither plain nor depthwise",
            params.group
        );
        let bias: Vec<i32> = (0..c_out)
            .map(|c| {
                let sum: i32 = weights[c * per_channel..][..per_channel]
                    .iter()
                    .map(|&w| w as i32)
                    .sum();
                // Depthwise convs subtract the zero point themselves (they pad with 0).
                let fold = if depthwise {
                    0
                } else {
                    params.zero_in as i32 * sum
                };
                params.bias[c] - fold
            })
            .collect();
        let engine = if depthwise {
            Engine::Depthwise
        } else if params.winograd
            && params.group == 1
            && winograd::runs_here()
            && winograd::suits(&geometry, c_out)
        {
            Engine::Winograd(Arc::new(Winograd::new(weights, c_out, geometry.channels)))
        } else if let Some(own) = Own::new(weights, c_out, per_channel, &geometry) {
            Engine::Own(own)
        } else {
            let (oh, ow) = geometry.output_size();
            let query = Query {
                weight: i8::datum_type().into(),
                activation: i8::datum_type(),
                accumulators: tvec!(i32::datum_type()),
                store: Some(i32::datum_type()),
                allow_extractor: false,
                m: Some(c_out),
                k: Some(per_channel),
                n: Some(oh * ow),
            };
            let (mmm, packing, _) = MmmDispatch::native()
                .pick(&query)
                .with_context(|| format!("{name}: no int8 matrix kernel on this CPU"))?;
            let patches = PatchPacker::new(&*mmm.packings()[packing].1, &geometry, per_channel);
            let matrix = match &patches {
                Some(packer) => {
                    let ordered = packer.gather.weights(weights, c_out, geometry.channels);
                    Tensor::from_shape(&[c_out, per_channel], &ordered)?
                }
                None => (*params.weights)
                    .clone()
                    .into_shape(&[c_out, per_channel])?,
            };
            let packed = mmm.packings()[packing].0.prepare_one(&matrix, 1, 0)?;
            Engine::Matrix(Matrix {
                mmm,
                packing,
                weights: Arc::new(packed),
                patches,
            })
        };
        Ok(QConv {
            name: name.to_string(),
            params,
            geometry,
            engine,
            bias: Arc::new(tensor1(&bias)),
        })
    }

    fn run(&self, input: &Tensor) -> TractResult<Tensor> {
        match &self.engine {
            Engine::Matrix(matrix) => self.run_matrix(matrix, input),
            Engine::Own(own) => self.run_own(own, input),
            Engine::Winograd(engine) => self.run_winograd(engine, input),
            Engine::Depthwise => self.run_depthwise(input),
        }
    }

    fn run_matrix(&self, matrix: &Matrix, input: &Tensor) -> TractResult<Tensor> {
        let Matrix {
            mmm,
            packing,
            weights,
            patches,
        } = matrix;
        let (packing, weights) = (*packing, &***weights);
        let g = &self.geometry;
        let (oh, ow) = g.output_size();
        let (m, n) = (self.params.output_channels(), oh * ow);
        let (mut scratch, mut blocked) = (Vec::new(), Vec::new());
        let columns = match patches {
            Some(packer) => {
                let x = slice::<i8>(input)?;
                let padded = kernels::pad_planes(x, g, self.params.zero_in, &mut scratch);
                Columns::Packed(packer, packer.gather.input(padded, g, &mut blocked))
            }
            None => Columns::Matrix(self.patch_matrix(input)?),
        };
        let mut out = self.output(m, oh, ow)?;
        // Column blocks small enough that their i32 accumulators stay in cache
        // until requantized: one pass over a whole layer's accumulators is
        // memory-bound (measured: 30% of MobileNetV2's time before blocking).
        let block = block_columns(m, n, mmm.nr());
        let mut acc = unsafe { Tensor::uninitialized::<i32>(&[m, block])? };
        for start in (0..n).step_by(block) {
            let width = block.min(n - start);
            let packed = columns.block(&*mmm.packings()[packing].1, g, start, width)?;
            unsafe {
                let store = mmm.c_view(Some(0), Some(1)).wrap(&acc.view_mut());
                mmm.run(
                    m,
                    width,
                    &[
                        FusedSpec::AddMatMul {
                            a: AsInputValue::Borrowed(weights),
                            b: AsInputValue::Owned(packed),
                            packing,
                        },
                        FusedSpec::BinPerRow(self.bias.view(), BinOp::Add),
                        FusedSpec::Store(store),
                    ],
                )?;
            }
            self.finish_block(&mut out, slice::<i32>(&acc)?, block, (start, width))?;
        }
        Ok(out)
    }

    fn run_own(&self, own: &Own, input: &Tensor) -> TractResult<Tensor> {
        let g = &self.geometry;
        let (oh, ow) = g.output_size();
        let (m, n, k) = (self.params.output_channels(), oh * ow, own.k);
        let (mr, nr, panels, kp) = own.shape();
        let (mut scratch, mut blocked) = (Vec::new(), Vec::new());
        let padded = kernels::pad_planes(slice::<i8>(input)?, g, self.params.zero_in, &mut scratch);
        let padded = own.gather.input(padded, g, &mut blocked);
        let bias = slice::<i32>(&self.bias)?;
        let block = block_columns(m, n, nr);
        // Zeroed once: k padding is never written, and columns past a short
        // last block only make sums nobody reads.
        let mut patches = vec![0i8; block.div_ceil(nr) * panels.len];
        let mut acc = vec![0i32; m.next_multiple_of(mr) * block];
        let mut out = self.output(m, oh, ow)?;
        for start in (0..n).step_by(block) {
            let width = block.min(n - start);
            let used = &mut patches[..width.div_ceil(nr) * panels.len];
            par_chunks_mut(used, panels.len, width * k, |first, chunk| {
                let from = start + first * nr;
                let columns = (chunk.len() / panels.len * nr).min(start + width - from);
                let columns = from..from + columns;
                own.gather.pack(padded, g, panels, columns, chunk);
                Ok(())
            })?;
            let patches = &patches[..];
            par_chunks_mut(&mut acc, mr * block, m * width * k / 16, |first, chunk| {
                let row = first * mr;
                let rows = (chunk.len() / block).min(m - row);
                own.matmul(row, patches, (rows, width, kp), &bias[row..], chunk, block);
                Ok(())
            })?;
            self.finish_block(&mut out, &acc, block, (start, width))?;
        }
        Ok(out)
    }

    fn run_winograd(&self, engine: &Winograd, input: &Tensor) -> TractResult<Tensor> {
        let g = &self.geometry;
        let (oh, ow) = g.output_size();
        let m = self.params.output_channels();
        let tiled = Winograd::tiled(g);
        let mut scratch = Vec::new();
        let x = slice::<i8>(input)?;
        let padded = kernels::pad_planes(x, &tiled, self.params.zero_in, &mut scratch);
        let bias = slice::<i32>(&self.bias)?;
        let rows = engine.block_rows((oh, ow));
        let stride = 2 * rows * ow;
        let mut acc = vec![0i32; m * stride];
        let mut out = self.output(m, oh, ow)?;
        let tile_rows = oh.div_ceil(2);
        let mut buffers = winograd::Buffers::default();
        for start in (0..tile_rows).step_by(rows) {
            let block = winograd::Block {
                rows: start..(start + rows).min(tile_rows),
                output: (oh, ow),
                padded: tiled.padded(),
            };
            engine.block(padded, &block, bias, &mut acc, stride, &mut buffers)?;
            let first = 2 * start * ow;
            let width = (2 * block.rows.end).min(oh) * ow - first;
            self.finish_block(&mut out, &acc, stride, (first, width))?;
        }
        Ok(out)
    }

    /// The accumulators of a block of columns (`[m, block]`) requantized into
    /// columns `start..start + width` of `out`, split across the plan's threads
    /// by output channel.
    fn finish_block(
        &self,
        out: &mut Tensor,
        acc: &[i32],
        block: usize,
        (start, width): (usize, usize),
    ) -> TractResult<()> {
        let m = self.params.output_channels();
        for_channels(out, m * width, |channels, rows| {
            let acc = &acc[channels.start * block..];
            self.finish(channels, acc, block, (start, width), rows);
            Ok(())
        })
    }

    /// The patch matrix `[k, n]`, for kernels whose packing [`PatchPacker`]
    /// does not know (a 1×1 convolution's input is its own patch matrix).
    fn patch_matrix(&self, input: &Tensor) -> TractResult<Tensor> {
        let g = &self.geometry;
        let (oh, ow) = g.output_size();
        let n = oh * ow;
        let k = self.params.weights.len() / self.params.output_channels();
        if g.kernel == (1, 1) && g.stride == (1, 1) && g.pads == [0; 4] {
            return input.clone().into_shape(&[k, n]);
        }
        let mut cols = vec![0i8; k * n];
        kernels::im2col(
            slice::<i8>(input)?,
            &self.geometry,
            self.params.zero_in,
            &mut cols,
        );
        Tensor::from_shape(&[k, n], &cols)
    }

    fn output(&self, channels: usize, oh: usize, ow: usize) -> TractResult<Tensor> {
        let shape = [1, channels, oh, ow];
        unsafe { Tensor::uninitialized_dt(self.params.output_type(), &shape) }
    }

    /// The accumulators of `channels` (`width` columns each, `stride` apart in
    /// `acc`) into columns `start..start + width` of their output rows:
    /// requantized, or scaled to f32.
    fn finish(
        &self,
        channels: std::ops::Range<usize>,
        acc: &[i32],
        stride: usize,
        (start, width): (usize, usize),
        rows: Rows,
    ) {
        let accs = channels
            .clone()
            .map(|c| &acc[(c - channels.start) * stride..][..width]);
        let scales = &self.params.scales[channels.clone()];
        match rows {
            Rows::Int8(out) => {
                let n = out.len() / channels.len();
                for ((row, acc), &scale) in out.chunks_exact_mut(n).zip(accs).zip(scales) {
                    let dst = &mut row[start..][..width];
                    kernels::requantize(acc, scale, self.params.requant, dst);
                }
            }
            Rows::Float(out) => {
                let n = out.len() / channels.len();
                for ((row, acc), &scale) in out.chunks_exact_mut(n).zip(accs).zip(scales) {
                    for (d, &a) in row[start..][..width].iter_mut().zip(acc) {
                        *d = a as f32 * scale;
                    }
                }
            }
        }
    }

    fn run_depthwise(&self, input: &Tensor) -> TractResult<Tensor> {
        let g = &self.geometry;
        let (oh, ow) = g.output_size();
        let c_out = self.params.output_channels();
        let (kh, kw) = g.kernel;
        let x = slice::<i8>(input)?;
        let w = slice::<i8>(&self.params.weights)?;
        let bias = slice::<i32>(&self.bias)?;
        let mut out = self.output(c_out, oh, ow)?;
        let plane = g.height * g.width;
        let work = c_out * oh * ow * kh * kw;
        for_channels(&mut out, work, |channels, mut rows| {
            let mut padded = Vec::new();
            let mut acc = vec![0i32; oh * ow];
            for (i, c) in channels.clone().enumerate() {
                kernels::depthwise_channel(
                    &x[c * plane..][..plane],
                    g,
                    self.params.zero_in,
                    &w[c * kh * kw..][..kh * kw],
                    bias[c],
                    &mut padded,
                    &mut acc,
                );
                let n = oh * ow;
                self.finish(c..c + 1, &acc, n, (0, n), rows.channel(i, n));
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl Op for QConv {
    fn name(&self) -> StaticName {
        "QConvInt8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let engine = match &self.engine {
            Engine::Matrix(Matrix { mmm, .. }) => format!("int8 matrix kernel {}", mmm.name()),
            Engine::Own(own) => own.name().to_string(),
            Engine::Winograd(_) => "int8 Winograd F(2x2, 3x3), 16-bit products".to_string(),
            Engine::Depthwise => "int8 depthwise".to_string(),
        };
        Ok(vec![engine])
    }

    op_as_typed_op!();
}

impl EvalOp for QConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input: &Tensor = &inputs[0];
        let out = on_plan_threads(|| self.run(input))?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for QConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (oh, ow) = self.geometry.output_size();
        let shape = [1, self.params.output_channels(), oh, ow];
        Ok(tvec!(self.params.output_type().fact(shape)))
    }

    as_op!();
}

/// A sum of two int8 tensors of one shape, e.g. a residual connection.
#[derive(Debug, Clone, PartialEq)]
pub struct QAdd {
    zero_a: i32,
    zero_b: i32,
    /// Input scale over output scale, per side.
    ratio_a: f32,
    ratio_b: f32,
    requant: Requant,
}

fn parse_add(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let op = QAdd {
        zero_a: int(node, "zero_a")?,
        zero_b: int(node, "zero_b")?,
        ratio_a: attr(node, "ratio_a")?.f,
        ratio_b: attr(node, "ratio_b")?.f,
        requant: requant_of(node)?,
    };
    Ok((expand(op), vec![]))
}

impl Eq for QAdd {}

impl Expansion for QAdd {
    fn name(&self) -> StaticName {
        ADD.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        s.equals(&outputs[0].datum_type, i8::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        s.equals(&inputs[1].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let (a, b) = (model.outlet_fact(inputs[0])?, model.outlet_fact(inputs[1])?);
        ensure!(
            a.shape == b.shape && a.datum_type == i8::datum_type() && b.datum_type == a.datum_type,
            "{prefix}: two int8 tensors of one shape expected, got {a:?} and {b:?}"
        );
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for QAdd {
    fn name(&self) -> StaticName {
        "QAddInt8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QAdd {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let sides = [(self.zero_a, self.ratio_a), (self.zero_b, self.ratio_b)];
        let (a, b): (&Tensor, &Tensor) = (&inputs[0], &inputs[1]);
        let (xa, xb) = (slice::<i8>(a)?, slice::<i8>(b)?);
        int8_like(a, |range, out| {
            let (xa, xb) = (&xa[range.clone()], &xb[range]);
            kernels::add(xa, xb, sides, self.requant, out)
        })
    }
}

impl TypedOp for QAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i8::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// An elementwise function of one int8 tensor (a requantization, SiLU), by table.
#[derive(Debug, Clone, PartialEq)]
pub struct QLookup {
    table: Box<[i8; 256]>,
}

fn parse_lookup(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let bytes = &attr(node, "table")?
        .t
        .as_ref()
        .context("table is not a tensor")?
        .raw_data;
    let table: [i8; 256] = bytes_as_i8(bytes).try_into().map_err(|_| {
        format_err!(
            "{}: table of {} entries, 256 expected",
            node.name,
            bytes.len()
        )
    })?;
    Ok((
        expand(QLookup {
            table: Box::new(table),
        }),
        vec![],
    ))
}

impl Eq for QLookup {}

impl Expansion for QLookup {
    fn name(&self) -> StaticName {
        LOOKUP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        s.equals(&outputs[0].datum_type, i8::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        ensure!(model.outlet_fact(inputs[0])?.datum_type == i8::datum_type());
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for QLookup {
    fn name(&self) -> StaticName {
        "QLookupInt8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QLookup {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input: &Tensor = &inputs[0];
        let values = slice::<i8>(input)?;
        int8_like(input, |range, out| {
            kernels::lookup(&values[range], &self.table, out)
        })
    }
}

impl TypedOp for QLookup {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i8::fact(inputs[0].shape.clone())))
    }

    as_op!();
}
