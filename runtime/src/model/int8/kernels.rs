//! The integer arithmetic of the int8 path, on plain slices.
//!
//! Every result here is a pure function of its integer inputs and a handful of
//! f32 constants fixed at load time: integer sums, then one f32 multiply (and
//! for additions one f32 add) per output, rounded by a fixed rule. Rust never
//! fuses a multiply and an add on its own, and IEEE-754 multiplication is
//! exact-rounded everywhere, so x86, aarch64 and armv7 produce the same bytes.

/// 1.5 · 2²³: adding and subtracting it rounds an f32 below 2²² to the nearest
/// integer, ties to even, with two plain additions. `f32::round_ties_even` would
/// do the same but is a libm call on baseline x86-64 and armv7, per element.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// How a scaled accumulator becomes an int8 activation: `y = clamp(round(value) + zero)`
/// (the scale is per channel, so the caller multiplies).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requant {
    pub zero: i32,
    /// Output bounds in the quantized domain, folded ReLU/ReLU6 included.
    pub min: i32,
    pub max: i32,
}

impl Requant {
    /// Written so the compiler vectorizes it: float min/max and a cast of a
    /// value already in range, no panicking `clamp` with runtime bounds.
    #[inline(always)]
    pub fn apply(&self, value: f32) -> i8 {
        self.level(value) as i8
    }

    /// The level itself, in `min..=max` (for a uint8 output too); NaN gives `min`.
    #[inline(always)]
    pub fn level(&self, value: f32) -> i32 {
        let lo = (self.min - self.zero) as f32;
        let hi = (self.max - self.zero) as f32;
        // Bounds first: the magic constant only rounds below 2²², and the
        // bounds are integers, so bounding before rounding changes nothing.
        let bounded = value.max(lo).min(hi);
        // After adding 1.5 · 2²³ the low mantissa bits hold the rounded integer:
        // read them instead of a float-to-int conversion (which is scalar and
        // checked on baseline x86-64).
        let rounded = (bounded + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
        rounded + self.zero
    }
}

/// Runs `$body` compiled for AVX2 when the x86-64 CPU has it, else for the
/// target's baseline (SSE2 on x86-64; NEON is baseline on aarch64). Same
/// operations either way, no fused multiply-add, so the same results.
macro_rules! with_avx2 {
    ($name:ident, ($($arg:ident: $ty:ty),*), $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn $name($($arg: $ty),*) $body
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { $name($($arg),*) };
            }
        }
        $body
    }};
}

/// `out[i] = requant(acc[i] · scale)` for one output channel.
pub fn requantize(acc: &[i32], scale: f32, requant: Requant, out: &mut [i8]) {
    with_avx2!(requantize_avx2, (acc: &[i32], scale: f32, requant: Requant, out: &mut [i8]), {
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = requant.apply(a as f32 * scale);
        }
    })
}

/// Conv geometry on one image, NCHW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// top, left, bottom, right
    pub pads: [usize; 4],
}

impl Geometry {
    pub fn output_size(&self) -> (usize, usize) {
        let [top, left, bottom, right] = self.pads;
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        (
            (self.height + top + bottom - kh) / sh + 1,
            (self.width + left + right - kw) / sw + 1,
        )
    }

    /// [`Geometry::output_size`], or `None` when the kernel is larger than the
    /// padded input or a stride is 0 (the loader refuses such a layer).
    pub fn checked_output_size(&self) -> Option<(usize, usize)> {
        let (ph, pw) = self.padded();
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        Some((
            ph.checked_sub(kh)?.checked_div(sh)? + 1,
            pw.checked_sub(kw)?.checked_div(sw)? + 1,
        ))
    }

    /// Height and width with the padding.
    pub fn padded(&self) -> (usize, usize) {
        let [top, left, bottom, right] = self.pads;
        (self.height + top + bottom, self.width + left + right)
    }
}

/// How tract-linalg's int8 matrix kernel reads its right operand: panels of `r`
/// columns, `group` consecutive k values of a column side by side (1 for
/// `PackedFormat`, 4 for the dot-product kernels' `PackedI8K4`), `len` bytes a panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panels {
    pub r: usize,
    pub group: usize,
    pub len: usize,
}

impl Panels {
    /// Where the value of row `k`, column `e` of a panel goes.
    #[inline(always)]
    pub fn at(&self, k: usize, e: usize) -> usize {
        (k / self.group) * self.r * self.group + e * self.group + k % self.group
    }
}

/// Weights `[m, k]` (row-major) packed as [`pack_patches`] packs patches, a row
/// of weights where a column of patches goes (edgebone's own matrix kernels,
/// `widening` and `madd`); rows past `m` and k past `k` stay 0.
pub fn pack_rows<W: From<i8> + Copy + Default>(
    weights: &[i8],
    m: usize,
    k: usize,
    panels: Panels,
) -> Vec<W> {
    let mut packed = vec![W::default(); m.div_ceil(panels.r) * panels.len];
    for (row, values) in weights.chunks_exact(k).take(m).enumerate() {
        let panel = &mut packed[row / panels.r * panels.len..][..panels.len];
        for (kk, &w) in values.iter().enumerate() {
            panel[panels.at(kk, row % panels.r)] = W::from(w);
        }
    }
    packed
}

/// Every tile of an `m`×`n` product of weights packed for `a` and patches packed
/// for `b`: `tile(weights, patches, bias, columns, out)` gets one panel of each,
/// the bias of the tile's rows (as many as there are), how many of its columns
/// are real, and `acc` from the tile's first accumulator on, rows `stride` apart.
pub fn for_each_tile<W>(
    (weights, a): (&[W], Panels),
    (patches, b): (&[i8], Panels),
    (m, n): (usize, usize),
    bias: &[i32],
    (acc, stride): (&mut [i32], usize),
    mut tile: impl FnMut(&[W], &[i8], &[i32], usize, &mut [i32]),
) {
    for (p, weights) in weights.chunks_exact(a.len).enumerate() {
        let rows = a.r.min(m.saturating_sub(p * a.r));
        if rows == 0 {
            break;
        }
        let bias = &bias[p * a.r..][..rows];
        for (q, patches) in patches
            .chunks_exact(b.len)
            .take(n.div_ceil(b.r))
            .enumerate()
        {
            let columns = b.r.min(n - q * b.r);
            tile(
                weights,
                patches,
                bias,
                columns,
                &mut acc[p * a.r * stride + q * b.r..],
            );
        }
    }
}

/// The input with its padding made real (filled with the zero point), so that
/// [`pack_patches`] reads every patch value without a bounds check. Returns the
/// input itself when the convolution has no padding.
pub fn pad_planes<'a>(input: &'a [i8], geo: &Geometry, zero: i8, out: &'a mut Vec<i8>) -> &'a [i8] {
    if geo.pads == [0; 4] {
        return input;
    }
    let (ph, pw) = geo.padded();
    let [top, left, ..] = geo.pads;
    out.clear();
    out.resize(geo.channels * ph * pw, zero);
    let plane = geo.height * geo.width;
    for c in 0..geo.channels {
        for y in 0..geo.height {
            let src = &input[c * plane + y * geo.width..][..geo.width];
            out[(c * ph + top + y) * pw + left..][..geo.width].copy_from_slice(src);
        }
    }
    out
}

/// How a convolution's patches reach a matrix kernel's panels: gathered row by
/// row from the padded planes ([`pack_patches`]), or, for panels of four k
/// values side by side when the channels come in fours, from the input
/// regrouped four channels to a pixel with the weights' k in (tap, channel)
/// order ([`pack_blocked`]). One choice, made at load, for every engine.
#[derive(Clone, Debug)]
pub enum Gather {
    /// Where each patch row starts in the padded input ([`patch_rows`]).
    Rows(Vec<usize>),
    Blocked,
}

impl Gather {
    /// For panels of `group` k values side by side.
    pub fn new(geo: &Geometry, group: usize) -> Gather {
        if group == 4 && geo.channels.is_multiple_of(4) {
            Gather::Blocked
        } else {
            Gather::Rows(patch_rows(geo))
        }
    }

    /// The weights `[m, k]` in the k order the patches come in.
    pub fn weights<'a>(
        &self,
        weights: &'a [i8],
        m: usize,
        channels: usize,
    ) -> std::borrow::Cow<'a, [i8]> {
        match self {
            Gather::Rows(_) => weights.into(),
            Gather::Blocked => tap_major(weights, m, channels).into(),
        }
    }

    /// What [`Gather::pack`] reads: the padded input, or its channel blocks
    /// (written into `scratch`).
    pub fn input<'a>(
        &self,
        padded: &'a [i8],
        geo: &Geometry,
        scratch: &'a mut Vec<i8>,
    ) -> &'a [i8] {
        match self {
            Gather::Rows(_) => padded,
            Gather::Blocked => {
                channel_blocks(padded, geo, scratch);
                scratch
            }
        }
    }

    /// `columns` of the patch matrix into zeroed panels, from [`Gather::input`].
    pub fn pack(
        &self,
        input: &[i8],
        geo: &Geometry,
        panels: Panels,
        columns: std::ops::Range<usize>,
        out: &mut [i8],
    ) {
        match self {
            Gather::Rows(rows) => pack_patches(input, geo, rows, panels, columns, out),
            Gather::Blocked => pack_blocked(input, geo, panels, columns, out),
        }
    }
}

/// Where each row of a convolution's patch matrix (a channel and a kernel tap)
/// starts in the padded input.
pub fn patch_rows(geo: &Geometry) -> Vec<usize> {
    let (ph, pw) = geo.padded();
    let (kh, kw) = geo.kernel;
    let rows = (0..geo.channels)
        .flat_map(|c| (0..kh).flat_map(move |y| (0..kw).map(move |x| (c * ph + y) * pw + x)));
    rows.collect()
}

/// `columns` of the convolution's patch matrix (what [`im2col`] writes),
/// gathered from the padded input straight into the matrix kernel's packed
/// panels: one pass over the patches instead of writing the patch matrix and
/// packing it (measured: the two passes were 43% of ResNet-18's int8 time).
/// tract-core's im2col is an operator of its own plan that packs a whole layer
/// at once; this fills one cache-sized block of columns at a time. `rows` is
/// [`patch_rows`]. `out` must be zeroed: the panel tail (k padding, columns
/// past the last) stays 0, which the dot-product kernels' sums rely on.
pub fn pack_patches(
    padded: &[i8],
    geo: &Geometry,
    rows: &[usize],
    panels: Panels,
    columns: std::ops::Range<usize>,
    out: &mut [i8],
) {
    let (_, pw) = geo.padded();
    let (_, ow) = geo.output_size();
    let (sh, sw) = geo.stride;
    let (start, width) = (columns.start, columns.len());
    // Where each column (an output pixel) of a panel starts from a row's start.
    let mut columns = vec![0usize; panels.r];
    for (p, panel) in out
        .chunks_exact_mut(panels.len)
        .take(width.div_ceil(panels.r))
        .enumerate()
    {
        let first = start + p * panels.r;
        let count = panels.r.min(start + width - first);
        let (mut oy, mut ox) = (first / ow, first % ow);
        for column in &mut columns[..count] {
            *column = oy * sh * pw + ox * sw;
            ox += 1;
            if ox == ow {
                (oy, ox) = (oy + 1, 0);
            }
        }
        // A full panel inside one output row reads evenly spaced values.
        let evenly = count == panels.r && columns[count - 1] - columns[0] == (count - 1) * sw;
        let first = columns[0];
        match (evenly, panels.group, sw, panels.r) {
            (true, 4, 1, 8) => gather_k4::<1, 8>(padded, rows, first, panels, panel),
            (true, 4, 2, 8) => gather_k4::<2, 8>(padded, rows, first, panels, panel),
            (true, 4, 1, 16) => gather_k4::<1, 16>(padded, rows, first, panels, panel),
            (true, 4, 2, 16) => gather_k4::<2, 16>(padded, rows, first, panels, panel),
            (true, 16, 1, 4) => gather_k16::<1>(padded, rows, first, panels, panel),
            (true, 16, 2, 4) => gather_k16::<2>(padded, rows, first, panels, panel),
            (true, 1, 1, _) => gather_k1::<1>(padded, rows, first, panels, panel),
            (true, 1, 2, _) => gather_k1::<2>(padded, rows, first, panels, panel),
            _ => gather_any(padded, rows, &columns[..count], panels, panel),
        }
    }
}

/// The padded input `[C][ph][pw]` regrouped as `[C/4][ph][pw][4]`: four channels
/// of a pixel side by side (`C` a multiple of 4), for [`pack_blocked`].
pub fn channel_blocks(padded: &[i8], geo: &Geometry, out: &mut Vec<i8>) {
    let (ph, pw) = geo.padded();
    let plane = ph * pw;
    out.clear();
    out.resize(geo.channels * plane, 0);
    for (cb, dst) in out.chunks_exact_mut(4 * plane).enumerate() {
        let src: [&[i8]; 4] = std::array::from_fn(|j| &padded[(4 * cb + j) * plane..][..plane]);
        for (i, d) in dst.chunks_exact_mut(4).enumerate() {
            d.copy_from_slice(&[src[0][i], src[1][i], src[2][i], src[3][i]]);
        }
    }
}

/// [`pack_patches`] for K4 panels (four k values of a column side by side) with
/// the patch matrix's k in (tap, channel) order, from [`channel_blocks`]: a
/// column's four values are four channels of one input pixel, one 4-byte copy,
/// and a panel's columns along an output row at stride 1 are one contiguous copy.
/// In (channel, tap) order they were four bytes from four places, and panels
/// crossing an output row (every one of a 7- or 14-wide layer) went byte by
/// byte: ResNet-18's packing counted 84 M instructions on a Cortex-A76.
/// The weights' k must be in the same order ([`tap_major`]); [`Gather`] keeps them together.
pub fn pack_blocked(
    blocked: &[i8],
    geo: &Geometry,
    panels: Panels,
    columns: std::ops::Range<usize>,
    out: &mut [i8],
) {
    let (ph, pw) = geo.padded();
    let (_, ow) = geo.output_size();
    let (sh, sw) = geo.stride;
    let (kh, kw) = geo.kernel;
    let groups = geo.channels / 4;
    let r = panels.r;
    let (pixels, _) = blocked.as_chunks::<4>();
    let (start, width) = (columns.start, columns.len());
    let mut at = vec![0usize; r];
    for (p, panel) in out
        .chunks_exact_mut(panels.len)
        .take(width.div_ceil(r))
        .enumerate()
    {
        let first = start + p * r;
        let count = r.min(start + width - first);
        for (e, a) in at[..count].iter_mut().enumerate() {
            let (oy, ox) = ((first + e) / ow, (first + e) % ow);
            *a = oy * sh * pw + ox * sw;
        }
        let contiguous = sw == 1 && at[count - 1] - at[0] == count - 1;
        let (panel, _) = panel.as_chunks_mut::<4>();
        for t in 0..kh * kw {
            let tap = (t / kw) * pw + t % kw;
            for cb in 0..groups {
                let base = cb * ph * pw + tap;
                let dst = &mut panel[(t * groups + cb) * r..][..count];
                if contiguous {
                    dst.copy_from_slice(&pixels[base + at[0]..][..count]);
                } else {
                    for (d, &a) in dst.iter_mut().zip(&at[..count]) {
                        *d = pixels[base + a];
                    }
                }
            }
        }
    }
}

/// Weights `[m, C · taps]` in (channel, tap) order, reordered to (tap, channel)
/// for [`pack_blocked`].
pub fn tap_major(weights: &[i8], m: usize, channels: usize) -> Vec<i8> {
    let k = weights.len() / m;
    let taps = k / channels;
    let mut out = vec![0i8; weights.len()];
    for (row, dst) in weights.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        for c in 0..channels {
            for t in 0..taps {
                dst[t * channels + c] = row[c * taps + t];
            }
        }
    }
    out
}

/// One panel of `R` columns at `first + e · STEP`, four rows side by side: each
/// column's four values are stored together, eight columns at a time.
fn gather_k4<const STEP: usize, const R: usize>(
    padded: &[i8],
    rows: &[usize],
    first: usize,
    panels: Panels,
    panel: &mut [i8],
) {
    let whole = rows.len() / 4 * 4;
    for (block, four) in panel
        .chunks_exact_mut(4 * R)
        .zip(rows[..whole].chunks_exact(4))
    {
        for (eight, out) in block.chunks_exact_mut(32).enumerate() {
            let at = first + eight * 8 * STEP;
            let rows = [0, 1, 2, 3].map(|j| &padded[four[j] + at..]);
            interleave8::<STEP>(rows, out);
        }
    }
    // The last group's missing rows are k padding: left at 0.
    for (k, &row) in rows.iter().enumerate().skip(whole) {
        let src = &padded[row + first..][..(R - 1) * STEP + 1];
        let dst = &mut panel[panels.at(k, 0)..];
        for e in 0..R {
            dst[4 * e] = src[e * STEP];
        }
    }
}

/// `out[4e + j] = rows[j][e · STEP]` for the first eight columns `e`.
#[inline(always)]
fn interleave8<const STEP: usize>(rows: [&[i8]; 4], out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if out.len() >= 32 && rows.iter().all(|r| r.len() >= 8 * STEP) {
        // SAFETY: lengths checked just above; SSE2 is part of x86-64.
        unsafe { interleave8_sse2::<STEP>(rows, out) };
        return;
    }
    for e in 0..8 {
        for j in 0..4 {
            out[4 * e + j] = rows[j][e * STEP];
        }
    }
}

/// [`interleave8`] in four byte shuffles (the compiler keeps the byte loop
/// scalar: measured, it was a fifth of ResNet-18's int8 time).
///
/// # Safety
/// `out` holds 32 bytes and each row `8 · STEP`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn interleave8_sse2<const STEP: usize>(rows: [&[i8]; 4], out: &mut [i8]) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's lengths; SSE2 is part of x86-64.
    unsafe {
        let [a, b, c, d] = rows.map(|row| {
            let p = row.as_ptr().cast::<__m128i>();
            if STEP == 1 {
                _mm_loadl_epi64(p)
            } else {
                // Every other byte: mask the odd ones away, pack the 16-bit lanes.
                let even = _mm_and_si128(_mm_loadu_si128(p), _mm_set1_epi16(0xff));
                _mm_packus_epi16(even, even)
            }
        });
        let ab = _mm_unpacklo_epi8(a, b);
        let cd = _mm_unpacklo_epi8(c, d);
        let out = out.as_mut_ptr().cast::<__m128i>();
        _mm_storeu_si128(out, _mm_unpacklo_epi16(ab, cd));
        _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(ab, cd));
    }
}

/// One panel of 4 columns at `first + e · STEP`, sixteen rows side by side
/// (the layout of [`super::widening`]): each block of sixteen rows is a 16×4
/// byte tile to transpose.
fn gather_k16<const STEP: usize>(
    padded: &[i8],
    rows: &[usize],
    first: usize,
    panels: Panels,
    panel: &mut [i8],
) {
    let whole = rows.len() / 16 * 16;
    for (block, sixteen) in panel
        .chunks_exact_mut(64)
        .zip(rows[..whole].chunks_exact(16))
    {
        let tile: [[i8; 4]; 16] = std::array::from_fn(|r| {
            let src = &padded[sixteen[r] + first..][..3 * STEP + 1];
            std::array::from_fn(|e| src[e * STEP])
        });
        transpose16x4(&tile, block);
    }
    // The last block's missing rows are k padding: left at 0.
    for (k, &row) in rows.iter().enumerate().skip(whole) {
        let src = &padded[row + first..][..3 * STEP + 1];
        let dst = &mut panel[panels.at(k, 0)..];
        for e in 0..4 {
            dst[16 * e] = src[e * STEP];
        }
    }
}

/// `out[16e + r] = tile[r][e]`.
#[inline(always)]
fn transpose16x4(tile: &[[i8; 4]; 16], out: &mut [i8]) {
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        /// Byte `16e + r` of the result is byte `4r + e` of the tile.
        const PICK: [[u8; 16]; 4] = {
            let mut pick = [[0u8; 16]; 4];
            let mut i = 0;
            while i < 64 {
                pick[i / 16][i % 16] = (4 * (i % 16) + i / 16) as u8;
                i += 1;
            }
            pick
        };
        assert!(out.len() >= 64);
        // SAFETY: the tile is 64 bytes, `out` at least 64 (checked); NEON is
        // baseline on aarch64.
        unsafe {
            let t = tile.as_ptr().cast::<u8>();
            let table = uint8x16x4_t(
                vld1q_u8(t),
                vld1q_u8(t.add(16)),
                vld1q_u8(t.add(32)),
                vld1q_u8(t.add(48)),
            );
            for (e, pick) in PICK.iter().enumerate() {
                let column = vqtbl4q_u8(table, vld1q_u8(pick.as_ptr()));
                vst1q_u8(out.as_mut_ptr().cast::<u8>().add(16 * e), column);
            }
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    for (r, values) in tile.iter().enumerate() {
        for (e, &v) in values.iter().enumerate() {
            out[16 * e + r] = v;
        }
    }
}

/// One panel, its columns at `first + e · STEP`, one row after the other.
fn gather_k1<const STEP: usize>(
    padded: &[i8],
    rows: &[usize],
    first: usize,
    panels: Panels,
    panel: &mut [i8],
) {
    let span = (panels.r - 1) * STEP + 1;
    for (dst, &row) in panel.chunks_exact_mut(panels.r).zip(rows) {
        let src = padded[row + first..][..span].iter().step_by(STEP);
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s;
        }
    }
}

/// One panel, any columns (a panel that wraps to the next output row, the last
/// one of a block).
fn gather_any(padded: &[i8], rows: &[usize], columns: &[usize], panels: Panels, panel: &mut [i8]) {
    for (k, &row) in rows.iter().enumerate() {
        let dst = panel[panels.at(k, 0)..].iter_mut().step_by(panels.group);
        for (d, &column) in dst.zip(columns) {
            *d = padded[row + column];
        }
    }
}

/// The patch matrix of a convolution, `[channels · kh · kw, oh · ow]`, padding
/// filled with the input's zero point (which is real 0), for tract-linalg to
/// pack: the fallback for a matrix kernel whose packing [`pack_patches`] does
/// not write, and the reference it is tested against.
pub fn im2col(input: &[i8], geo: &Geometry, zero: i8, out: &mut [i8]) {
    let (oh, ow) = geo.output_size();
    let (kh, kw) = geo.kernel;
    let (sh, sw) = geo.stride;
    let [top, left, ..] = geo.pads;
    let (h, w) = (geo.height as isize, geo.width as isize);
    let n = oh * ow;
    for c in 0..geo.channels {
        let plane = &input[c * geo.height * geo.width..][..geo.height * geo.width];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut out[((c * kh + ky) * kw + kx) * n..][..n];
                for oy in 0..oh {
                    let y = (oy * sh + ky) as isize - top as isize;
                    let dst = &mut row[oy * ow..][..ow];
                    if y < 0 || y >= h {
                        dst.fill(zero);
                        continue;
                    }
                    let src = &plane[y as usize * geo.width..][..geo.width];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let x = (ox * sw + kx) as isize - left as isize;
                        *d = if x < 0 || x >= w {
                            zero
                        } else {
                            src[x as usize]
                        };
                    }
                }
            }
        }
    }
}

/// One channel of a depthwise convolution: `acc = bias + Σ w · (x − zero)`.
///
/// tract's depthwise kernels are float-only; this one works on the channel's
/// padded plane as i16 (zero point already subtracted, so padding is 0) and
/// keeps the inner loop a straight multiply-add over a row, which the compiler
/// vectorizes for stride 1 and 2.
pub fn depthwise_channel(
    plane: &[i8],
    geo: &Geometry,
    zero: i8,
    weights: &[i8],
    bias: i32,
    padded: &mut Vec<i16>,
    acc: &mut [i32],
) {
    let (ph, phase_w) = phase_planes(plane, geo, RUN, |s| s as i16 - zero as i16, padded);
    accumulate_depthwise(padded, (ph, phase_w), geo, weights, bias, acc);
}

/// A channel's plane, converted and padded with `D::default()`, stored
/// column-phase by column-phase (for stride 2: even columns, then odd ones) so
/// that every kernel tap reads a contiguous run; `slack` values more, for a run
/// of outputs that reads past the plane's end. Returns the padded height and the
/// width of one phase. Shared by the int8 and the float depthwise convolutions.
pub fn phase_planes<S: Copy, D: Copy + Default>(
    plane: &[S],
    geo: &Geometry,
    slack: usize,
    convert: impl Fn(S) -> D,
    padded: &mut Vec<D>,
) -> (usize, usize) {
    let (ph, pw) = geo.padded();
    let [top, left, ..] = geo.pads;
    let sw = geo.stride.1;
    let phase_w = pw.div_ceil(sw);
    padded.clear();
    padded.resize(sw * ph * phase_w + slack, D::default());
    for y in 0..geo.height {
        let src = &plane[y * geo.width..][..geo.width];
        if sw == 2 {
            let (even, odd) = padded[(y + top) * phase_w..].split_at_mut(ph * phase_w);
            split_columns(
                src,
                left,
                (&mut even[..phase_w], &mut odd[..phase_w]),
                &convert,
            );
            continue;
        }
        for phase in 0..sw {
            // Padded columns `phase, phase + sw, …` that hold input pixels.
            let first = (left + sw - phase - 1) / sw;
            let dst = &mut padded[(phase * ph + y + top) * phase_w..][..phase_w];
            let from = &src[first * sw + phase - left..];
            if sw == 1 {
                // The common case, as a plain loop the compiler vectorizes.
                for (d, &s) in dst[first..].iter_mut().zip(from) {
                    *d = convert(s);
                }
            } else {
                for (d, &s) in dst[first..].iter_mut().zip(from.iter().step_by(sw)) {
                    *d = convert(s);
                }
            }
        }
    }
    (ph, phase_w)
}

/// One row of a stride-2 plane into its even and odd padded columns, in one
/// pass over pairs of pixels (a loop the compiler vectorizes; a strided one per
/// phase stayed scalar).
#[inline(always)]
fn split_columns<S: Copy, D: Copy>(
    src: &[S],
    left: usize,
    (even, odd): (&mut [D], &mut [D]),
    convert: &impl Fn(S) -> D,
) {
    // Pixel 2k sits at padded column 2k + left: even columns when `left` is even.
    let (first, second) = if left.is_multiple_of(2) {
        (&mut even[left / 2..], &mut odd[left / 2..])
    } else {
        (&mut odd[left / 2..], &mut even[left.div_ceil(2)..])
    };
    let pairs = src.chunks_exact(2);
    if let [last] = pairs.remainder() {
        first[src.len() / 2] = convert(*last);
    }
    for ((a, b), pair) in first.iter_mut().zip(second.iter_mut()).zip(pairs) {
        *a = convert(pair[0]);
        *b = convert(pair[1]);
    }
}

/// The multiply-adds of [`depthwise_channel`] over its phase-split padded plane.
fn accumulate_depthwise(
    padded: &[i16],
    (ph, phase_w): (usize, usize),
    geo: &Geometry,
    weights: &[i8],
    bias: i32,
    acc: &mut [i32],
) {
    with_avx2!(accumulate_avx2, (padded: &[i16], ph: usize, phase_w: usize, geo: &Geometry, weights: &[i8], bias: i32, acc: &mut [i32]), {
        accumulate_rows(padded, ph, phase_w, geo, weights, bias, acc)
    })
}

/// Outputs summed at once in registers: all taps of a run of outputs are added
/// before it is stored (a tap at a time over a whole row re-reads and re-writes
/// the row once per tap). Shared with the float depthwise operator.
pub const RUN: usize = 32;

/// Outputs summed at once for the rest of a row of 9 to 24.
pub const MID_RUN: usize = 16;

/// Outputs summed at once at the end of a row.
pub const SHORT_RUN: usize = 8;

/// The next run's length when `left` outputs of the row remain: whole runs,
/// then shorter runs for the rest of the row. MobileNet's later rows are 7 and 14
/// wide, and one long run per row computed 4.6 and 2.3 times the outputs kept
/// (measured on the A72: the depthwise layers were a third of MobileNetV2's int8
/// instructions); a 14-wide row in one run of 16 reads every tap's weight and
/// row once, not twice as two runs of 8 did.
#[inline(always)]
pub fn run_length(left: usize) -> usize {
    if left > RUN - SHORT_RUN {
        RUN
    } else if left > SHORT_RUN {
        MID_RUN
    } else {
        SHORT_RUN
    }
}

/// Where tap `t` of the kernel reads for output (0, 0) in a plane laid out by
/// [`phase_planes`] of `ph` rows a phase, `phase_w` values a row.
#[inline(always)]
pub fn tap_offset(geo: &Geometry, ph: usize, phase_w: usize, t: usize) -> usize {
    let (kw, sw) = (geo.kernel.1, geo.stride.1);
    let (ky, kx) = (t / kw, t % kw);
    ((kx % sw) * ph + ky) * phase_w + kx / sw
}

/// Kernel taps summed per pass over the outputs (7×7 is the largest depthwise
/// kernel in the supported networks; larger ones take several passes).
const MAX_TAPS: usize = 64;

#[inline(always)]
fn accumulate_rows(
    padded: &[i16],
    ph: usize,
    phase_w: usize,
    geo: &Geometry,
    weights: &[i8],
    bias: i32,
    acc: &mut [i32],
) {
    let sh = geo.stride.0;
    let (oh, ow) = geo.output_size();
    let (kh, kw) = geo.kernel;
    // Taps in groups that fit a stack table (in every supported network, one
    // group): each tap's weight and where its row starts for output row 0.
    for group in (0..kh * kw).step_by(MAX_TAPS) {
        let mut table = [(0i16, 0usize); MAX_TAPS];
        let taps = &mut table[..(kh * kw - group).min(MAX_TAPS)];
        for (t, tap) in (group..).zip(taps.iter_mut()) {
            *tap = (weights[t] as i16, tap_offset(geo, ph, phase_w, t));
        }
        let taps = Taps::new(taps);
        for oy in 0..oh {
            let out = &mut acc[oy * ow..][..ow];
            let down = oy * sh * phase_w;
            let mut x = 0;
            while x < ow {
                let n = run_length(ow - x);
                let run = &mut out[x..(x + n).min(ow)];
                let padded = &padded[down + x..];
                match n {
                    RUN => sum_run::<RUN>(&taps, padded, group == 0, bias, run),
                    MID_RUN => sum_run::<MID_RUN>(&taps, padded, group == 0, bias, run),
                    _ => sum_run::<SHORT_RUN>(&taps, padded, group == 0, bias, run),
                }
                x += n;
            }
        }
    }
}

/// The outputs of `run` (at most `N`), every tap summed in registers, from
/// the bias (`first`: then written) or from 0 (then added). A run past the end
/// of the row reads on (into the next row or the plane's slack) and keeps only
/// its outputs.
#[inline(always)]
fn sum_run<const N: usize>(taps: &Taps, padded: &[i16], first: bool, bias: i32, run: &mut [i32]) {
    let sum = sum_taps::<N>(taps, padded, if first { bias } else { 0 });
    // Stored four at a time as fixed-size arrays (vector stores): a loop over
    // a run of any length stayed scalar, lane by lane (measured on aarch64).
    let whole = run.len() / 4 * 4;
    let (fours, tail) = run.split_at_mut(whole);
    for (o, s) in fours.chunks_exact_mut(4).zip(sum.chunks_exact(4)) {
        let (o, s): (&mut [i32; 4], &[i32; 4]) = (o.try_into().unwrap(), s.try_into().unwrap());
        *o = if first {
            *s
        } else {
            [o[0] + s[0], o[1] + s[1], o[2] + s[2], o[3] + s[3]]
        };
    }
    for (o, &s) in tail.iter_mut().zip(&sum[whole..]) {
        *o = if first { s } else { *o + s };
    }
}

/// A kernel's taps (weight, offset of its row) and the largest offset, found
/// together: one bounds check a run instead of one a tap.
struct Taps<'a> {
    list: &'a [(i16, usize)],
    reach: usize,
}

impl<'a> Taps<'a> {
    fn new(list: &'a [(i16, usize)]) -> Taps<'a> {
        let reach = list.iter().map(|&(_, at)| at).max().unwrap_or(0);
        Taps { list, reach }
    }
}

/// `start` plus every tap's weight times its row of `N` values.
#[inline(always)]
fn sum_taps<const N: usize>(taps: &Taps, padded: &[i16], start: i32) -> [i32; N] {
    assert!(taps.reach + N <= padded.len());
    #[cfg(target_arch = "aarch64")]
    if N.is_multiple_of(8) && N <= 32 {
        // The plain loop below vectorizes on aarch64 into products shuffled
        // between lanes before each add (measured: 3 instructions per output
        // and tap); `smlal` multiplies and adds eight in two.
        use std::arch::aarch64::*;
        // SAFETY: every row's N values are in `padded` (each tap's offset is at
        // most `reach`, checked above); N is a multiple of 8, at most 32, which
        // the accumulators cover; NEON is baseline on aarch64.
        unsafe {
            let mut acc = [vdupq_n_s32(start); 8];
            for &(w, at) in taps.list {
                let row = padded.as_ptr().add(at);
                let w = vdupq_n_s16(w);
                for v in 0..N / 8 {
                    let x = vld1q_s16(row.add(8 * v));
                    acc[2 * v] = vmlal_s16(acc[2 * v], vget_low_s16(x), vget_low_s16(w));
                    acc[2 * v + 1] = vmlal_high_s16(acc[2 * v + 1], x, w);
                }
            }
            let mut sum = [0i32; N];
            for (v, acc) in acc.iter().enumerate().take(N / 4) {
                vst1q_s32(sum.as_mut_ptr().add(4 * v), *acc);
            }
            return sum;
        }
    }
    let mut sum = [start; N];
    for &(w, at) in taps.list {
        let row = &padded[at..][..N];
        // |w · (x − zero)| ≤ 128 · 255 fits i16: the product is taken in 16 bits
        // (pmullw even on baseline x86-64) and widened to add.
        for (s, &x) in sum.iter_mut().zip(row) {
            *s += (w * x) as i32;
        }
    }
    sum
}

/// Two quantized tensors added: `y = requant((a − za)·ka + (b − zb)·kb)`, where
/// `sides` holds `(za, ka)` and `(zb, kb)`, `k` being input scale over output scale.
pub fn add(a: &[i8], b: &[i8], sides: [(i32, f32); 2], requant: Requant, out: &mut [i8]) {
    let [(za, ka), (zb, kb)] = sides;
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        let sum = (x as i32 - za) as f32 * ka + (y as i32 - zb) as f32 * kb;
        *o = requant.apply(sum);
    }
}

/// Any function of one int8 value, as a table indexed by the value's bits.
pub fn lookup(input: &[i8], table: &[i8; 256], out: &mut [i8]) {
    for (o, &x) in out.iter_mut().zip(input) {
        *o = table[x as u8 as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Requant = Requant {
        zero: 0,
        min: -128,
        max: 127,
    };

    fn geo(channels: usize, h: usize, w: usize, k: usize, s: usize, p: usize) -> Geometry {
        Geometry {
            channels,
            height: h,
            width: w,
            kernel: (k, k),
            stride: (s, s),
            pads: [p; 4],
        }
    }

    /// The definition, one output at a time, in i64.
    fn conv_reference(x: &[i8], g: &Geometry, zero: i8, w: &[i8], bias: i32) -> Vec<i32> {
        let (oh, ow) = g.output_size();
        let (k, s, p) = (g.kernel.0, g.stride.0, g.pads[0] as isize);
        let mut out = vec![];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = bias as i64;
                for ky in 0..k {
                    for kx in 0..k {
                        let y = (oy * s + ky) as isize - p;
                        let xx = (ox * s + kx) as isize - p;
                        let inside =
                            y >= 0 && xx >= 0 && y < g.height as isize && xx < g.width as isize;
                        let v = if inside {
                            x[y as usize * g.width + xx as usize]
                        } else {
                            zero
                        };
                        sum += w[ky * k + kx] as i64 * (v as i64 - zero as i64);
                    }
                }
                out.push(sum as i32);
            }
        }
        out
    }

    #[test]
    fn depthwise_matches_the_definition_for_strides_and_odd_sizes() {
        // Rows shorter than a register run, several runs and a remainder (short
        // runs, or a long one past the row's end), 5×5, and 9×9 (more taps than
        // one pass sums). One scratch buffer for all, left dirty by each: the
        // border must be zeroed whatever was there.
        let mut scratch = vec![77i16; 3000];
        for (h, w, s, k) in [
            (7, 9, 1, 3),
            (8, 8, 2, 3),
            (5, 3, 2, 3),
            (1, 1, 1, 3),
            (5, 37, 1, 3),
            (6, 41, 2, 3),
            (4, 28, 1, 3),
            (4, 57, 1, 3),
            (9, 20, 1, 5),
            (12, 19, 1, 9),
        ] {
            let g = geo(1, h, w, k, s, k / 2);
            let x = crate::testing::int8(h * w, (h * w * s) as u32);
            let k = crate::testing::int8(k * k, 7);
            let (oh, ow) = g.output_size();
            let mut acc = vec![0; oh * ow];
            depthwise_channel(&x, &g, -5, &k, 1000, &mut scratch, &mut acc);
            assert_eq!(
                acc,
                conv_reference(&x, &g, -5, &k, 1000),
                "{h}x{w} stride {s} kernel {:?}",
                g.kernel
            );
        }
    }

    #[test]
    fn im2col_rows_times_weights_is_the_convolution() {
        let g = geo(2, 6, 5, 3, 2, 1);
        let x = crate::testing::int8(2 * 6 * 5, 3);
        let w = crate::testing::int8(2 * 9, 4);
        let (oh, ow) = g.output_size();
        let mut cols = vec![0; 2 * 9 * oh * ow];
        im2col(&x, &g, 3, &mut cols);
        let by_matrix: Vec<i32> = (0..oh * ow)
            .map(|n| {
                (0..18)
                    .map(|k| w[k] as i32 * (cols[k * oh * ow + n] as i32 - 3))
                    .sum()
            })
            .collect();
        let expected: Vec<i32> = (0..oh * ow)
            .map(|i| {
                (0..2)
                    .map(|c| {
                        conv_reference(
                            &x[c * 30..][..30],
                            &geo(1, 6, 5, 3, 2, 1),
                            3,
                            &w[c * 9..][..9],
                            0,
                        )[i]
                    })
                    .sum()
            })
            .collect();
        assert_eq!(by_matrix, expected);
    }

    #[test]
    fn requant_rounds_half_to_even_and_saturates() {
        let r = Requant { zero: 10, ..FULL };
        let out: Vec<i8> = [0.5, 1.5, -0.5, -2.5, 2.49, 1e9, -1e9, 116.6]
            .iter()
            .map(|&v| r.apply(v))
            .collect();
        assert_eq!(out, [10, 12, 10, 8, 12, 127, -128, 127]);
        let relu6 = Requant {
            min: -128,
            max: 20,
            zero: -128,
        };
        assert_eq!(relu6.apply(300.0), 20);
    }

    #[test]
    fn add_rescales_both_sides() {
        let mut out = [0i8; 3];
        add(
            &[10, -20, 127],
            &[4, 4, 127],
            [(2, 0.5), (-4, 0.25)],
            Requant { zero: 1, ..FULL },
            &mut out,
        );
        // (10-2)·0.5 + (4+4)·0.25 = 6 → 7;  (-22)·0.5 + 2 = -9 → -8;  62.5 + 32.75 = 95.25 → 96
        assert_eq!(out, [7, -8, 96]);
    }

    /// What tract-linalg's own packer makes of the patch matrix, panel by panel
    /// (only the `k · r` values a panel holds: tails are padding).
    fn tract_panels(
        cols: &[i8],
        k: usize,
        n: usize,
        format: &dyn tract_linalg::mmm::MMMInputFormat,
        panels: Panels,
    ) -> Vec<Vec<i8>> {
        use tract_linalg::mmm::EagerPackedInput;
        use tract_onnx::prelude::Tensor;
        let matrix = Tensor::from_shape(&[k, n], cols).unwrap();
        let packed = format.prepare_one(&matrix, 0, 1).unwrap();
        let packed = packed.downcast_ref::<EagerPackedInput>().unwrap();
        let bytes: Vec<i8> = packed.packed.as_bytes().iter().map(|&b| b as i8).collect();
        // k rounded up to whole groups: the dot-product kernels sum those zeros.
        let values = k.next_multiple_of(panels.group) * panels.r;
        bytes
            .chunks(panels.len)
            .map(|p| p[..values].to_vec())
            .collect()
    }

    #[test]
    fn packed_patches_are_what_tract_packs_from_the_patch_matrix() {
        use tract_linalg::pack::{PackedFormat, PackedI8K4};
        use tract_onnx::prelude::Datum;
        let zero = -3;
        // 3×3 stride 1 pad 1, 7×7 stride 2 pad 3 (ResNet's stem), 1×1 stride 2,
        // 1×1 stride 1 unpadded (the input is the matrix); output rows narrower
        // than a panel and rows of several panels (the evenly spaced gathers);
        // k a multiple of 4 and not.
        for g in [
            geo(3, 9, 7, 3, 1, 1),
            geo(4, 5, 21, 3, 1, 1),
            geo(2, 13, 11, 7, 2, 3),
            geo(2, 9, 40, 7, 2, 3),
            geo(5, 6, 9, 1, 2, 0),
            geo(8, 3, 37, 1, 2, 0),
            geo(6, 5, 7, 1, 1, 0),
        ] {
            let x = crate::testing::int8(g.channels * g.height * g.width, 5);
            let (oh, ow) = g.output_size();
            let (k, n) = (g.channels * g.kernel.0 * g.kernel.1, oh * ow);
            let mut cols = vec![0; k * n];
            im2col(&x, &g, zero, &mut cols);
            let mut scratch = vec![];
            let padded = pad_planes(&x, &g, zero, &mut scratch).to_vec();
            // x86's dot-product kernels (8 and 16 wide), ARM's and AVX2's.
            let k4 = PackedI8K4::new(8);
            let k4_wide = PackedI8K4::new(16);
            let plain = PackedFormat::new(i8::datum_type(), 8, 16).with_end_padding_record(1);
            let panels = |r, group, len| Panels { r, group, len };
            let formats: [(&dyn tract_linalg::mmm::MMMInputFormat, Panels); 3] = [
                (&k4, panels(8, 4, k4.single_panel_len(k))),
                (&k4_wide, panels(16, 4, k4_wide.single_panel_len(k))),
                (&plain, panels(8, 1, plain.single_panel_len(k))),
            ];
            for (format, panels) in formats {
                // The whole matrix, then a block of columns not on a panel edge.
                for (start, width) in [(0, n), (3, n - 5)] {
                    let block: Vec<i8> = (0..k)
                        .flat_map(|r| cols[r * n + start..][..width].to_vec())
                        .collect();
                    let expected = tract_panels(&block, k, width, format, panels);
                    let mut ours = vec![0; width.div_ceil(panels.r) * panels.len];
                    pack_patches(
                        &padded,
                        &g,
                        &patch_rows(&g),
                        panels,
                        start..start + width,
                        &mut ours,
                    );
                    let ours: Vec<Vec<i8>> = ours
                        .chunks(panels.len)
                        .zip(&expected)
                        .map(|(p, e)| p[..e.len()].to_vec())
                        .collect();
                    assert_eq!(ours, expected, "{g:?} {panels:?} columns {start}+{width}");
                }
            }
        }
    }

    #[test]
    fn blocked_patches_are_what_tract_packs_from_the_tap_major_patch_matrix() {
        use tract_linalg::pack::PackedI8K4;
        let zero = 7;
        // Stride 1 and 2, output rows narrower and wider than a panel, 1×1.
        for g in [
            geo(4, 9, 7, 3, 1, 1),
            geo(8, 5, 21, 3, 1, 1),
            geo(4, 13, 11, 3, 2, 1),
            geo(8, 3, 37, 1, 2, 0),
            geo(12, 6, 7, 1, 1, 0),
        ] {
            let x = crate::testing::int8(g.channels * g.height * g.width, 8);
            let (oh, ow) = g.output_size();
            let taps = g.kernel.0 * g.kernel.1;
            let (k, n) = (g.channels * taps, oh * ow);
            let mut cols = vec![0; k * n];
            im2col(&x, &g, zero, &mut cols);
            // Row (tap, channel) of the reordered matrix is row (channel, tap) of im2col's.
            let tap_major: Vec<i8> = (0..k)
                .flat_map(|r| {
                    let (t, c) = (r / g.channels, r % g.channels);
                    cols[(c * taps + t) * n..][..n].to_vec()
                })
                .collect();
            let mut scratch = vec![];
            let padded = pad_planes(&x, &g, zero, &mut scratch).to_vec();
            let mut blocked = vec![];
            channel_blocks(&padded, &g, &mut blocked);
            for r in [8, 16] {
                let format = PackedI8K4::new(r);
                let panels = Panels {
                    r,
                    group: 4,
                    len: format.single_panel_len(k),
                };
                for (start, width) in [(0, n), (3, n - 5)] {
                    let block: Vec<i8> = (0..k)
                        .flat_map(|row| tap_major[row * n + start..][..width].to_vec())
                        .collect();
                    let expected = tract_panels(&block, k, width, &format, panels);
                    let mut ours = vec![0; width.div_ceil(r) * panels.len];
                    pack_blocked(&blocked, &g, panels, start..start + width, &mut ours);
                    let ours: Vec<Vec<i8>> = ours
                        .chunks(panels.len)
                        .zip(&expected)
                        .map(|(p, e)| p[..e.len()].to_vec())
                        .collect();
                    assert_eq!(ours, expected, "{g:?} r {r} columns {start}+{width}");
                }
            }
        }
    }

    #[test]
    fn tap_major_weights_follow_the_patch_rows() {
        // 2 rows, 2 channels, 3 taps: row-major (channel, tap) → (tap, channel).
        let w: Vec<i8> = (0..12).collect();
        assert_eq!(tap_major(&w, 2, 2), [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]);
    }

    /// The panels of `super::widening` (4 columns, 16 k values side by side),
    /// written from the patch matrix by the definition of the layout.
    #[test]
    fn patches_packed_for_the_widening_kernel_are_the_patch_matrix_transposed() {
        let zero = 5;
        for g in [
            geo(3, 9, 7, 3, 1, 1),
            geo(20, 6, 13, 3, 1, 1),
            geo(2, 13, 11, 7, 2, 3),
            geo(17, 9, 12, 3, 2, 1),
            geo(40, 3, 37, 1, 2, 0),
            geo(33, 5, 7, 1, 1, 0),
        ] {
            let x = crate::testing::int8(g.channels * g.height * g.width, 9);
            let (oh, ow) = g.output_size();
            let (k, n) = (g.channels * g.kernel.0 * g.kernel.1, oh * ow);
            let mut cols = vec![0; k * n];
            im2col(&x, &g, zero, &mut cols);
            let mut scratch = vec![];
            let padded = pad_planes(&x, &g, zero, &mut scratch).to_vec();
            let panels = super::super::widening::panels(k);
            for (start, width) in [(0, n), (3, n - 5)] {
                let mut expected = vec![0i8; width.div_ceil(4) * panels.len];
                for r in 0..k {
                    for j in 0..width {
                        let at = (j / 4) * panels.len + (r / 16) * 64 + (j % 4) * 16 + r % 16;
                        expected[at] = cols[r * n + start + j];
                    }
                }
                let mut ours = vec![0; expected.len()];
                let rows = patch_rows(&g);
                pack_patches(&padded, &g, &rows, panels, start..start + width, &mut ours);
                assert_eq!(ours, expected, "{g:?} columns {start}+{width}");
            }
        }
    }
}
