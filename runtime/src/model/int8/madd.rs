//! int8 matrix products for x86-64 with AVX2 but without VNNI (the AVX2 + FMA
//! machines, and any x86 with `EDGEBONE_KERNELS=avx2`).
//!
//! tract-linalg's int8 kernel for AVX2 ran slower than float on every model
//! (ResNet-18 2.6× its float time). This one widens int8 to 16 bits as it loads
//! and multiplies with `vpmaddwd`: 16 products a instruction, summed in
//! neighbouring pairs into 32 bits, so no sum can saturate (unlike `vpmaddubsw`,
//! whose 16-bit pair sums overflow for full-range int8) and every result is
//! exact, the same bytes as every other kernel's. Weights are widened once, at
//! load; patches as the kernel loads them (`vpmovsxbw`).
//!
//! Layout: the patches in tract's `PackedI8K4` panels of 8 columns (the VNNI
//! kernels' layout, which [`super::kernels::pack_patches`] writes quickly): four
//! consecutive k values of a column side by side. Each 32-bit lane of an
//! accumulator sums one column's k ≡ 0,1 or k ≡ 2,3 (mod 4) pairs; the two are
//! added once at the end of the tile.

use super::kernels::{self, Panels};

/// Rows (output channels) per tile: 12 accumulators, 2 patch registers and a
/// broadcast weight fill 15 of the 16 AVX2 registers.
pub const MR: usize = 6;
/// Columns (output pixels) per tile.
pub const NR: usize = 8;
/// k values side by side in a column.
pub const KB: usize = 4;

/// Whether this engine runs int8 matrix products on this CPU: AVX2 without
/// VNNI, as tract-linalg sees it (so `EDGEBONE_KERNELS=avx2` picks it on a VNNI
/// machine too).
pub fn runs_here() -> bool {
    use tract_linalg::isa::{Isa, native};
    let isa = native();
    cfg!(target_arch = "x86_64")
        && isa.has(Isa::X86_64Avx2)
        && !isa.has(Isa::X86_64Avx512Vnni)
        && !isa.has(Isa::X86_64AvxVnni)
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

/// The weights' panels for a reduction of `k`: [`MR`] rows, four k values of
/// each side by side.
fn weight_panels(k: usize) -> Panels {
    Panels {
        r: MR,
        group: KB,
        len: MR * k_padded(k),
    }
}

/// Weights `[m, k]` (row-major) widened to i16, in panels of [`MR`] rows; rows past `m` and
/// k past `k` are 0.
pub fn pack_weights(weights: &[i8], m: usize, k: usize) -> Vec<i16> {
    kernels::pack_rows(weights, m, k, weight_panels(k))
}

/// `acc[i · stride + j] = bias[i] + Σ_k w[i, k] · x[k, j]` for the `m` rows of
/// `weights` (packed by [`pack_weights`]) and the `n` columns of `patches`
/// (packed for [`panels`]), k padded to `kp`.
pub fn matmul(
    weights: &[i16],
    patches: &[i8],
    (m, n, kp): (usize, usize, usize),
    bias: &[i32],
    acc: &mut [i32],
    stride: usize,
) {
    let (a, b) = ((weights, weight_panels(kp)), (patches, panels(kp)));
    // Asked once a product, not once a tile.
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    kernels::for_each_tile(
        a,
        b,
        (m, n),
        bias,
        (acc, stride),
        |a, b, bias, columns, out| tile(a, b, kp / KB, bias, (columns, stride), out, avx2),
    );
}

/// One [`MR`]×[`NR`] tile over `groups` groups of 4 k values, plus the bias,
/// stored at `out` in rows `stride` apart: `bias.len()` rows of `columns`;
/// `avx2` when the CPU has it (detected by the caller).
#[inline]
fn tile(
    a: &[i16],
    b: &[i8],
    groups: usize,
    bias: &[i32],
    (columns, stride): (usize, usize),
    out: &mut [i32],
    avx2: bool,
) {
    assert!(a.len() >= groups * MR * KB && b.len() >= groups * NR * KB);
    let rows = bias.len();
    assert!(rows <= MR && columns <= NR && out.len() >= (rows - 1) * stride + columns);
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: lengths checked above; the caller detected AVX2.
        unsafe { tile_avx2(a, b, groups, bias, (columns, stride), out) };
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = avx2;
    for (i, values) in tile_portable(a, b, groups).iter().take(rows).enumerate() {
        for (o, &v) in out[i * stride..][..columns].iter_mut().zip(values) {
            *o = v + bias[i];
        }
    }
}

/// The same sums, written plainly: what the AVX2 tile is tested against, and
/// what runs on an x86 without AVX2 (never chosen there; kept for the tests).
fn tile_portable(a: &[i16], b: &[i8], groups: usize) -> [[i32; NR]; MR] {
    let mut out = [[0i32; NR]; MR];
    for g in 0..groups {
        let a = &a[g * MR * KB..][..MR * KB];
        let b = &b[g * NR * KB..][..NR * KB];
        for (i, row) in out.iter_mut().enumerate() {
            for (j, sum) in row.iter_mut().enumerate() {
                let products = a[i * KB..][..KB].iter().zip(&b[j * KB..][..KB]);
                *sum += products.map(|(&w, &x)| w as i32 * x as i32).sum::<i32>();
            }
        }
    }
    out
}

/// # Safety
/// The CPU has AVX2; `a`, `b` and `out` are as [`tile`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2(
    a: &[i16],
    b: &[i8],
    groups: usize,
    bias: &[i32],
    (columns, stride): (usize, usize),
    out: &mut [i32],
) {
    use std::arch::x86_64::*;
    let (a, b) = (a.as_ptr(), b.as_ptr());
    // SAFETY: the caller's lengths; AVX2 is enabled for this function.
    unsafe {
        let mut c = [[_mm256_setzero_si256(); 2]; MR];
        for g in 0..groups {
            let b = b.add(g * NR * KB).cast::<__m128i>();
            // Columns 0–3 and 4–7, four k values each, widened to 16 bits.
            let low = _mm256_cvtepi8_epi16(_mm_loadu_si128(b));
            let high = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(1)));
            let a = a.add(g * MR * KB);
            for (i, acc) in c.iter_mut().enumerate() {
                // A row's four weights, repeated for the four columns.
                let w = _mm256_set1_epi64x(a.add(i * KB).cast::<i64>().read_unaligned());
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(low, w));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(high, w));
            }
        }
        for (i, [low, high]) in c.into_iter().enumerate().take(bias.len()) {
            // Lanes hold (column, k pair) sums: [c0 c0 c1 c1 | c2 c2 c3 c3] and
            // the same for columns 4–7. Adding neighbours gives
            // [c0 c1 c4 c5 | c2 c3 c6 c7]; the 64-bit permute puts them in order.
            let sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(low, high), 0b11_01_10_00);
            let sums = _mm256_add_epi32(sums, _mm256_set1_epi32(bias[i]));
            let row = out.as_mut_ptr().add(i * stride);
            if columns == NR {
                _mm256_storeu_si256(row.cast::<__m256i>(), sums);
            } else {
                let mut values = [0i32; NR];
                _mm256_storeu_si256(values.as_mut_ptr().cast::<__m256i>(), sums);
                std::ptr::copy_nonoverlapping(values.as_ptr(), row, columns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patches `[k, n]` in `PackedI8K4` panels of 8, by the layout's definition.
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
            (6, 4, 8),
            (7, 5, 9),
            (13, 147, 29),
            (64, 576, 17),
        ] {
            // Both sides over the whole int8 range, −128 included, with runs of
            // the extremes.
            let mut w = crate::testing::int8(m * k, 7);
            let mut x = crate::testing::int8(k * n, 11);
            w.iter_mut().step_by(3).for_each(|v| *v = -128);
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
}
