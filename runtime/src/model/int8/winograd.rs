//! Exact int8 3×3 stride-1 convolutions by Winograd's F(2×2, 3×3), on the cores
//! whose int8 products are not much denser per instruction than float's:
//! aarch64 without the dot product (Cortex-A72, the Raspberry Pi 4) and x86-64
//! with AVX2 but without VNNI.
//!
//! A 4×4 tile of input gives a 2×2 tile of output with 16 products per pair of
//! input and output channels instead of 36. The transformed values stay
//! integers: `Bᵀ d B` of int8 data lies in −512..=512 and, with `G` scaled by 2,
//! `G g Gᵀ` of int8 weights in −1152..=1152, so both fit i16 and the products
//! are 16-bit multiplies into 32-bit sums (`smlal` on NEON, `vpmaddwd` on AVX2).
//! The output transform then gives 4 × the convolution: every step is integer
//! and linear, so wrapping arithmetic is exact modulo 2³², and 4 · |conv| ≤
//! 4 · 9 · c_in · 128² stays below 2³¹ for fewer than [`MAX_CHANNELS`] input
//! channels. The result is every other kernel's, bit for bit.
//!
//! With the dot product (or VNNI) an instruction does 4× the 8-bit products it
//! does 16-bit ones, more than the 2.25× Winograd saves, so there the matrix
//! kernels stay.
//!
//! Per block of tile rows: the input transform writes `V` a row of tiles at a
//! time (split across threads by channel group), one matrix product per
//! position `M_p = U_p · V_p` (split by position), and the output transform
//! `Aᵀ M A / 4` plus the bias gives the block's accumulators (split by channel),
//! which the convolution requantizes as it does every engine's.

use std::ops::Range;

use tract_linalg::multithread::par_chunks_mut;
use tract_onnx::prelude::TractResult;

use super::kernels::{Geometry, Panels};
use super::{madd, widening};

/// Output channels per tile of the products.
pub const MR: usize = 8;
/// Tiles per tile of the products.
pub const NR: usize = 8;
/// Input channels side by side in a panel: pairs for `vpmaddwd` on x86-64, one
/// for NEON's multiplies by lane.
const GROUP: usize = if cfg!(target_arch = "x86_64") { 2 } else { 1 };
/// Positions of a transformed 4×4 tile.
const POSITIONS: usize = 16;
/// Input channels from which 4 · conv may overflow i32.
pub const MAX_CHANNELS: usize = (1 << 31) / (4 * 9 * 128 * 128);
/// Fewer input or output channels than this stay on the direct kernels, where
/// the transforms (per tile and channel) would outweigh the products saved:
/// chosen, not measured; the shipped networks' layers all have 16 or more.
const MIN_CHANNELS: usize = 8;
/// Transformed input and products of one block: within a Pi's 1 MiB L2.
const BLOCK_BYTES: usize = 512 * 1024;

/// Whether this engine runs on this CPU (the cores [`widening`] and [`madd`]
/// serve, as tract-linalg sees them, so `EDGEBONE_KERNELS` picks it too).
pub fn runs_here() -> bool {
    widening::runs_here() || madd::runs_here()
}

/// Whether a plain (group 1) convolution of this geometry takes this engine.
pub fn suits(geo: &Geometry, c_out: usize) -> bool {
    geo.kernel == (3, 3)
        && geo.stride == (1, 1)
        && (MIN_CHANNELS..MAX_CHANNELS).contains(&geo.channels)
        && c_out >= MIN_CHANNELS
}

/// The transformed weights' panels: [`MR`] output channels.
fn weight_panels(c_in: usize) -> Panels {
    let k = c_in.next_multiple_of(GROUP);
    Panels {
        r: MR,
        group: GROUP,
        len: MR * k,
    }
}

/// `U = G' g G'ᵀ` with `G' = 2G`: 4 × the textbook transform, in integers.
fn transform_weights(g: &[i8]) -> [i16; POSITIONS] {
    let g = |r: usize, c: usize| g[r * 3 + c] as i32;
    let rows: [[i32; 3]; 4] = [
        std::array::from_fn(|c| 2 * g(0, c)),
        std::array::from_fn(|c| g(0, c) + g(1, c) + g(2, c)),
        std::array::from_fn(|c| g(0, c) - g(1, c) + g(2, c)),
        std::array::from_fn(|c| 2 * g(2, c)),
    ];
    let mut u = [0i16; POSITIONS];
    for (r, [a, b, c]) in rows.into_iter().enumerate() {
        let row = [2 * a, a + b + c, a - b + c, 2 * c];
        for (x, v) in row.into_iter().enumerate() {
            u[r * 4 + x] = v as i16;
        }
    }
    u
}

/// A convolution's weights, transformed and packed at load.
#[derive(Clone, Debug)]
pub struct Winograd {
    c_in: usize,
    c_out: usize,
    /// `U` per position, each in panels of [`MR`] output channels.
    weights: Vec<i16>,
}

/// Where a block's tiles are: tile rows `rows` of an output `oh`×`ow`, read from
/// planes `ph`×`pw` padded to whole tiles.
#[derive(Clone, Debug)]
pub struct Block {
    pub rows: Range<usize>,
    pub output: (usize, usize),
    pub padded: (usize, usize),
}

impl Block {
    fn tiles_wide(&self) -> usize {
        self.output.1.div_ceil(2)
    }

    fn tiles(&self) -> usize {
        self.rows.len() * self.tiles_wide()
    }
}

impl Winograd {
    /// `weights` is `[c_out, c_in, 3, 3]`.
    pub fn new(weights: &[i8], c_out: usize, c_in: usize) -> Winograd {
        let a = weight_panels(c_in);
        let per_position = c_out.div_ceil(MR) * a.len;
        let mut packed = vec![0i16; POSITIONS * per_position];
        for (i, g) in weights.chunks_exact(9).take(c_out * c_in).enumerate() {
            let (co, ci) = (i / c_in, i % c_in);
            let at = co / MR * a.len + a.at(ci, co % MR);
            for (p, u) in transform_weights(g).into_iter().enumerate() {
                packed[p * per_position + at] = u;
            }
        }
        Winograd {
            c_in,
            c_out,
            weights: packed,
        }
    }

    /// The geometry whose padded planes cover whole 4×4 tiles: the bottom and
    /// right padding grown for an odd output (what they read is never kept).
    pub fn tiled(geo: &Geometry) -> Geometry {
        let (oh, ow) = geo.output_size();
        let [top, left, ..] = geo.pads;
        let mut tiled = *geo;
        tiled.pads[2] = oh.div_ceil(2) * 2 + 2 - top - geo.height;
        tiled.pads[3] = ow.div_ceil(2) * 2 + 2 - left - geo.width;
        tiled
    }

    /// Tile rows per block for an output `oh`×`ow`: blocks that fit
    /// [`BLOCK_BYTES`], or up to twice that when their tiles then fill whole
    /// panels of [`NR`] (the products compute every panel in full: ResNet-18's
    /// 14×14-tile layers wasted 14% of their products in blocks of 3 rows).
    pub fn block_rows(&self, (oh, ow): (usize, usize)) -> usize {
        let k = self.c_in.next_multiple_of(GROUP);
        let m = self.c_out.next_multiple_of(MR);
        let per_tile = POSITIONS * (2 * k + 4 * m);
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        let fit = (BLOCK_BYTES / per_tile / tw).clamp(1, th);
        let computed = |rows: usize| {
            let full = th / rows * (rows * tw).next_multiple_of(NR);
            full + (th % rows * tw).next_multiple_of(NR)
        };
        (1..=(2 * fit).min(th))
            .min_by_key(|&rows| (computed(rows), rows.abs_diff(fit)))
            .unwrap_or(1)
    }

    /// The accumulators (bias included) of the block's output rows,
    /// `acc[co · stride + y · ow + x]` for `y` from the block's first output row.
    /// `padded` is the input padded by [`Winograd::tiled`].
    pub fn block(
        &self,
        padded: &[i8],
        block: &Block,
        bias: &[i32],
        acc: &mut [i32],
        stride: usize,
        buffers: &mut Buffers,
    ) -> TractResult<()> {
        let np = block.tiles().next_multiple_of(NR);
        let groups = self.c_in.div_ceil(GROUP);
        // `[channel group][position][tile][GROUP]`: split by channel group here,
        // read by the products as `GROUP` channels of `NR` tiles at a time.
        // Not cleared between blocks: values past the block's tiles only reach
        // products nobody reads, and every channel slot is written.
        let unit = POSITIONS * np * GROUP;
        let v = buffers.v.get(groups * unit);
        let work = block.tiles() * self.c_in * POSITIONS;
        par_chunks_mut(v, unit, work, |first, chunk| {
            let mut rows = Rows::new(block.tiles_wide());
            for (i, out) in chunk.chunks_exact_mut(unit).enumerate() {
                self.transform_group(padded, block, first + i, out, &mut rows);
            }
            Ok(())
        })?;
        let mp = self.c_out.next_multiple_of(MR);
        let v = &*v;
        // Every product is written before it is read.
        let m = buffers.m.get(POSITIONS * mp * np);
        let work = block.tiles() * self.c_in * self.c_out * POSITIONS;
        par_chunks_mut(m, mp * np, work, |first, chunk| {
            for (i, products) in chunk.chunks_exact_mut(mp * np).enumerate() {
                self.products(first + i, v, np, products);
            }
            Ok(())
        })?;
        let m = &*m;
        let work = block.tiles() * self.c_out * POSITIONS;
        par_chunks_mut(
            &mut acc[..self.c_out * stride],
            stride,
            work,
            |first, chunk| {
                let mut scratch = vec![0i32; 12 * block.tiles()];
                for (i, row) in chunk.chunks_exact_mut(stride).enumerate() {
                    let co = first + i;
                    let products: [&[i32]; POSITIONS] =
                        std::array::from_fn(|p| &m[(p * mp + co) * np..][..block.tiles()]);
                    write_outputs(block, products, bias[co], row, &mut scratch);
                }
                Ok(())
            },
        )
    }

    /// The transformed tiles of input channels `g · GROUP..`, `out[(p · np + t) · GROUP + c]`.
    fn transform_group(
        &self,
        padded: &[i8],
        block: &Block,
        g: usize,
        out: &mut [i16],
        rows: &mut Rows,
    ) {
        let (ph, pw) = (block.padded.0, block.padded.1);
        let tw = block.tiles_wide();
        let np = out.len() / POSITIONS / GROUP;
        let channels = g * GROUP..((g + 1) * GROUP).min(self.c_in);
        for (li, tile_row) in block.rows.clone().enumerate() {
            let input = |c: usize| &padded[(c * ph + 2 * tile_row) * pw..];
            if GROUP == 1 {
                // Straight into place: a position's tiles are contiguous.
                let out = positions(out, np, li * tw..(li + 1) * tw);
                transform_row(input(g), pw, &mut rows.sums, out);
                continue;
            }
            for (i, c) in channels.clone().enumerate() {
                let values = &mut rows.values[i * POSITIONS * tw..][..POSITIONS * tw];
                transform_row(input(c), pw, &mut rows.sums, positions(values, tw, 0..tw));
            }
            for p in 0..POSITIONS {
                let dst = &mut out[(p * np + li * tw) * GROUP..][..tw * GROUP];
                rows.store(p, channels.len(), dst);
            }
        }
    }

    /// `M_p = U_p · V_p` for position `p`: `out[co · np + t]`, rows padded to
    /// [`MR`] and tiles to [`NR`].
    fn products(&self, p: usize, v: &[i16], np: usize, out: &mut [i32]) {
        let a = weight_panels(self.c_in);
        let per_position = self.c_out.div_ceil(MR) * a.len;
        let weights = &self.weights[p * per_position..][..per_position];
        let k = self.c_in.next_multiple_of(GROUP);
        // From one group of channels to the next in `v`.
        let step = POSITIONS * np * GROUP;
        let v = &v[p * np * GROUP..];
        for (r, a) in weights.chunks_exact(a.len).enumerate() {
            for q in 0..np / NR {
                let sums = tile(a, &v[q * NR * GROUP..], (k, step));
                for (i, row) in sums.iter().enumerate() {
                    out[(r * MR + i) * np + q * NR..][..NR].copy_from_slice(row);
                }
            }
        }
    }
}

/// One tile row's transformed values for up to [`GROUP`] channels:
/// `values[channel][position][tile]`, and the row sums they come from.
struct Rows {
    tiles: usize,
    sums: Vec<i16>,
    values: Vec<i16>,
}

impl Rows {
    fn new(tiles: usize) -> Rows {
        Rows {
            tiles,
            sums: vec![0; 4 * (2 * tiles + 2)],
            values: vec![0; GROUP * POSITIONS * tiles],
        }
    }

    fn of(&self, channel: usize, p: usize) -> &[i16] {
        &self.values[(channel * POSITIONS + p) * self.tiles..][..self.tiles]
    }

    /// Position `p` of `channels` channels, interleaved [`GROUP`] wide into `dst`.
    fn store(&self, p: usize, channels: usize, dst: &mut [i16]) {
        if GROUP == 1 {
            dst.copy_from_slice(self.of(0, p));
        } else if channels == GROUP {
            let (a, b) = (self.of(0, p), self.of(1, p));
            for ((pair, &x), &y) in dst.chunks_exact_mut(2).zip(a).zip(b) {
                pair[0] = x;
                pair[1] = y;
            }
        } else {
            // The last, odd channel, and 0 for the channel past it.
            for (pair, &x) in dst.chunks_exact_mut(GROUP).zip(self.of(0, p)) {
                pair[0] = x;
                pair[1] = 0;
            }
        }
    }
}

/// `Bᵀ d B` of a row of 4×4 tiles two columns apart, `d` from `rows` (4 rows
/// `pw` apart): position `p` of tile `j` into `out[p][j]`. Whole rows at a
/// time, so that the compiler vectorizes both passes; `sums` is scratch.
fn transform_row(rows: &[i8], pw: usize, sums: &mut [i16], out: [&mut [i16]; POSITIONS]) {
    let tw = out[0].len();
    let w = 2 * tw + 2;
    let r: [&[i8]; 4] = std::array::from_fn(|k| &rows[k * pw..][..w]);
    let (t0, rest) = sums[..4 * w].split_at_mut(w);
    let (t1, rest) = rest.split_at_mut(w);
    let (t2, t3) = rest.split_at_mut(w);
    for x in 0..w {
        let (d0, d1, d2, d3) = (
            r[0][x] as i16,
            r[1][x] as i16,
            r[2][x] as i16,
            r[3][x] as i16,
        );
        t0[x] = d0 - d2;
        t1[x] = d1 + d2;
        t2[x] = d2 - d1;
        t3[x] = d1 - d3;
    }
    let mut out = out.into_iter();
    for t in [&*t0, &*t1, &*t2, &*t3] {
        let [v0, v1, v2, v3]: [&mut [i16]; 4] = std::array::from_fn(|_| {
            let v = out.next().expect("16 positions");
            &mut v[..tw]
        });
        let (even, odd) = (&t[..w - 2], &t[2..]);
        for j in 0..tw {
            let (e, o, e1, o1) = (even[2 * j], even[2 * j + 1], odd[2 * j], odd[2 * j + 1]);
            v0[j] = e - e1;
            v1[j] = o + e1;
            v2[j] = e1 - o;
            v3[j] = o - o1;
        }
    }
}

/// The 16 positions' slices `range` of `values`, one position every `len`.
fn positions(values: &mut [i16], len: usize, range: Range<usize>) -> [&mut [i16]; POSITIONS] {
    let mut chunks = values.chunks_exact_mut(len).map(|c| &mut c[range.clone()]);
    std::array::from_fn(|_| chunks.next().expect("16 positions"))
}

/// Scratch kept across a layer's blocks.
#[derive(Default)]
pub struct Buffers {
    v: Scratch<i16>,
    m: Scratch<i32>,
}

#[derive(Default)]
struct Scratch<T>(Vec<T>);

impl<T: Copy + Default> Scratch<T> {
    /// `len` values, of whatever an earlier block left.
    fn get(&mut self, len: usize) -> &mut [T] {
        if self.0.len() < len {
            self.0.resize(len, T::default());
        }
        &mut self.0[..len]
    }
}

/// One output channel's accumulators for the block: `products[p][t]` is tile
/// `t`'s product at position `p`; `scratch` holds 12 values per tile.
fn write_outputs(
    block: &Block,
    products: [&[i32]; POSITIONS],
    bias: i32,
    row: &mut [i32],
    scratch: &mut [i32],
) {
    let (oh, ow) = block.output;
    let (tw, n) = (block.tiles_wide(), block.tiles());
    let m: [&[i32]; POSITIONS] = products.map(|p| &p[..n]);
    // `Aᵀ M`, then `· A`, each over all the block's tiles in loops of a few
    // whole rows, which the compiler vectorizes (one loop over all 16 did not).
    let (sums, four) = scratch[..12 * n].split_at_mut(8 * n);
    for (c, column) in sums.chunks_exact_mut(2 * n).enumerate() {
        let (s0, s1) = column.split_at_mut(n);
        let (m0, m1, m2, m3) = (m[c], m[4 + c], m[8 + c], m[12 + c]);
        for j in 0..n {
            s0[j] = m0[j].wrapping_add(m1[j]).wrapping_add(m2[j]);
            s1[j] = m1[j].wrapping_sub(m2[j]).wrapping_sub(m3[j]);
        }
    }
    let s: [&[i32]; 8] = std::array::from_fn(|i| &sums[i * n..][..n]);
    for (r, y) in four.chunks_exact_mut(2 * n).enumerate() {
        let (even, odd) = y.split_at_mut(n);
        let (s0, s1, s2, s3) = (s[r], s[2 + r], s[4 + r], s[6 + r]);
        for j in 0..n {
            // Exact: each is 4 × the convolution.
            let e = s0[j].wrapping_add(s1[j]).wrapping_add(s2[j]);
            let o = s1[j].wrapping_sub(s2[j]).wrapping_sub(s3[j]);
            even[j] = (e >> 2).wrapping_add(bias);
            odd[j] = (o >> 2).wrapping_add(bias);
        }
    }
    // Output row 2·li + dy of tile row li, from columns (dy, even) and (dy, odd).
    let columns: [&[i32]; 4] = std::array::from_fn(|i| &four[i * n..][..n]);
    for li in 0..block.rows.len() {
        for dy in 0..2 {
            let y = 2 * li + dy;
            if 2 * block.rows.start + y >= oh {
                break;
            }
            let even = &columns[2 * dy][li * tw..][..tw];
            let odd = &columns[2 * dy + 1][li * tw..][..tw];
            let out = &mut row[y * ow..][..ow];
            for (pair, (&a, &b)) in out.chunks_exact_mut(2).zip(even.iter().zip(odd)) {
                pair[0] = a;
                pair[1] = b;
            }
            if ow % 2 == 1 {
                out[ow - 1] = even[tw - 1];
            }
        }
    }
}

/// One [`MR`]×[`NR`] tile of a product over `k` channels (a multiple of
/// [`GROUP`]): `a` packed by [`weight_panels`], `b` [`GROUP`] channels of
/// [`NR`] tiles (`NR · GROUP` values) every `step` values.
#[inline]
fn tile(a: &[i16], b: &[i16], (k, step): (usize, usize)) -> [[i32; NR]; MR] {
    let groups = k / GROUP;
    assert!(a.len() >= MR * k && groups >= 1 && b.len() >= (groups - 1) * step + NR * GROUP);
    #[cfg(target_arch = "aarch64")]
    // SAFETY: lengths checked above; NEON is baseline on aarch64.
    return unsafe { tile_neon(a.as_ptr(), b.as_ptr(), groups, step) };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: lengths checked above; AVX2 detected just now.
        return unsafe { tile_avx2(a.as_ptr(), b.as_ptr(), groups, step) };
    }
    #[allow(unreachable_code)]
    tile_portable(a, b, (k, step))
}

/// The same sums, written plainly from [`Panels::at`]: what the SIMD tiles are
/// tested against.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
// GROUP is 1 on ARM, where `kk % GROUP` is always 0: the layout's formula still.
#[allow(clippy::modulo_one)]
fn tile_portable(a: &[i16], b: &[i16], (k, step): (usize, usize)) -> [[i32; NR]; MR] {
    let pa = weight_panels(k);
    let mut out = [[0i32; NR]; MR];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, sum) in row.iter_mut().enumerate() {
            for kk in 0..k {
                let x = b[kk / GROUP * step + j * GROUP + kk % GROUP];
                *sum = sum.wrapping_add(a[pa.at(kk, i)] as i32 * x as i32);
            }
        }
    }
    out
}

/// # Safety
/// `a` points to `8 · k` readable i16, `b` to `k` runs of 8, `step` apart.
#[cfg(target_arch = "aarch64")]
#[inline]
unsafe fn tile_neon(a: *const i16, b: *const i16, k: usize, step: usize) -> [[i32; NR]; MR] {
    use std::arch::aarch64::*;
    // SAFETY: the caller's lengths; NEON is baseline on aarch64.
    unsafe {
        let mut c = [[vdupq_n_s32(0); 2]; MR];
        // Running pointers, bumped as they are read (post-indexed loads).
        let (mut a, mut b) = (a, b);
        let mut step_k = || {
            let w = vld1q_s16(a);
            let x = vld1q_s16(b);
            a = a.add(MR);
            b = b.add(step);
            let low = vget_low_s16(x);
            macro_rules! row {
                ($($i:literal)*) => {$(
                    c[$i][0] = vmlal_laneq_s16::<$i>(c[$i][0], low, w);
                    c[$i][1] = vmlal_high_laneq_s16::<$i>(c[$i][1], x, w);
                )*};
            }
            row!(0 1 2 3 4 5 6 7);
        };
        // Four channels an iteration: the loop's own instructions were a fifth
        // of the tile's at one.
        for _ in 0..k / 4 {
            step_k();
            step_k();
            step_k();
            step_k();
        }
        for _ in 0..k % 4 {
            step_k();
        }
        let mut out = [[0i32; NR]; MR];
        for (row, [lo, hi]) in out.iter_mut().zip(c) {
            vst1q_s32(row.as_mut_ptr(), lo);
            vst1q_s32(row.as_mut_ptr().add(4), hi);
        }
        out
    }
}

/// # Safety
/// The CPU has AVX2; `a` points to `16 · pairs` readable i16, `b` to `pairs`
/// runs of 16, `step` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2(a: *const i16, b: *const i16, pairs: usize, step: usize) -> [[i32; NR]; MR] {
    use std::arch::x86_64::*;
    // SAFETY: the caller's lengths and CPU check.
    unsafe {
        let mut c = [_mm256_setzero_si256(); MR];
        for pair in 0..pairs {
            // 8 tiles × 2 channels, and per output channel its 2 weights as one i32.
            let x = _mm256_loadu_si256(b.add(pair * step) as *const __m256i);
            let w = a.add(pair * 2 * MR) as *const i32;
            for (i, sum) in c.iter_mut().enumerate() {
                let weights = _mm256_set1_epi32(w.add(i).read_unaligned());
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(x, weights));
            }
        }
        let mut out = [[0i32; NR]; MR];
        for (row, sum) in out.iter_mut().zip(c) {
            _mm256_storeu_si256(row.as_mut_ptr() as *mut __m256i, sum);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, bias included.
    fn direct(
        x: &[i8],
        w: &[i8],
        geo: &Geometry,
        c_out: usize,
        zero: i8,
        bias: &[i32],
    ) -> Vec<i32> {
        let (oh, ow) = geo.output_size();
        let [top, left, ..] = geo.pads;
        let (h, wd, c_in) = (geo.height as isize, geo.width as isize, geo.channels);
        let mut out = vec![0i32; c_out * oh * ow];
        for co in 0..c_out {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut sum = bias[co];
                    for ci in 0..c_in {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (y + ky) as isize - top as isize;
                                let ix = (xo + kx) as isize - left as isize;
                                let v = if (0..h).contains(&iy) && (0..wd).contains(&ix) {
                                    x[ci * (h * wd) as usize + (iy * wd + ix) as usize]
                                } else {
                                    zero
                                };
                                sum += v as i32 * w[((co * c_in + ci) * 3 + ky) * 3 + kx] as i32;
                            }
                        }
                    }
                    out[(co * oh + y) * ow + xo] = sum;
                }
            }
        }
        out
    }

    fn through_winograd(
        x: &[i8],
        w: &[i8],
        geo: &Geometry,
        c_out: usize,
        zero: i8,
        bias: &[i32],
    ) -> Vec<i32> {
        let engine = Winograd::new(w, c_out, geo.channels);
        let tiled = Winograd::tiled(geo);
        let mut scratch = Vec::new();
        let padded = super::super::kernels::pad_planes(x, &tiled, zero, &mut scratch);
        let (oh, ow) = geo.output_size();
        let rows = engine.block_rows((oh, ow)).min(2);
        let mut out = vec![0i32; c_out * oh * ow];
        let th = oh.div_ceil(2);
        let mut buffers = Buffers::default();
        for start in (0..th).step_by(rows) {
            let block = Block {
                rows: start..(start + rows).min(th),
                output: (oh, ow),
                padded: tiled.padded(),
            };
            let width = (2 * block.rows.end).min(oh) * ow - 2 * start * ow;
            let stride = 2 * rows * ow;
            let mut acc = vec![0i32; c_out * stride];
            engine
                .block(padded, &block, bias, &mut acc, stride, &mut buffers)
                .unwrap();
            for co in 0..c_out {
                out[co * oh * ow + 2 * start * ow..][..width]
                    .copy_from_slice(&acc[co * stride..][..width]);
            }
        }
        out
    }

    fn check(c_in: usize, c_out: usize, (h, w): (usize, usize), pads: [usize; 4], seed: u32) {
        let geo = Geometry {
            channels: c_in,
            height: h,
            width: w,
            kernel: (3, 3),
            stride: (1, 1),
            pads,
        };
        let x = crate::testing::int8(c_in * h * w, seed);
        let mut weights = crate::testing::int8(c_out * c_in * 9, seed + 1);
        // The extremes, where a transform would overflow first.
        weights[0] = i8::MIN;
        weights[1] = i8::MAX;
        let bias: Vec<i32> = (0..c_out as i32).map(|c| c * 1000 - 7000).collect();
        let zero = -3;
        assert_eq!(
            through_winograd(&x, &weights, &geo, c_out, zero, &bias),
            direct(&x, &weights, &geo, c_out, zero, &bias),
            "c_in {c_in} c_out {c_out} {h}x{w} pads {pads:?}"
        );
    }

    #[test]
    fn equals_the_direct_convolution() {
        check(8, 8, (6, 6), [1; 4], 1);
        // Odd outputs, tails of panels and of output channels, no padding.
        check(9, 13, (7, 5), [1; 4], 2);
        check(16, 24, (9, 11), [0; 4], 3);
        check(11, 10, (5, 8), [1, 0, 0, 1], 4);
        // A last block smaller than the others, reading buffers they left.
        check(7, 9, (9, 6), [1; 4], 5);
    }

    #[test]
    fn holds_at_the_extremes_of_int8() {
        // Every input −128 against weights of one sign: the largest transformed
        // values and sums in either direction.
        for (x, w) in [(-128i8, -128i8), (-128, 127), (127, 127)] {
            let c_in = 64;
            let geo = Geometry {
                channels: c_in,
                height: 4,
                width: 4,
                kernel: (3, 3),
                stride: (1, 1),
                pads: [1; 4],
            };
            let input = vec![x; c_in * 16];
            let weights = vec![w; 8 * c_in * 9];
            let bias = vec![5; 8];
            assert_eq!(
                through_winograd(&input, &weights, &geo, 8, x, &bias),
                direct(&input, &weights, &geo, 8, x, &bias)
            );
        }
    }

    #[test]
    fn the_simd_tile_equals_the_plain_one() {
        let k = 2 * 37;
        // Runs of 8 tiles further apart than they are long, as in a block.
        let step = NR * GROUP + 6;
        let a: Vec<i16> = crate::testing::int8(MR * k, 9)
            .iter()
            .map(|&v| v as i16 * 9)
            .collect();
        let b: Vec<i16> = crate::testing::int8(step * k, 10)
            .iter()
            .map(|&v| v as i16 * 4)
            .collect();
        let shape = (k, step);
        assert_eq!(tile(&a, &b, shape), tile_portable(&a, &b, shape));
    }

    #[test]
    fn the_channel_bound_keeps_four_times_the_sum_in_i32() {
        let largest = 4 * 9 * 128 * 128 * (MAX_CHANNELS as i64);
        assert!(largest < i32::MAX as i64);
        assert!(largest + 4 * 9 * 128 * 128 > i32::MAX as i64);
    }
}
