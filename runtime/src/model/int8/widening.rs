//! int8 matrix products for aarch64 cores without the dot-product instruction
//! (Cortex-A72: the Raspberry Pi 4).
//!
//! tract-linalg's int8 kernel for such cores widens every value to 16 bits and
//! multiplies 4 pairs per instruction (`smlal .4s`), as many as float's `fmla`,
//! so int8 ran more instructions than float. This one multiplies 8 int8 pairs
//! into 16-bit products (`smull`), adds the products of the next 8 pairs to
//! them (`smlal2`) and adds neighbouring 16-bit sums into 32-bit accumulators
//! (`sadalp`): 16 multiply-accumulates in 3 instructions, the scheme of
//! gemmlowp's and ncnn's kernels for ARMv8.0 (ours is written from the
//! instruction set, not from theirs).
//!
//! The two products summed in 16 bits fit only when one side is never −128:
//! 2 · 128 · 127 = 32 512 < 32 767. Activations take the whole int8 range, so a
//! layer takes this path only when none of its weights is −128 (`quantize`
//! writes symmetric weights in −127..127; a foreign model may not). Then every
//! sum is exact and the result equals every other kernel's, bit for bit.
//!
//! Layout: both operands hold 16 consecutive k values of a row (weights) or a
//! column (patches) side by side, k padded with zeros to a multiple of 16. The
//! weights are packed at load in panels of [`MR`] rows, the patches per frame in
//! panels of [`NR`] columns by [`super::kernels::pack_patches`].

use super::kernels::{self, Panels};

/// Rows (output channels) per tile.
pub const MR: usize = 4;
/// Columns (output pixels) per tile.
pub const NR: usize = 4;
/// k values side by side in a row or column.
pub const KB: usize = 16;

/// Whether this engine runs int8 matrix products on this CPU: aarch64 without
/// the dot product, as tract-linalg sees it (so `EDGEBONE_KERNELS=a72` picks it
/// on an A76 too).
pub fn runs_here() -> bool {
    cfg!(target_arch = "aarch64")
        && !tract_linalg::isa::native().has(tract_linalg::isa::Isa::Aarch64DotProd)
}

/// Whether a layer's weights keep every 16-bit pair sum exact.
pub fn exact_for(weights: &[i8]) -> bool {
    !weights.contains(&i8::MIN)
}

pub fn k_padded(k: usize) -> usize {
    k.next_multiple_of(KB)
}

/// The patch panels' layout for a reduction of `k`.
pub fn panels(k: usize) -> Panels {
    Panels {
        r: NR,
        group: KB,
        len: NR * k_padded(k),
    }
}

/// The weights' panels for a reduction of `k`: [`MR`] rows, 16 k values of
/// each side by side.
fn weight_panels(k: usize) -> Panels {
    Panels {
        r: MR,
        group: KB,
        len: MR * k_padded(k),
    }
}

/// Weights `[m, k]` (row-major) in panels of [`MR`] rows; rows past `m` and
/// k past `k` are 0.
pub fn pack_weights(weights: &[i8], m: usize, k: usize) -> Vec<i8> {
    kernels::pack_rows(weights, m, k, weight_panels(k))
}

/// `acc[i · stride + j] = bias[i] + Σ_k w[i, k] · x[k, j]` for the `m` rows of
/// `weights` (packed by [`pack_weights`]) and the `n` columns of `patches`
/// (packed for [`panels`]), k padded to `kp`.
pub fn matmul(
    weights: &[i8],
    patches: &[i8],
    (m, n, kp): (usize, usize, usize),
    bias: &[i32],
    acc: &mut [i32],
    stride: usize,
) {
    let (a, b) = ((weights, weight_panels(kp)), (patches, panels(kp)));
    kernels::for_each_tile(
        a,
        b,
        (m, n),
        bias,
        (acc, stride),
        |a, b, bias, columns, out| tile(a, b, kp / KB, bias, (columns, stride), out),
    );
}

/// One [`MR`]×[`NR`] tile over `blocks` blocks of 16 k values, plus the bias,
/// stored at `out` in rows `stride` apart: `bias.len()` rows of `columns`.
#[inline]
fn tile(
    a: &[i8],
    b: &[i8],
    blocks: usize,
    bias: &[i32],
    (columns, stride): (usize, usize),
    out: &mut [i32],
) {
    assert!(a.len() >= blocks * MR * KB && b.len() >= blocks * NR * KB);
    let rows = bias.len();
    assert!(rows <= MR && columns <= NR && out.len() >= (rows - 1) * stride + columns);
    #[cfg(target_arch = "aarch64")]
    // SAFETY: lengths checked above; NEON is baseline on aarch64.
    unsafe {
        use std::arch::aarch64::*;
        let sums = tile_neon(a.as_ptr(), b.as_ptr(), blocks);
        if rows == MR && columns == NR {
            for (i, row) in sums.into_iter().enumerate() {
                let row = vaddq_s32(row, vdupq_n_s32(bias[i]));
                vst1q_s32(out.as_mut_ptr().add(i * stride), row);
            }
        } else {
            for (i, row) in sums.into_iter().take(rows).enumerate() {
                let mut values = [0i32; NR];
                vst1q_s32(values.as_mut_ptr(), row);
                store_row(&values, bias[i], &mut out[i * stride..][..columns]);
            }
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    for (i, values) in tile_portable(a, b, blocks).iter().take(rows).enumerate() {
        store_row(values, bias[i], &mut out[i * stride..][..columns]);
    }
}

fn store_row(values: &[i32; NR], bias: i32, out: &mut [i32]) {
    for (o, &v) in out.iter_mut().zip(values) {
        *o = v + bias;
    }
}

/// The same sums, written plainly: what the NEON tile is tested against, and
/// what runs the packing's tests on other architectures.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
fn tile_portable(a: &[i8], b: &[i8], blocks: usize) -> [[i32; NR]; MR] {
    let mut out = [[0i32; NR]; MR];
    for block in 0..blocks {
        let a = &a[block * MR * KB..][..MR * KB];
        let b = &b[block * NR * KB..][..NR * KB];
        for (i, row) in out.iter_mut().enumerate() {
            for (j, sum) in row.iter_mut().enumerate() {
                let products = a[i * KB..][..KB].iter().zip(&b[j * KB..][..KB]);
                *sum += products.map(|(&x, &y)| x as i32 * y as i32).sum::<i32>();
            }
        }
    }
    out
}

/// # Safety
/// `a` and `b` point to `blocks · 64` readable bytes each.
#[cfg(target_arch = "aarch64")]
#[inline]
unsafe fn tile_neon(
    a: *const i8,
    b: *const i8,
    blocks: usize,
) -> [std::arch::aarch64::int32x4_t; MR] {
    use std::arch::aarch64::*;
    // SAFETY: the caller's lengths; NEON is baseline on aarch64.
    unsafe {
        let mut c = [[vdupq_n_s32(0); NR]; MR];
        for block in 0..blocks {
            let a = a.add(block * MR * KB);
            let b = b.add(block * NR * KB);
            let rows = [0, 1, 2, 3].map(|i| vld1q_s8(a.add(i * KB)));
            let columns = [0, 1, 2, 3].map(|j| vld1q_s8(b.add(j * KB)));
            for (acc, row) in c.iter_mut().zip(rows) {
                for (sum, column) in acc.iter_mut().zip(columns) {
                    let products = vmull_s8(vget_low_s8(row), vget_low_s8(column));
                    let products = vmlal_high_s8(products, row, column);
                    *sum = vpadalq_s16(*sum, products);
                }
            }
        }
        // Each accumulator holds four partial sums of one (row, column):
        // pairwise adds leave a row's four columns in one register.
        c.map(|[c0, c1, c2, c3]| vpaddq_s32(vpaddq_s32(c0, c1), vpaddq_s32(c2, c3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Int8 values of at least `lo`.
    fn pseudo_random(n: usize, seed: u32, lo: i32) -> Vec<i8> {
        let values = crate::testing::int8(n, seed);
        values.into_iter().map(|v| v.max(lo as i8)).collect()
    }

    /// Patches `[k, n]` packed as [`pack_patches`](super::super::kernels::pack_patches)
    /// packs them for [`panels`].
    fn pack_columns(x: &[i8], k: usize, n: usize) -> Vec<i8> {
        let p = panels(k);
        let mut out = vec![0i8; n.div_ceil(NR) * p.len];
        for kk in 0..k {
            for j in 0..n {
                let panel = &mut out[j / NR * p.len..];
                panel[(kk / KB) * NR * KB + (j % NR) * KB + kk % KB] = x[kk * n + j];
            }
        }
        out
    }

    #[test]
    fn matmul_is_the_exact_product_at_the_int8_extremes() {
        for (m, k, n) in [
            (1, 1, 1),
            (4, 16, 4),
            (5, 17, 7),
            (13, 147, 29),
            (64, 576, 9),
        ] {
            // Weights in −127..127, activations over the whole range, with
            // runs of the extremes where the 16-bit pair sums are largest.
            let mut w = pseudo_random(m * k, 7, -127);
            let mut x = pseudo_random(k * n, 11, -128);
            w.iter_mut().step_by(3).for_each(|v| *v = 127);
            x.iter_mut().step_by(2).for_each(|v| *v = -128);
            let bias: Vec<i32> = (0..m as i32).map(|i| i * 1000 - 3).collect();
            let stride = n + 3;
            let mut acc = vec![i32::MIN; m * stride];
            let packed = pack_weights(&w, m, k);
            let patches = pack_columns(&x, k, n);
            matmul(
                &packed,
                &patches,
                (m, n, k_padded(k)),
                &bias,
                &mut acc,
                stride,
            );
            for i in 0..m {
                for j in 0..n {
                    let want: i32 = bias[i]
                        + (0..k)
                            .map(|kk| w[i * k + kk] as i32 * x[kk * n + j] as i32)
                            .sum::<i32>();
                    assert_eq!(acc[i * stride + j], want, "m {m} k {k} n {n}: ({i}, {j})");
                }
                assert!(acc[i * stride + n..][..3].iter().all(|&v| v == i32::MIN));
            }
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn the_neon_tile_equals_the_plain_sums() {
        let a = pseudo_random(MR * KB * 5, 3, -127);
        let b = pseudo_random(NR * KB * 5, 5, -128);
        let bias = [0; MR];
        let mut out = [0i32; MR * NR];
        tile(&a, &b, 5, &bias, (NR, NR), &mut out);
        let plain = tile_portable(&a, &b, 5);
        assert_eq!(
            out.chunks(NR).collect::<Vec<_>>(),
            plain.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_weight_of_minus_128_is_not_exact() {
        assert!(exact_for(&[-127, 0, 127]));
        assert!(!exact_for(&[3, -128]));
    }
}
