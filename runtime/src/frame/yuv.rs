//! YUV's colour: the matrix and range a source declares, a frame's planes once cut
//! out of its bytes (`raw`), and the one YUV → RGB conversion, done on planes at
//! full (4:4:4) chroma resolution.

use serde::{Deserialize, Serialize};

/// The YUV → RGB matrix and range of the source (BT.601 limited range is what
/// ffmpeg's `yuv420p`, USB webcams and rpicam-vid at SD sizes send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Colour {
    pub matrix: Matrix,
    pub range: Range,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Matrix {
    #[default]
    Bt601,
    Bt709,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Range {
    #[default]
    Limited,
    Full,
}

/// A YUV image's planes, rows unpadded: luma `width`×`height`, chroma
/// `chroma_size()`.
pub(crate) struct YuvPlanes<'a> {
    pub width: u32,
    pub height: u32,
    pub luma: &'a [u8],
    pub chroma: Chroma<'a>,
    /// Luma pixels per chroma sample, across and down.
    pub subsampling: (u32, u32),
    pub colour: Colour,
}

impl YuvPlanes<'_> {
    pub(crate) fn chroma_size(&self) -> (u32, u32) {
        let (across, down) = self.subsampling;
        (self.width / across, self.height / down)
    }
}

/// A YUV image's chroma samples.
pub(crate) enum Chroma<'a> {
    /// I420: a U plane, then a V plane.
    Planar(&'a [u8], &'a [u8]),
    /// NV12 (and YUYV once split): U and V alternating.
    Interleaved(&'a [u8]),
}

/// 1.5 · 2²³: added and taken away, it rounds an f32 below 2²² to an integer,
/// ties to even, in two additions that vectorize (`f32::round` is a libm call
/// per value on baseline x86-64 and armv7).
const ROUND: f32 = 12_582_912.0;

/// The YUV → RGB arithmetic of one matrix and range.
///
/// Written by hand: SIMD converters (yuvutils-rs, used here before) round
/// differently in their NEON and AVX code, which a full-frame conversion averages
/// away in the downscale but a model-sized one does not (armv7 against x86: 2e-2
/// on a top score). Plain f32 arithmetic, no fused multiply-add, gives every
/// target the same pixels; the loops over it are written so the compiler
/// vectorizes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coefficients {
    black: f32,
    luma_scale: f32,
    chroma_scale: f32,
    cr_r: f32,
    cb_g: f32,
    cr_g: f32,
    cb_b: f32,
}

impl Coefficients {
    pub(crate) fn of(colour: Colour) -> Coefficients {
        let (kr, kb) = match colour.matrix {
            Matrix::Bt601 => (0.299f32, 0.114f32),
            Matrix::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        let (luma_scale, chroma_scale, black) = match colour.range {
            Range::Limited => (255.0 / 219.0, 255.0 / 224.0, 16.0),
            Range::Full => (1.0, 1.0, 0.0),
        };
        let (cr_r, cb_b) = (2.0 * (1.0 - kr), 2.0 * (1.0 - kb));
        Coefficients {
            black,
            luma_scale,
            chroma_scale,
            cr_r,
            cb_g: cb_b * kb / kg,
            cr_g: cr_r * kr / kg,
            cb_b,
        }
    }

    /// The pixel's R, G and B as whole levels 0..=255.
    #[inline(always)]
    fn rgb(&self, y: u8, u: u8, v: u8) -> [f32; 3] {
        let l = (y as f32 - self.black) * self.luma_scale;
        let cb = (u as f32 - 128.0) * self.chroma_scale;
        let cr = (v as f32 - 128.0) * self.chroma_scale;
        [
            l + self.cr_r * cr,
            l - self.cb_g * cb - self.cr_g * cr,
            l + self.cb_b * cb,
        ]
        .map(|x| (x.clamp(0.0, 255.0) + ROUND) - ROUND)
    }
}

/// How a level becomes a tensor value, per RGB channel: `(level · scale − mean) / std`,
/// the arithmetic of the lookup table the RGB path uses, so both paths give a
/// level the same value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Normalization {
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// YUV 4:4:4 (chroma at luma's resolution) → packed RGB8: the reference the
/// tests convert whole frames with.
#[cfg(test)]
pub(crate) fn yuv444_to_rgb(luma: &[u8], chroma: &Chroma, colour: Colour, rgb: &mut [u8]) {
    let k = Coefficients::of(colour);
    let mut put = |i: usize, px: [f32; 3]| {
        for (dst, level) in rgb[3 * i..3 * i + 3].iter_mut().zip(px) {
            *dst = level as u8;
        }
    };
    match chroma {
        Chroma::Planar(u, v) => {
            for (i, &y) in luma.iter().enumerate() {
                put(i, k.rgb(y, u[i], v[i]));
            }
        }
        Chroma::Interleaved(uv) => {
            for (i, &y) in luma.iter().enumerate() {
                put(i, k.rgb(y, uv[2 * i], uv[2 * i + 1]));
            }
        }
    }
}

/// One row of YUV 4:4:4 straight into the normalized tensor: `out` holds the
/// rows of the R, G and B planes (in the tensor's channel order, the caller
/// picks which plane is which). One pass, no RGB image in between.
pub(crate) fn yuv444_to_tensor_row(
    luma: &[u8],
    chroma: &Chroma,
    k: &Coefficients,
    norm: &Normalization,
    out: [&mut [f32]; 3],
) {
    let n = luma.len();
    let [r, g, b] = out;
    let (r, g, b) = (&mut r[..n], &mut g[..n], &mut b[..n]);
    let value = |level: f32, c: usize| (level * norm.scale - norm.mean[c]) / norm.std[c];
    let mut put = |i: usize, [lr, lg, lb]: [f32; 3]| {
        r[i] = value(lr, 0);
        g[i] = value(lg, 1);
        b[i] = value(lb, 2);
    };
    match chroma {
        Chroma::Planar(u, v) => {
            let (u, v) = (&u[..n], &v[..n]);
            for i in 0..n {
                put(i, k.rgb(luma[i], u[i], v[i]));
            }
        }
        Chroma::Interleaved(uv) => {
            let uv = &uv[..2 * n];
            for i in 0..n {
                put(i, k.rgb(luma[i], uv[2 * i], uv[2 * i + 1]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_rgb(yuv: [u8; 3], matrix: Matrix, range: Range) -> [u8; 3] {
        let mut rgb = [0; 3];
        let colour = Colour { matrix, range };
        yuv444_to_rgb(
            &yuv[..1],
            &Chroma::Planar(&yuv[1..2], &yuv[2..]),
            colour,
            &mut rgb,
        );
        rgb
    }

    #[test]
    fn black_and_white_in_each_range() {
        use Matrix::*;
        use Range::*;
        for matrix in [Bt601, Bt709] {
            assert_eq!(to_rgb([16, 128, 128], matrix, Limited), [0, 0, 0]);
            assert_eq!(to_rgb([235, 128, 128], matrix, Limited), [255, 255, 255]);
            assert_eq!(to_rgb([0, 128, 128], matrix, Full), [0, 0, 0]);
            assert_eq!(to_rgb([255, 128, 128], matrix, Full), [255, 255, 255]);
        }
    }

    /// Primaries as BT.601 and BT.709 tables give them in 8-bit limited range.
    #[test]
    fn primaries_in_each_matrix() {
        let close = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(a, b)| a.abs_diff(b) <= 2);
        let red_601 = to_rgb([81, 90, 240], Matrix::Bt601, Range::Limited);
        assert!(close(red_601, [255, 0, 0]), "{red_601:?}");
        let red_709 = to_rgb([63, 102, 240], Matrix::Bt709, Range::Limited);
        assert!(close(red_709, [255, 0, 0]), "{red_709:?}");
        let blue_709 = to_rgb([32, 240, 118], Matrix::Bt709, Range::Limited);
        assert!(close(blue_709, [0, 0, 255]), "{blue_709:?}");
        // The same bytes read with the wrong matrix are visibly another colour.
        let red_as_709 = to_rgb([81, 90, 240], Matrix::Bt709, Range::Limited);
        assert!(!close(red_as_709, [255, 0, 0]), "{red_as_709:?}");
    }

    #[test]
    fn planar_and_interleaved_chroma_agree() {
        let (y, u, v) = ([20, 120, 220], [60, 128, 200], [90, 128, 30]);
        let uv: Vec<u8> = u.iter().zip(&v).flat_map(|(u, v)| [*u, *v]).collect();
        let (mut planar, mut interleaved) = ([0; 9], [0; 9]);
        yuv444_to_rgb(&y, &Chroma::Planar(&u, &v), Colour::default(), &mut planar);
        yuv444_to_rgb(
            &y,
            &Chroma::Interleaved(&uv),
            Colour::default(),
            &mut interleaved,
        );
        assert_eq!(planar, interleaved);
        // Grey 120 in limited range: (120 - 16) * 255 / 219 = 121.1.
        assert_eq!(planar[3..6], [121, 121, 121]);
    }
}
