//! int8 max pooling (a ResNet's stem, YOLOv5's SPPF).
//!
//! tract-core pools any type through a generic walk over each window: on a
//! Cortex-A72, ResNet-18's one 3×3 pool took 20 M instructions, 4% of its int8
//! inference. This pools one channel in two passes, the maximum along each row
//! and then down the columns, with the padding as −128 (which no maximum keeps
//! over a real value). The maximum is exact, so the bytes are tract's.

use tract_linalg::multithread::par_chunks_mut;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, expand,
};

use super::kernels::{self, Geometry};

pub const POOL: &str = "EdgeboneQMaxPool";

/// A max pool over 2-D windows, no dilation, windows within the padded input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QMaxPool {
    kernel: (usize, usize),
    stride: (usize, usize),
    /// top, left, bottom, right
    pads: [usize; 4],
}

/// Whether ONNX MaxPool attributes are ones [`QMaxPool`] covers: two spatial
/// axes, no dilation, no ceil mode, explicit or no padding.
pub fn covers(node: &NodeProto) -> bool {
    use crate::onnx::attr;
    let ints = |name: &str| attr::find(node, name).map(|a| a.ints.clone());
    let int = |name: &str| attr::find(node, name).map_or(0, |a| a.i);
    let kernel_ok = ints("kernel_shape").is_some_and(|k| k.len() == 2 && k.iter().all(|&v| v >= 1));
    let strides_ok = ints("strides").is_none_or(|s| s.len() == 2 && s.iter().all(|&v| v >= 1));
    let pads_ok = ints("pads").is_none_or(|p| p.len() == 4 && p.iter().all(|&v| v >= 0));
    let dilations_ok = ints("dilations").is_none_or(|d| d.iter().all(|&v| v == 1));
    let auto_pad = attr::find(node, "auto_pad").map(|a| a.s.as_slice());
    kernel_ok
        && strides_ok
        && pads_ok
        && dilations_ok
        && matches!(auto_pad, None | Some(b"NOTSET") | Some(b""))
        && int("ceil_mode") == 0
        && int("storage_order") == 0
}

pub fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    ensure!(
        covers(node),
        "{}: a max pool edgebone's does not cover",
        node.name
    );
    let ints = |name: &str| {
        crate::onnx::attr::find(node, name)
            .map(|a| a.ints.iter().map(|&v| v as usize).collect::<Vec<_>>())
    };
    let kernel = ints("kernel_shape").unwrap_or_default();
    let stride = ints("strides").unwrap_or_else(|| vec![1, 1]);
    let pads = ints("pads").unwrap_or_else(|| vec![0; 4]);
    Ok((
        expand(QMaxPool {
            kernel: (kernel[0], kernel[1]),
            stride: (stride[0], stride[1]),
            pads: [pads[0], pads[1], pads[2], pads[3]],
        }),
        vec![],
    ))
}

impl QMaxPool {
    /// One channel's geometry for an input of `shape` (NCHW).
    fn geometry(&self, shape: &[usize]) -> Geometry {
        Geometry {
            channels: 1,
            height: shape[2],
            width: shape[3],
            kernel: self.kernel,
            stride: self.stride,
            pads: self.pads,
        }
    }

    fn run(&self, input: &Tensor) -> TractResult<Tensor> {
        let shape = input.shape();
        let geo = self.geometry(shape);
        let (oh, ow) = geo.output_size();
        let plane = geo.height * geo.width;
        let x = input.try_as_plain_ram()?.as_slice::<i8>()?;
        // SAFETY: every value is written below, one plane per channel.
        let mut out = unsafe { Tensor::uninitialized::<i8>(&[shape[0], shape[1], oh, ow])? };
        let mut view = out.try_as_plain_ram_mut()?;
        let values = view.as_slice_mut::<i8>()?;
        let work = values.len() * self.kernel.0 * self.kernel.1;
        par_chunks_mut(values, oh * ow, work, |first, chunk| {
            let mut scratch = Scratch::default();
            for (i, out) in chunk.chunks_exact_mut(oh * ow).enumerate() {
                let x = &x[(first + i) * plane..][..plane];
                pool_channel(x, &geo, &mut scratch, out);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Buffers reused from one channel to the next.
#[derive(Default)]
pub struct Scratch {
    padded: Vec<i8>,
    /// The row maxima.
    rows: Vec<i8>,
    /// One row split into its stride phases.
    phases: Vec<i8>,
}

/// The max pool of one plane `x` into `out`.
pub fn pool_channel(x: &[i8], geo: &Geometry, scratch: &mut Scratch, out: &mut [i8]) {
    let Scratch {
        padded,
        rows,
        phases,
    } = scratch;
    let (oh, ow) = geo.output_size();
    let (ph, pw) = geo.padded();
    let (kh, kw) = geo.kernel;
    let (sh, sw) = geo.stride;
    let padded = kernels::pad_planes(x, geo, i8::MIN, padded);
    rows.clear();
    rows.resize(ph * ow, i8::MIN);
    for (src, dst) in padded.chunks_exact(pw).zip(rows.chunks_exact_mut(ow)) {
        match sw {
            1 => row_max::<1>(src, kw, phases, dst),
            2 => row_max::<2>(src, kw, phases, dst),
            _ => {
                for (ox, d) in dst.iter_mut().enumerate() {
                    *d = src[ox * sw..][..kw].iter().copied().fold(i8::MIN, i8::max);
                }
            }
        }
    }
    for (oy, dst) in out.chunks_exact_mut(ow).take(oh).enumerate() {
        dst.copy_from_slice(&rows[oy * sh * ow..][..ow]);
        for ky in 1..kh {
            let src = &rows[(oy * sh + ky) * ow..][..ow];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (*d).max(s);
            }
        }
    }
}

/// `dst[ox]` = the maximum of `src[ox · S..][..kw]`, one tap at a time over the
/// whole row from `S` contiguous phases of the row (`phases` is scratch), so
/// that every pass is contiguous and the compiler vectorizes it (with the
/// stride in the index it stayed scalar).
fn row_max<const S: usize>(src: &[i8], kw: usize, phases: &mut Vec<i8>, dst: &mut [i8]) {
    let ow = dst.len();
    let len = src.len() / S;
    phases.resize(S * len, 0);
    for (i, group) in src.chunks_exact(S).enumerate() {
        for (phase, &v) in group.iter().enumerate() {
            phases[phase * len + i] = v;
        }
    }
    dst.fill(i8::MIN);
    for kx in 0..kw {
        let taps = &phases[(kx % S) * len + kx / S..][..ow];
        for (d, &t) in dst.iter_mut().zip(taps) {
            *d = (*d).max(t);
        }
    }
}

impl Expansion for QMaxPool {
    fn name(&self) -> StaticName {
        POOL.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        s.equals(&outputs[0].datum_type, i8::datum_type())?;
        s.equals(&inputs[0].rank, 4)?;
        s.given(&inputs[0].shape, move |s, shape| {
            let concrete: Vec<usize> = shape
                .iter()
                .map(|d| d.to_usize())
                .collect::<Result<_, _>>()?;
            let (oh, ow) = self
                .geometry(&concrete)
                .checked_output_size()
                .with_context(|| {
                    format!(
                        "pool window {:?} larger than its padded input {concrete:?}",
                        self.kernel
                    )
                })?;
            let out: TVec<TDim> =
                tvec![shape[0].clone(), shape[1].clone(), oh.to_dim(), ow.to_dim()];
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
            fact.datum_type == i8::datum_type() && fact.shape.as_concrete().is_some(),
            "{prefix}: int8 input of known shape expected"
        );
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for QMaxPool {
    fn name(&self) -> StaticName {
        "QMaxPoolInt8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let out = super::ops::on_plan_threads(|| self.run(&inputs[0]))?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for QMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = inputs[0]
            .shape
            .as_concrete()
            .context("input shape must be known")?;
        let (oh, ow) = self.geometry(shape).output_size();
        Ok(tvec!(i8::fact([shape[0], shape[1], oh, ow])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool by its definition, padding excluded from every window.
    fn direct(x: &[i8], geo: &Geometry) -> Vec<i8> {
        let (oh, ow) = geo.output_size();
        let [top, left, ..] = geo.pads;
        let mut out = vec![i8::MIN; oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..geo.kernel.0 {
                    for kx in 0..geo.kernel.1 {
                        let y = (oy * geo.stride.0 + ky).checked_sub(top);
                        let x_ = (ox * geo.stride.1 + kx).checked_sub(left);
                        if let (Some(y), Some(xx)) = (y, x_)
                            && y < geo.height
                            && xx < geo.width
                        {
                            let v = x[y * geo.width + xx];
                            out[oy * ow + ox] = out[oy * ow + ox].max(v);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn equals_the_definition() {
        let cases = [
            ((3, 3), (2, 2), [1; 4], (11, 12)),
            ((5, 5), (1, 1), [2; 4], (9, 7)),
            ((2, 2), (2, 2), [0; 4], (8, 9)),
            ((3, 2), (1, 2), [1, 0, 0, 1], (6, 7)),
        ];
        // One scratch for every case, as the operator reuses it across channels.
        let mut scratch = Scratch::default();
        for (kernel, stride, pads, (height, width)) in cases {
            let geo = Geometry {
                channels: 1,
                height,
                width,
                kernel,
                stride,
                pads,
            };
            let x: Vec<i8> = (0..height * width)
                .map(|i| ((i * 73 + 19) % 256) as u8 as i8)
                .collect();
            let (oh, ow) = geo.output_size();
            let mut out = vec![0i8; oh * ow];
            pool_channel(&x, &geo, &mut scratch, &mut out);
            assert_eq!(out, direct(&x, &geo), "{kernel:?} {stride:?} {pads:?}");
        }
    }
}
