//! The transforms of Winograd's F(4×4, 3×3): a 3×3 convolution computed on 6×6
//! input tiles as 36 element-wise products instead of 144 multiply-adds per 4×4
//! outputs (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! interpolation points 0, ±1, ±2, ∞).
//!
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: each 2-D transform is the 1-D one applied
//! down the columns, then along the rows. The input and output transforms work
//! on [`LANES`] tiles at once, one tile per lane, so that the compiler turns
//! every step into SIMD instructions on every target (NEON, SSE, AVX) without
//! target-specific code.

/// Tiles transformed together.
pub const LANES: usize = 8;
/// Values of one transformed tile (6 × 6).
pub const POINTS: usize = 36;
/// Outputs of one tile per side.
pub const OUT: usize = 4;
/// Inputs of one tile per side.
pub const IN: usize = 6;

pub type Lanes = [f32; LANES];

#[inline(always)]
fn map2(a: &Lanes, b: &Lanes, f: impl Fn(f32, f32) -> f32) -> Lanes {
    std::array::from_fn(|l| f(a[l], b[l]))
}

/// `Bᵀ z` for six values (one column or row of a tile).
#[inline(always)]
fn input_1d(z: [&Lanes; IN]) -> [Lanes; IN] {
    let [z0, z1, z2, z3, z4, z5] = z;
    // Shared sums, as the transform's rows pair up (±1 and ±2 points).
    let a = map2(z4, z2, |z4, z2| z4 - 4.0 * z2);
    let b = map2(z3, z1, |z3, z1| z3 - 4.0 * z1);
    let c = map2(z4, z2, |z4, z2| z4 - z2);
    let d = map2(z3, z1, |z3, z1| 2.0 * (z3 - z1));
    [
        std::array::from_fn(|l| 4.0 * z0[l] - 5.0 * z2[l] + z4[l]),
        map2(&a, &b, |a, b| a + b),
        map2(&a, &b, |a, b| a - b),
        map2(&c, &d, |c, d| c + d),
        map2(&c, &d, |c, d| c - d),
        std::array::from_fn(|l| 4.0 * z1[l] - 5.0 * z3[l] + z5[l]),
    ]
}

/// `Aᵀ m` for six values: four outputs.
#[inline(always)]
fn output_1d(m: [&Lanes; IN]) -> [Lanes; OUT] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let s12 = map2(m1, m2, |a, b| a + b);
    let d12 = map2(m1, m2, |a, b| a - b);
    let s34 = map2(m3, m4, |a, b| a + b);
    let d34 = map2(m3, m4, |a, b| a - b);
    [
        std::array::from_fn(|l| m0[l] + s12[l] + s34[l]),
        map2(&d12, &d34, |d, e| d + 2.0 * e),
        map2(&s12, &s34, |s, t| s + 4.0 * t),
        std::array::from_fn(|l| d12[l] + 8.0 * d34[l] + m5[l]),
    ]
}

/// `Bᵀ d B` of [`LANES`] 6×6 tiles, row-major (`d[row · 6 + column]`).
#[inline(always)]
pub fn input(d: &[Lanes; POINTS]) -> [Lanes; POINTS] {
    let mut columns = [[0.0; LANES]; POINTS];
    for b in 0..IN {
        let t = input_1d(std::array::from_fn(|a| &d[a * IN + b]));
        for (r, v) in t.into_iter().enumerate() {
            columns[r * IN + b] = v;
        }
    }
    let mut v = [[0.0; LANES]; POINTS];
    for r in 0..IN {
        let t = input_1d(std::array::from_fn(|b| &columns[r * IN + b]));
        v[r * IN..][..IN].copy_from_slice(&t);
    }
    v
}

/// `Aᵀ m A` of [`LANES`] transformed products: 4×4 outputs each, row-major.
#[inline(always)]
pub fn output(m: &[Lanes; POINTS]) -> [Lanes; OUT * OUT] {
    let mut columns = [[0.0; LANES]; OUT * IN];
    for s in 0..IN {
        let t = output_1d(std::array::from_fn(|r| &m[r * IN + s]));
        for (o, v) in t.into_iter().enumerate() {
            columns[o * IN + s] = v;
        }
    }
    let mut y = [[0.0; LANES]; OUT * OUT];
    for o in 0..OUT {
        let t = output_1d(std::array::from_fn(|s| &columns[o * IN + s]));
        y[o * OUT..][..OUT].copy_from_slice(&t);
    }
    y
}

/// `G g Gᵀ` of one 3×3 kernel (row-major), in f64 so that the weights carry no
/// error of their own into the products.
pub fn kernel(g: &[f32]) -> [f32; POINTS] {
    fn g_1d([g0, g1, g2]: [f64; 3]) -> [f64; IN] {
        [
            g0 / 4.0,
            -(g0 + g1 + g2) / 6.0,
            -(g0 - g1 + g2) / 6.0,
            g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
            g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
            g2,
        ]
    }
    let g: [f64; 9] = std::array::from_fn(|i| g[i] as f64);
    let columns: [[f64; IN]; 3] = std::array::from_fn(|b| g_1d([g[b], g[3 + b], g[6 + b]]));
    let mut u = [0.0; POINTS];
    for a in 0..IN {
        let row = g_1d([columns[0][a], columns[1][a], columns[2][a]]);
        for (b, v) in row.into_iter().enumerate() {
            u[a * IN + b] = v as f32;
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile through the three transforms is the 3×3 correlation of the tile.
    #[test]
    fn one_tile_is_the_correlation() {
        let d: Vec<f32> = (0..36).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let g: Vec<f32> = (0..9).map(|i| ((i * 5 % 7) as f32 - 3.0) * 0.25).collect();
        let tiles: [Lanes; POINTS] = std::array::from_fn(|i| [d[i]; LANES]);
        let v = input(&tiles);
        let u = kernel(&g);
        let m: [Lanes; POINTS] = std::array::from_fn(|i| v[i].map(|x| x * u[i]));
        let y = output(&m);
        for oy in 0..OUT {
            for ox in 0..OUT {
                let mut want = 0.0f64;
                for ky in 0..3 {
                    for kx in 0..3 {
                        want += d[(oy + ky) * IN + ox + kx] as f64 * g[ky * 3 + kx] as f64;
                    }
                }
                let got = y[oy * OUT + ox];
                assert!(
                    got.iter().all(|&v| (v as f64 - want).abs() < 1e-4),
                    "({oy},{ox}): {got:?} vs {want}"
                );
            }
        }
    }
}
