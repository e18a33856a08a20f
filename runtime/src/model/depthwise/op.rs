//! The depthwise convolution as a tract operator, and its arithmetic.

use std::sync::Arc;

use tract_linalg::multithread::par_chunks_mut;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, expand,
};

use super::{DEPTHWISE, MAX_TAPS};
use crate::model::int8::kernels::{
    Geometry, MID_RUN, RUN, SHORT_RUN, phase_planes, run_length, tap_offset,
};
use crate::model::int8::ops::on_plan_threads;
use crate::model::winograd::f32_image;
use crate::onnx::attr;

/// A depthwise convolution's parameters, as the rewrite wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseParams {
    /// `[channels, kh, kw]`, row-major.
    weights: Arc<Vec<f32>>,
    channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    bias: Vec<f32>,
    /// top, left, bottom, right
    pads: [usize; 4],
    /// The folded ReLU or Clip's bounds.
    clamp: Option<(f32, f32)>,
}

// Weights and bias are the model's constants, compared bit for bit.
impl Eq for DepthwiseParams {}

pub fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let name = &node.name;
    let w = attr::tensor_of(node, "weights").with_context(|| format!("{name}: no weights"))?;
    let weights = crate::onnx::tensor::floats(w).map_err(|e| anyhow!("{name}: {e}"))?;
    let (channels, kh, kw) = match w.dims[..] {
        [c, 1, kh, kw] if c > 0 && (1..=7).contains(&kh) && (1..=7).contains(&kw) => {
            (c as usize, kh as usize, kw as usize)
        }
        _ => bail!(
            "{name}: weights [channels, 1, kh ≤ 7, kw ≤ 7] expected, got {:?}",
            w.dims
        ),
    };
    ensure!(
        weights.len() == channels * kh * kw && kh * kw <= MAX_TAPS,
        "{name}: weights hold {} values",
        weights.len()
    );
    let bias = attr::floats(node, "bias").unwrap_or(&[]).to_vec();
    ensure!(
        bias.len() == channels,
        "{name}: {} bias values for {channels} channels",
        bias.len()
    );
    let stride = match attr::ints(node, "strides") {
        Some(&[sh, sw]) if (1..=2).contains(&sh) && (1..=2).contains(&sw) => {
            (sh as usize, sw as usize)
        }
        other => bail!("{name}: two strides of 1 or 2 expected, got {other:?}"),
    };
    let pads = match attr::ints(node, "pads") {
        Some(&[t, l, b, r])
            if [t, b].iter().all(|&p| (0..kh as i64).contains(&p))
                && [l, r].iter().all(|&p| (0..kw as i64).contains(&p)) =>
        {
            [t, l, b, r].map(|p| p as usize)
        }
        other => bail!("{name}: four pads smaller than the kernel expected, got {other:?}"),
    };
    let clamp = match (attr::float(node, "min"), attr::float(node, "max")) {
        (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
        (None, None) => None,
        other => bail!("{name}: min ≤ max expected, got {other:?}"),
    };
    let params = DepthwiseParams {
        weights: Arc::new(weights),
        channels,
        kernel: (kh, kw),
        stride,
        bias,
        pads,
        clamp,
    };
    Ok((expand(params), vec![]))
}

impl DepthwiseParams {
    fn geometry(&self, height: usize, width: usize) -> Geometry {
        Geometry {
            channels: self.channels,
            height,
            width,
            kernel: self.kernel,
            stride: self.stride,
            pads: self.pads,
        }
    }
}

impl Expansion for DepthwiseParams {
    fn name(&self) -> StaticName {
        DEPTHWISE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 4)?;
        s.given(&inputs[0].shape, move |s, shape| {
            let [t, l, b, r] = self.pads;
            let ((kh, kw), (sh, sw)) = (self.kernel, self.stride);
            // (n + pads − k) / s + 1, rounded down, as ⌈(n + pads − k + 1) / s⌉.
            let side = |size: &TDim, pads: usize, k: usize, stride: usize| {
                (size.clone() + (pads + 1) as i64 - k as i64).div_ceil(stride as u64)
            };
            let out: TVec<TDim> = tvec![
                shape[0].clone(),
                self.channels.to_dim(),
                side(&shape[2], t + b, kh, sh),
                side(&shape[3], l + r, kw, sw),
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
        let (height, width) = f32_image(model, inputs[0], self.channels, prefix)?;
        let geo = self.geometry(height, width);
        let out = geo.checked_output_size().with_context(|| {
            format!(
                "{prefix}: kernel {:?} larger than its padded {height}×{width} input",
                self.kernel
            )
        })?;
        let op = DepthwiseConv {
            params: self.clone(),
            geo,
            out,
        };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// The operator for one input size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthwiseConv {
    params: DepthwiseParams,
    geo: Geometry,
    /// Output height and width.
    out: (usize, usize),
}

impl DepthwiseConv {
    fn run(&self, x: &[f32]) -> TractResult<Tensor> {
        let (oh, ow) = self.out;
        let plane = oh * ow;
        let in_plane = self.geo.height * self.geo.width;
        let p = &self.params;
        let taps = p.kernel.0 * p.kernel.1;
        // SAFETY: every output plane is written whole by its channel's rows.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[1, p.channels, oh, ow])? };
        let mut view = out.try_as_plain_ram_mut()?;
        let values = view.as_slice_mut::<f32>()?;
        par_chunks_mut(values, plane, p.channels * plane * taps, |first, chunk| {
            let mut padded = Vec::new();
            for (i, out) in chunk.chunks_exact_mut(plane).enumerate() {
                let c = first + i;
                let channel = Channel {
                    weights: &p.weights[c * taps..][..taps],
                    bias: p.bias[c],
                    clamp: p.clamp,
                };
                channel.run(&x[c * in_plane..][..in_plane], &self.geo, &mut padded, out);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl Op for DepthwiseConv {
    fn name(&self) -> StaticName {
        "DepthwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} channels, kernel {:?}, stride {:?}, pads {:?}, clamp {:?}",
            self.params.channels,
            self.params.kernel,
            self.params.stride,
            self.params.pads,
            self.params.clamp
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input: &Tensor = &inputs[0];
        let x = input.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let out = on_plan_threads(|| self.run(x))?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for DepthwiseConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (oh, ow) = self.out;
        Ok(tvec!(f32::fact([1, self.params.channels, oh, ow])))
    }

    as_op!();
}

/// One channel's filter, bias and folded activation.
struct Channel<'a> {
    weights: &'a [f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
}

impl Channel<'_> {
    fn run(&self, plane: &[f32], geo: &Geometry, padded: &mut Vec<f32>, out: &mut [f32]) {
        let (ph, phase_w) = phase_planes(plane, geo, RUN, |x| x, padded);
        let mut taps = [(0f32, 0usize); MAX_TAPS];
        let (kh, kw) = geo.kernel;
        for (t, tap) in taps[..kh * kw].iter_mut().enumerate() {
            *tap = (self.weights[t], tap_offset(geo, ph, phase_w, t));
        }
        self.rows(&taps[..kh * kw], padded, phase_w, geo, out);
    }

    /// Every output row, in runs, on the widest multiply-add this CPU has.
    fn rows(
        &self,
        taps: &[(f32, usize)],
        padded: &[f32],
        phase_w: usize,
        geo: &Geometry,
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fused(
                c: &Channel,
                taps: &[(f32, usize)],
                padded: &[f32],
                phase_w: usize,
                geo: &Geometry,
                out: &mut [f32],
            ) {
                c.rows_with::<true>(taps, padded, phase_w, geo, out)
            }
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { fused(self, taps, padded, phase_w, geo, out) };
        }
        // aarch64 fuses in every NEON lane; armv7's baseline has no fused
        // multiply-add (a library call per value), nor x86-64's.
        self.rows_with::<{ cfg!(target_arch = "aarch64") }>(taps, padded, phase_w, geo, out)
    }

    #[inline(always)]
    fn rows_with<const FUSED: bool>(
        &self,
        taps: &[(f32, usize)],
        padded: &[f32],
        phase_w: usize,
        geo: &Geometry,
        out: &mut [f32],
    ) {
        let (oh, ow) = geo.output_size();
        let sh = geo.stride.0;
        for oy in 0..oh {
            let row = &mut out[oy * ow..][..ow];
            let down = &padded[oy * sh * phase_w..];
            let mut x = 0;
            while x < ow {
                let n = run_length(ow - x);
                let run = &mut row[x..(x + n).min(ow)];
                match n {
                    RUN => self.run_of::<RUN, FUSED>(taps, &down[x..], run),
                    MID_RUN => self.run_of::<MID_RUN, FUSED>(taps, &down[x..], run),
                    _ => self.run_of::<SHORT_RUN, FUSED>(taps, &down[x..], run),
                }
                x += n;
            }
        }
    }

    /// The outputs of `run` (at most `N`), every tap summed in registers from
    /// the bias, then clamped. A run past the end of the row reads on (into the
    /// next row or the plane's slack) and keeps only its outputs.
    #[inline(always)]
    fn run_of<const N: usize, const FUSED: bool>(
        &self,
        taps: &[(f32, usize)],
        padded: &[f32],
        run: &mut [f32],
    ) {
        let mut sum = sum_taps::<N, FUSED>(taps, padded, self.bias);
        if let Some((lo, hi)) = self.clamp {
            for s in &mut sum {
                *s = s.max(lo).min(hi);
            }
        }
        // Stored four at a time as fixed-size arrays (vector stores), as in the
        // int8 kernel: a loop over a run of any length stays scalar.
        let whole = run.len() / 4 * 4;
        let (fours, tail) = run.split_at_mut(whole);
        for (o, s) in fours.chunks_exact_mut(4).zip(sum.chunks_exact(4)) {
            o.copy_from_slice(s);
        }
        tail.copy_from_slice(&sum[whole..][..tail.len()]);
    }
}

/// `start` plus every tap's weight times its row of `N` values.
#[inline(always)]
fn sum_taps<const N: usize, const FUSED: bool>(
    taps: &[(f32, usize)],
    padded: &[f32],
    start: f32,
) -> [f32; N] {
    #[cfg(target_arch = "aarch64")]
    if N.is_multiple_of(4) && N <= 32 {
        // The plain loop below stays scalar on aarch64 (measured: one `fmadd`
        // per output and tap, the sums kept on the stack); `fmla` does four.
        use std::arch::aarch64::*;
        // SAFETY: every row is bounds-checked to N values (a multiple of 4, at
        // most 32: the accumulators cover it); NEON is baseline on aarch64.
        unsafe {
            let mut acc = [vdupq_n_f32(start); 8];
            for &(w, at) in taps {
                let row = padded[at..][..N].as_ptr();
                for (v, acc) in acc.iter_mut().enumerate().take(N / 4) {
                    *acc = vfmaq_n_f32(*acc, vld1q_f32(row.add(4 * v)), w);
                }
            }
            let mut sum = [0f32; N];
            for (v, acc) in acc.iter().enumerate().take(N / 4) {
                vst1q_f32(sum.as_mut_ptr().add(4 * v), *acc);
            }
            return sum;
        }
    }
    let mut sum = [start; N];
    for &(w, at) in taps {
        let row: &[f32; N] = padded[at..][..N].try_into().unwrap();
        for (s, &x) in sum.iter_mut().zip(row) {
            *s = if FUSED { x.mul_add(w, *s) } else { *s + x * w };
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, in f64.
    fn reference(p: &DepthwiseParams, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let geo = p.geometry(h, w);
        let (oh, ow) = geo.output_size();
        let ((kh, kw), (sh, sw)) = (p.kernel, p.stride);
        let [t, l, ..] = p.pads;
        let mut out = vec![0f32; p.channels * oh * ow];
        for c in 0..p.channels {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut sum = p.bias[c] as f64;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (y * sh + ky) as isize - t as isize;
                            let ix = (xo * sw + kx) as isize - l as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let v = x[(c * h + iy as usize) * w + ix as usize] as f64;
                            sum += v * p.weights[(c * kh + ky) * kw + kx] as f64;
                        }
                    }
                    let v = sum as f32;
                    out[(c * oh + y) * ow + xo] = match p.clamp {
                        Some((lo, hi)) => v.max(lo).min(hi),
                        None => v,
                    };
                }
            }
        }
        out
    }

    /// Strides 1 and 2, odd sizes, rows shorter and longer than a run,
    /// asymmetric padding, 5×5 and 1×3 kernels, with and without a clamp; on one
    /// thread and on two.
    #[test]
    fn matches_the_definition() {
        type Case = (
            usize,
            usize,
            usize,
            (usize, usize),
            (usize, usize),
            [usize; 4],
        );
        let cases: [Case; 8] = [
            (3, 8, 8, (3, 3), (1, 1), [1, 1, 1, 1]),
            (5, 7, 7, (3, 3), (2, 2), [1, 1, 1, 1]),
            (4, 13, 45, (3, 3), (1, 1), [1, 1, 1, 1]),
            // Rows of 28: one run of 32 that ends past the row.
            (2, 5, 28, (3, 3), (1, 1), [1, 1, 1, 1]),
            (2, 9, 70, (3, 3), (2, 2), [0, 0, 1, 1]),
            (3, 11, 10, (5, 5), (1, 2), [2, 2, 2, 2]),
            (2, 6, 33, (1, 3), (1, 1), [0, 1, 0, 0]),
            // Big enough that two threads do split it.
            (96, 56, 56, (3, 3), (1, 1), [1, 1, 1, 1]),
        ];
        for (i, (channels, h, w, kernel, stride, pads)) in cases.into_iter().enumerate() {
            let taps = kernel.0 * kernel.1;
            let p = DepthwiseParams {
                weights: Arc::new(crate::testing::float(channels * taps, 3 * i as u32 + 1)),
                channels,
                kernel,
                stride,
                bias: crate::testing::float(channels, 3 * i as u32 + 2),
                pads,
                clamp: (i % 2 == 0).then_some((0.0, 0.3)),
            };
            let x = crate::testing::float(channels * h * w, 3 * i as u32 + 3);
            let geo = p.geometry(h, w);
            let op = DepthwiseConv {
                out: geo.output_size(),
                params: p.clone(),
                geo,
            };
            let got = op.run(&x).unwrap();
            let pool = tract_linalg::multithread::Executor::multithread(2);
            let split = tract_linalg::multithread::multithread_tract_scope(pool, || {
                on_plan_threads(|| op.run(&x))
            })
            .unwrap();
            assert_eq!(split, got, "case {i}: two threads");
            let want = reference(&p, &x, h, w);
            let got = got.try_as_plain_ram().unwrap();
            let got = got.as_slice::<f32>().unwrap();
            assert_eq!(got.len(), want.len(), "case {i}");
            for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5,
                    "case {i}, output {j}: {a} against {b}"
                );
            }
        }
    }
}
