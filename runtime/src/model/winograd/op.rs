//! The Winograd convolution as a tract operator: 36 matrix products by
//! tract-linalg's f32 kernels (whichever this CPU has), between transforms that
//! write straight into the kernels' packed panels and read straight out of their
//! results.

use std::sync::Arc;

use tract_linalg::mmm::{
    AsInputValue, EagerPackedInput, FusedSpec, MMMInputValue, MatMatMul, MmmDispatch,
    PackedExoticFact, Query,
};
use tract_linalg::multithread::par_chunks_mut;
use tract_linalg::pack::PackedFormat;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, expand,
};

use super::WINOGRAD;
use super::transform::{self, IN, LANES, Lanes, OUT, POINTS};
use crate::model::int8::ops::on_plan_threads;

/// A 3×3, stride-1, ungrouped convolution's parameters, as the rewrite wrote them.
#[derive(Debug, Clone)]
pub struct WinogradParams {
    /// `[c_out, c_in, 3, 3]`, row-major.
    weights: Arc<Vec<f32>>,
    c_out: usize,
    c_in: usize,
    bias: Vec<f32>,
    /// top, left, bottom, right
    pads: [usize; 4],
    relu: bool,
}

pub fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    use crate::onnx::attr;
    let name = &node.name;
    let w = attr::tensor_of(node, "weights").with_context(|| format!("{name}: no weights"))?;
    let weights = crate::onnx::tensor::floats(w).map_err(|e| anyhow!("{name}: {e}"))?;
    let (c_out, c_in) = match w.dims[..] {
        [o, i, 3, 3] if o > 0 && i > 0 => (o as usize, i as usize),
        _ => bail!(
            "{name}: weights [c_out, c_in, 3, 3] expected, got {:?}",
            w.dims
        ),
    };
    ensure!(
        weights.len() == c_out * c_in * 9,
        "{name}: weights hold {} values",
        weights.len()
    );
    let bias = attr::floats(node, "bias").unwrap_or(&[]).to_vec();
    ensure!(
        bias.len() == c_out,
        "{name}: {} bias values for {c_out} channels",
        bias.len()
    );
    let pads = match attr::ints(node, "pads") {
        Some(&[t, l, b, r]) if [t, l, b, r].iter().all(|&p| (0..3).contains(&p)) => {
            [t, l, b, r].map(|p| p as usize)
        }
        other => bail!("{name}: four pads of 0 to 2 expected, got {other:?}"),
    };
    let params = WinogradParams {
        weights: Arc::new(weights),
        c_out,
        c_in,
        bias,
        pads,
        relu: attr::int(node, "relu") == Some(1),
    };
    Ok((expand(params), vec![]))
}

impl Expansion for WinogradParams {
    fn name(&self) -> StaticName {
        WINOGRAD.into()
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
            let out: TVec<TDim> = tvec![
                shape[0].clone(),
                self.c_out.to_dim(),
                shape[2].clone() + (t + b) as i64 - 2,
                shape[3].clone() + (l + r) as i64 - 2,
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
        let (height, width) = f32_image(model, inputs[0], self.c_in, prefix)?;
        let op = WinogradConv::new(prefix, self, height, width)?;
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// The height and width of a float convolution's input, which must be a known
/// `[1, channels, h, w]` f32 tensor. Shared with the depthwise operator.
pub(crate) fn f32_image(
    model: &TypedModel,
    input: OutletId,
    channels: usize,
    prefix: &str,
) -> TractResult<(usize, usize)> {
    let fact = model.outlet_fact(input)?;
    ensure!(
        fact.datum_type == f32::datum_type(),
        "{prefix}: f32 input expected"
    );
    let shape = fact
        .shape
        .as_concrete()
        .with_context(|| format!("{prefix}: input shape must be known"))?;
    ensure!(
        shape.len() == 4 && shape[0] == 1 && shape[1] == channels,
        "{prefix}: input [1, {channels}, h, w] expected, got {shape:?}"
    );
    Ok((shape[2], shape[3]))
}

/// Where tiles sit in the input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tiles {
    /// Output height and width.
    out: (usize, usize),
    /// Tiles down and across.
    count: (usize, usize),
    /// The padded input plane, rounded up to whole tiles.
    padded: (usize, usize),
    /// Input height, width and the top, left padding.
    input: (usize, usize),
    offset: (usize, usize),
}

impl Tiles {
    fn new(height: usize, width: usize, [t, l, b, r]: [usize; 4]) -> Option<Tiles> {
        let oh = (height + t + b).checked_sub(2)?;
        let ow = (width + l + r).checked_sub(2)?;
        let count = (oh.div_ceil(OUT), ow.div_ceil(OUT));
        Some(Tiles {
            out: (oh, ow),
            count,
            padded: (count.0 * OUT + 2, count.1 * OUT + 2),
            input: (height, width),
            offset: (t, l),
        })
    }

    fn len(&self) -> usize {
        self.count.0 * self.count.1
    }

    /// The top-left corner of tile `t`, in tile rows and columns.
    fn corner(&self, t: usize) -> (usize, usize) {
        (t / self.count.1 * OUT, t % self.count.1 * OUT)
    }
}

/// How the transformed input is laid out for the matrix kernel: tract-linalg's
/// packed panels of `r` tiles (k-major inside a panel), written in place.
#[derive(Debug, Clone)]
struct Panels {
    format: PackedFormat,
    /// f32 values per panel.
    len: usize,
}

impl Panels {
    #[inline(always)]
    fn at(&self, channel: usize, tile: usize) -> usize {
        let r = self.format.r;
        (tile / r) * self.len + channel * r + tile % r
    }
}

#[derive(Debug, Clone)]
pub struct WinogradConv {
    name: String,
    c_out: usize,
    c_in: usize,
    bias: Arc<Vec<f32>>,
    relu: bool,
    pads: [usize; 4],
    tiles: Tiles,
    mmm: Box<dyn MatMatMul>,
    packing: usize,
    panels: Panels,
    /// `G g Gᵀ` of every kernel, one packed `[c_out, c_in]` matrix per point.
    kernels: Arc<Vec<Box<dyn MMMInputValue>>>,
}

impl PartialEq for WinogradConv {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for WinogradConv {}

/// A pointer shared by threads that write disjoint elements through it.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every user writes a disjoint set of elements (documented where used),
// and the buffer outlives the parallel section.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl WinogradConv {
    fn new(name: &str, p: &WinogradParams, height: usize, width: usize) -> TractResult<Self> {
        let tiles = Tiles::new(height, width, p.pads).with_context(|| {
            format!("{name}: a {height}x{width} input is smaller than the 3x3 kernel")
        })?;
        let query = Query {
            weight: f32::datum_type().into(),
            activation: f32::datum_type(),
            accumulators: tvec!(f32::datum_type()),
            store: Some(f32::datum_type()),
            allow_extractor: false,
            m: Some(p.c_out),
            k: Some(p.c_in),
            n: Some(tiles.len()),
        };
        let (mmm, packing, _) = MmmDispatch::native()
            .pick(&query)
            .with_context(|| format!("{name}: no f32 matrix kernel on this CPU"))?;
        let format = mmm.packings()[packing]
            .1
            .downcast_ref::<PackedFormat>()
            .filter(|f| f.dt == f32::datum_type())
            .with_context(|| {
                format!(
                    "{name}: {} packs its input in an unknown layout",
                    mmm.name()
                )
            })?
            .clone();
        let panels = Panels {
            len: format.single_panel_len(p.c_in),
            format,
        };
        let per_kernel: Vec<[f32; POINTS]> =
            p.weights.chunks_exact(9).map(transform::kernel).collect();
        let kernels = (0..POINTS)
            .map(|xi| {
                let u: Vec<f32> = per_kernel.iter().map(|u| u[xi]).collect();
                let u = Tensor::from_shape(&[p.c_out, p.c_in], &u)?;
                mmm.packings()[packing].0.prepare_one(&u, 1, 0)
            })
            .collect::<TractResult<Vec<_>>>()?;
        Ok(WinogradConv {
            name: name.to_string(),
            c_out: p.c_out,
            c_in: p.c_in,
            bias: Arc::new(p.bias.clone()),
            relu: p.relu,
            pads: p.pads,
            tiles,
            mmm,
            packing,
            panels,
            kernels: Arc::new(kernels),
        })
    }

    fn run(&self, x: &[f32]) -> TractResult<Tensor> {
        let n = self.tiles.len();
        let mut transformed: Vec<Option<Box<dyn MMMInputValue>>> =
            self.transform_input(x)?.into_iter().map(Some).collect();
        let mut products = unsafe { Tensor::uninitialized::<f32>(&[POINTS, self.c_out, n])? };
        let stores = (0..POINTS)
            .map(|xi| {
                let view = products.view_at_prefix_mut(&[xi])?;
                // SAFETY: each store writes its own point's [c_out, n] block of
                // `products`, which outlives the products below.
                Ok(unsafe { self.mmm.c_view(Some(0), Some(1)).wrap(&view) })
            })
            .collect::<TractResult<Vec<_>>>()?;
        // The 36 products are independent: split across threads by point, so
        // that the deep layers (few tiles, one panel or two) keep every thread busy.
        let work = POINTS * self.c_out * n * self.c_in;
        par_chunks_mut(&mut transformed, 1, work, |first, chunk| {
            for (i, b) in chunk.iter_mut().enumerate() {
                let xi = first + i;
                let b = b.take().context("a point's input used twice")?;
                unsafe {
                    self.mmm.run(
                        self.c_out,
                        n,
                        &[
                            FusedSpec::AddMatMul {
                                a: AsInputValue::Borrowed(&*self.kernels[xi]),
                                b: AsInputValue::Owned(b),
                                packing: self.packing,
                            },
                            FusedSpec::Store(stores[xi]),
                        ],
                    )?;
                }
            }
            Ok(())
        })?;
        self.transform_output(products.try_as_plain_ram()?.as_slice::<f32>()?)
    }

    /// `Bᵀ d B` of every tile of every channel, in the matrix kernel's panels
    /// (one packed `[c_in, tiles]` matrix per point), split across threads by channel.
    fn transform_input(&self, x: &[f32]) -> TractResult<Vec<Box<dyn MMMInputValue>>> {
        let tiles = self.tiles;
        let n = tiles.len();
        let format = &self.panels.format;
        let bytes = format.len(self.c_in, n) * 4;
        let (panel, written) = (self.panels.len * 4, self.c_in * format.r * 4);
        let mut blobs: Vec<Blob> = (0..POINTS)
            .map(|_| {
                // SAFETY: the transform writes every channel row of every panel but
                // the last panel's columns past the tiles; those and each panel's
                // padding rows (which the kernel reads) are zeroed here, and only
                // those: this runs per layer per frame.
                let mut b = unsafe { Blob::new_for_size_and_align(bytes, format.alignment()) };
                let values = b.as_bytes_mut();
                for p in values.chunks_mut(panel) {
                    p[written..].fill(0);
                }
                values[bytes - panel..].fill(0);
                b
            })
            .collect();
        let targets: Vec<Shared> = blobs
            .iter_mut()
            .map(|b| Shared(b.as_bytes_mut().as_mut_ptr() as *mut f32))
            .collect();
        let (ph, pw) = tiles.padded;
        let (h, w) = tiles.input;
        let mut planes = vec![0f32; self.c_in * ph * pw];
        par_chunks_mut(
            &mut planes,
            ph * pw,
            self.c_in * n * POINTS,
            |first, chunk| {
                for (i, plane) in chunk.chunks_exact_mut(ph * pw).enumerate() {
                    let c = first + i;
                    let (top, left) = tiles.offset;
                    for y in 0..h {
                        plane[(top + y) * pw + left..][..w]
                            .copy_from_slice(&x[(c * h + y) * w..][..w]);
                    }
                    self.transform_channel(c, plane, &targets);
                }
                Ok(())
            },
        )?;
        Ok(blobs
            .into_iter()
            .map(|blob| {
                Box::new(EagerPackedInput {
                    fact: PackedExoticFact {
                        format: Box::new(format.clone()),
                        mn: n.to_dim(),
                        k: self.c_in,
                    },
                    packed: Arc::new(blob),
                    panel_bytes: self.panels.len * 4,
                    mn: n,
                }) as Box<dyn MMMInputValue>
            })
            .collect())
    }

    /// One channel's tiles, [`LANES`] at a time, into its rows of the panels.
    // A lane `l` is one tile: it indexes the inner arrays of several buffers at once.
    #[allow(clippy::needless_range_loop)]
    fn transform_channel(&self, c: usize, plane: &[f32], targets: &[Shared]) {
        let tiles = self.tiles;
        let pw = tiles.padded.1;
        let n = tiles.len();
        for first in (0..n).step_by(LANES) {
            let lanes = LANES.min(n - first);
            let mut d = [[0.0; LANES]; POINTS];
            for l in 0..lanes {
                let (y, x) = tiles.corner(first + l);
                for a in 0..IN {
                    let row = &plane[(y + a) * pw + x..][..IN];
                    for (b, &v) in row.iter().enumerate() {
                        d[a * IN + b][l] = v;
                    }
                }
            }
            let v = transform::input(&d);
            // Consecutive tiles of one panel sit side by side: store runs, not values.
            let r = self.panels.format.r;
            let mut l = 0;
            while l < lanes {
                let run = (lanes - l).min(r - (first + l) % r);
                let at = self.panels.at(c, first + l);
                for (xi, target) in targets.iter().enumerate() {
                    // SAFETY: (channel c, these tiles) are written by this call only,
                    // and `at..at + run` is inside one panel of the blob.
                    let dst = unsafe { std::slice::from_raw_parts_mut(target.0.add(at), run) };
                    dst.copy_from_slice(&v[xi][l..l + run]);
                }
                l += run;
            }
        }
    }

    /// `Aᵀ m A` of every tile, plus bias (and ReLU), split across threads by
    /// output channel.
    fn transform_output(&self, products: &[f32]) -> TractResult<Tensor> {
        let (oh, ow) = self.tiles.out;
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[1, self.c_out, oh, ow])? };
        self.fill_output(products, out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?)?;
        Ok(out)
    }

    fn fill_output(&self, products: &[f32], values: &mut [f32]) -> TractResult<()> {
        let tiles = self.tiles;
        let (oh, ow) = tiles.out;
        let n = tiles.len();
        let plane = oh * ow;
        let stride = self.c_out * n;
        par_chunks_mut(values, plane, self.c_out * n * POINTS, |first, chunk| {
            for (i, out) in chunk.chunks_exact_mut(plane).enumerate() {
                let k = first + i;
                let m = &products[k * n..];
                for start in (0..n).step_by(LANES) {
                    let lanes = LANES.min(n - start);
                    let mut gathered = [[0.0; LANES]; POINTS];
                    for (xi, g) in gathered.iter_mut().enumerate() {
                        g[..lanes].copy_from_slice(&m[xi * stride + start..][..lanes]);
                    }
                    let y = transform::output(&gathered);
                    self.store(&y, start, lanes, self.bias[k], out);
                }
            }
            Ok(())
        })
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // as in transform_channel: `l` is a tile
    fn store(
        &self,
        y: &[Lanes; OUT * OUT],
        start: usize,
        lanes: usize,
        bias: f32,
        out: &mut [f32],
    ) {
        let (oh, ow) = self.tiles.out;
        for l in 0..lanes {
            let (ty, tx) = self.tiles.corner(start + l);
            for a in 0..OUT.min(oh - ty) {
                let row = &mut out[(ty + a) * ow + tx..];
                for b in 0..OUT.min(ow - tx) {
                    let v = y[a * OUT + b][l] + bias;
                    row[b] = if self.relu { v.max(0.0) } else { v };
                }
            }
        }
    }
}

impl Op for WinogradConv {
    fn name(&self) -> StaticName {
        "WinogradConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "F(4x4,3x3), {} tiles, f32 matrix kernel {}, pads {:?}",
            self.tiles.len(),
            self.mmm.name(),
            self.pads
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for WinogradConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input: &Tensor = &inputs[0];
        let x = input.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let out = on_plan_threads(|| self.run(x))?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for WinogradConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (oh, ow) = self.tiles.out;
        Ok(tvec!(f32::fact([1, self.c_out, oh, ow])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct definition, in f64.
    fn reference(p: &WinogradParams, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let [t, l, b, r] = p.pads;
        let (oh, ow) = (h + t + b - 2, w + l + r - 2);
        let mut out = vec![0f32; p.c_out * oh * ow];
        for k in 0..p.c_out {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut sum = p.bias[k] as f64;
                    for c in 0..p.c_in {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (
                                    (y + ky) as isize - t as isize,
                                    (xo + kx) as isize - l as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let v = x[(c * h + iy as usize) * w + ix as usize] as f64;
                                sum += v * p.weights[((k * p.c_in + c) * 3 + ky) * 3 + kx] as f64;
                            }
                        }
                    }
                    let v = sum as f32;
                    out[(k * oh + y) * ow + xo] = if p.relu { v.max(0.0) } else { v };
                }
            }
        }
        out
    }

    /// Sizes that are and are not multiples of the tile, asymmetric padding,
    /// fewer tiles than one lane group, channels that do not fill a panel; on one
    /// thread and on two.
    #[test]
    fn matches_the_direct_convolution() {
        let cases = [
            (5, 3, 8, 8, [1, 1, 1, 1], false),
            (17, 7, 7, 7, [1, 1, 1, 1], true),
            (4, 9, 13, 6, [0, 2, 1, 0], false),
            (33, 16, 3, 3, [0, 0, 0, 0], true),
            (3, 2, 21, 19, [2, 1, 0, 2], false),
            // Big enough that two threads do split it.
            (32, 32, 16, 16, [1, 1, 1, 1], true),
        ];
        for (i, (c_out, c_in, h, w, pads, relu)) in cases.into_iter().enumerate() {
            let p = WinogradParams {
                weights: Arc::new(crate::testing::float(c_out * c_in * 9, 3 * i as u32 + 1)),
                c_out,
                c_in,
                bias: crate::testing::float(c_out, 3 * i as u32 + 2),
                pads,
                relu,
            };
            let x = crate::testing::float(c_in * h * w, 3 * i as u32 + 3);
            let op = WinogradConv::new("test", &p, h, w).unwrap();
            let got = op.run(&x).unwrap();
            // Split across two threads (by channel, tile and point), the same bytes.
            let pool = tract_linalg::multithread::Executor::multithread(2);
            let split = tract_linalg::multithread::multithread_tract_scope(pool, || {
                crate::model::int8::ops::on_plan_threads(|| op.run(&x))
            })
            .unwrap();
            assert_eq!(split, got, "case {i}: two threads");
            let want = reference(&p, &x, h, w);
            let got = got.try_as_plain_ram().unwrap();
            let got = got.as_slice::<f32>().unwrap();
            assert_eq!(got.len(), want.len(), "case {i}");
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Relative to the layer's largest output: F(4×4, 3×3) in f32 carries
            // a few 1e-6 of it (more input channels, more terms rounded).
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            eprintln!(
                "case {i}: worst {worst:.2e}, relative {:.2e}",
                worst / scale
            );
            assert!(
                worst / scale < 1e-5,
                "case {i}: worst difference {worst} of {scale}"
            );
        }
    }
}
