//! Camera pixel formats (I420, NV12, YUYV, RGB24, MJPEG) into an `RgbFrame`, with
//! SIMD colour conversion from yuvutils-rs. Row strides may be padded, as
//! `rpicam-vid` and V4L2 drivers pad them.

use serde::{Deserialize, Serialize};
use yuvutils_rs::{
    YuvBiPlanarImage, YuvConversionMode, YuvPackedImage, YuvPlanarImage, YuvRange,
    YuvStandardMatrix,
};

use super::RgbFrame;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Planar Y, then U and V at half width and height (`yuv420p`, rpicam-vid's `yuv420`).
    #[serde(alias = "yuv420")]
    I420,
    /// Y, then interleaved UV at half resolution (Jetson's and many V4L2 drivers').
    Nv12,
    /// Packed Y0 U Y1 V (USB webcams' uncompressed format).
    Yuyv,
    Rgb24,
    /// A stream of JPEG images, each one frame.
    Mjpeg,
}

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

/// The shape of one raw frame: format, size and the byte stride of its first plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLayout {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

impl RawLayout {
    /// `stride`: bytes per row of the luma (or only) plane; `None` for unpadded rows.
    pub fn new(format: PixelFormat, width: u32, height: u32, stride: Option<u32>) -> Result<Self> {
        let what = || format!("{format:?} {width}x{height} frames");
        let bad = |message: String| Error::Frame {
            what: what(),
            message,
        };
        if width == 0 || height == 0 {
            return Err(bad("width and height must be positive".into()));
        }
        let subsampled = matches!(
            format,
            PixelFormat::I420 | PixelFormat::Nv12 | PixelFormat::Yuyv
        );
        if subsampled && width % 2 == 1 {
            return Err(bad("chroma subsampling needs an even width".into()));
        }
        if matches!(format, PixelFormat::I420 | PixelFormat::Nv12) && height % 2 == 1 {
            return Err(bad("4:2:0 chroma subsampling needs an even height".into()));
        }
        let tight = width * bytes_per_pixel(format);
        let stride = stride.unwrap_or(tight);
        if stride < tight || (format == PixelFormat::I420 && stride % 2 == 1) {
            return Err(bad(format!(
                "row stride {stride} is too small or odd, expected at least {tight}"
            )));
        }
        Ok(RawLayout {
            format,
            width,
            height,
            stride,
        })
    }

    /// Bytes in one frame; `None` for MJPEG, whose frames vary.
    pub fn frame_len(&self) -> Option<usize> {
        let (s, h) = (self.stride as usize, self.height as usize);
        match self.format {
            PixelFormat::I420 => Some(s * h + 2 * (s / 2) * (h / 2)),
            PixelFormat::Nv12 => Some(s * h + s * (h / 2)),
            PixelFormat::Yuyv | PixelFormat::Rgb24 => Some(s * h),
            PixelFormat::Mjpeg => None,
        }
    }
}

fn bytes_per_pixel(format: PixelFormat) -> u32 {
    match format {
        PixelFormat::Yuyv => 2,
        PixelFormat::Rgb24 => 3,
        PixelFormat::I420 | PixelFormat::Nv12 | PixelFormat::Mjpeg => 1,
    }
}

/// A frame for preprocessing: decoded RGB, or camera bytes in their own layout
/// (4:2:0 YUV is then resized before colour conversion, so only the model-sized
/// image is converted).
#[derive(Debug, Clone, Copy)]
pub enum FrameRef<'a> {
    Rgb(&'a RgbFrame),
    Raw {
        layout: &'a RawLayout,
        bytes: &'a [u8],
        colour: Colour,
    },
}

impl<'a> From<&'a RgbFrame> for FrameRef<'a> {
    fn from(frame: &'a RgbFrame) -> Self {
        FrameRef::Rgb(frame)
    }
}

impl RawLayout {
    /// A frame of this layout must be exactly `frame_len` bytes (MJPEG: any).
    pub fn check_len(&self, bytes: &[u8]) -> Result<()> {
        match self.frame_len() {
            Some(expected) if bytes.len() != expected => Err(Error::Frame {
                what: format!("{:?} {}x{} frame", self.format, self.width, self.height),
                message: format!("expected {expected} bytes, got {}", bytes.len()),
            }),
            _ => Ok(()),
        }
    }
}

impl RgbFrame {
    /// Converts one raw frame into `self`, reusing its buffer.
    pub fn convert_from(&mut self, layout: &RawLayout, bytes: &[u8], colour: Colour) -> Result<()> {
        if layout.format == PixelFormat::Mjpeg {
            *self = RgbFrame::decode(bytes).map_err(|message| Error::Frame {
                what: "MJPEG frame".into(),
                message,
            })?;
            return Ok(());
        }
        layout.check_len(bytes)?;
        let (w, h) = (layout.width, layout.height);
        self.width = w;
        self.height = h;
        self.data.resize(w as usize * h as usize * 3, 0);
        let (range, matrix) = yuv_params(colour);
        let stride = layout.stride;
        let rgb_stride = w * 3;
        let result = match layout.format {
            PixelFormat::I420 => {
                let (y, chroma) = bytes.split_at((stride * h) as usize);
                let (u, v) = chroma.split_at(chroma.len() / 2);
                let image = YuvPlanarImage {
                    y_plane: y,
                    y_stride: stride,
                    u_plane: u,
                    u_stride: stride / 2,
                    v_plane: v,
                    v_stride: stride / 2,
                    width: w,
                    height: h,
                };
                yuvutils_rs::yuv420_to_rgb(&image, &mut self.data, rgb_stride, range, matrix)
            }
            PixelFormat::Nv12 => {
                let (y, uv) = bytes.split_at((stride * h) as usize);
                let image = YuvBiPlanarImage {
                    y_plane: y,
                    y_stride: stride,
                    uv_plane: uv,
                    uv_stride: stride,
                    width: w,
                    height: h,
                };
                let mode = YuvConversionMode::Balanced;
                yuvutils_rs::yuv_nv12_to_rgb(
                    &image,
                    &mut self.data,
                    rgb_stride,
                    range,
                    matrix,
                    mode,
                )
            }
            PixelFormat::Yuyv => {
                let image = YuvPackedImage {
                    yuy: bytes,
                    yuy_stride: stride,
                    width: w,
                    height: h,
                };
                yuvutils_rs::yuyv422_to_rgb(&image, &mut self.data, rgb_stride, range, matrix)
            }
            PixelFormat::Rgb24 => {
                for (dst, src) in self
                    .data
                    .chunks_exact_mut(rgb_stride as usize)
                    .zip(bytes.chunks(stride as usize))
                {
                    dst.copy_from_slice(&src[..rgb_stride as usize]);
                }
                Ok(())
            }
            PixelFormat::Mjpeg => unreachable!("decoded above"),
        };
        result.map_err(|e| Error::Frame {
            what: format!("{:?} {w}x{h} frame", layout.format),
            message: format!("colour conversion failed: {e}"),
        })
    }
}

fn yuv_params(colour: Colour) -> (YuvRange, YuvStandardMatrix) {
    let range = match colour.range {
        Range::Limited => YuvRange::Limited,
        Range::Full => YuvRange::Full,
    };
    let matrix = match colour.matrix {
        Matrix::Bt601 => YuvStandardMatrix::Bt601,
        Matrix::Bt709 => YuvStandardMatrix::Bt709,
    };
    (range, matrix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> RgbFrame {
        RgbFrame::default()
    }

    /// A flat colour through each YUV format must come out as the same RGB.
    fn yuv_of(rgb: [f32; 3]) -> [u8; 3] {
        // BT.601 limited range, as ffmpeg's rgb24 → yuv420p.
        let [r, g, b] = rgb;
        let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
        let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
        let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
        [y.round() as u8, u.round() as u8, v.round() as u8]
    }

    fn assert_close(frame: &RgbFrame, rgb: [u8; 3]) {
        for px in frame.data.chunks_exact(3) {
            for (a, b) in px.iter().zip(rgb) {
                assert!(a.abs_diff(b) <= 2, "{px:?} vs {rgb:?}");
            }
        }
    }

    #[test]
    fn i420_with_padded_rows() {
        let rgb = [200, 40, 90];
        let [y, u, v] = yuv_of(rgb.map(f32::from));
        let layout = RawLayout::new(PixelFormat::I420, 6, 4, Some(8)).unwrap();
        let mut bytes = vec![y; 8 * 4];
        bytes.extend(vec![u; 4 * 2]);
        bytes.extend(vec![v; 4 * 2]);
        assert_eq!(layout.frame_len(), Some(bytes.len()));
        let mut frame = empty();
        frame
            .convert_from(&layout, &bytes, Colour::default())
            .unwrap();
        assert_eq!((frame.width, frame.height, frame.data.len()), (6, 4, 72));
        assert_close(&frame, rgb);
    }

    #[test]
    fn nv12_and_yuyv_agree_with_i420() {
        let rgb = [30, 160, 220];
        let [y, u, v] = yuv_of(rgb.map(f32::from));
        let mut nv12 = vec![y; 4 * 2];
        nv12.extend([u, v, u, v]);
        let mut frame = empty();
        let layout = RawLayout::new(PixelFormat::Nv12, 4, 2, None).unwrap();
        frame
            .convert_from(&layout, &nv12, Colour::default())
            .unwrap();
        assert_close(&frame, rgb);
        let yuyv = [y, u, y, v].repeat(4);
        let layout = RawLayout::new(PixelFormat::Yuyv, 4, 2, None).unwrap();
        frame
            .convert_from(&layout, &yuyv, Colour::default())
            .unwrap();
        assert_close(&frame, rgb);
    }

    #[test]
    fn a_short_frame_or_odd_size_is_an_error() {
        let layout = RawLayout::new(PixelFormat::I420, 4, 2, None).unwrap();
        let err = empty()
            .convert_from(&layout, &[0; 11], Colour::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected 12 bytes, got 11"), "{err}");
        let err = RawLayout::new(PixelFormat::Nv12, 5, 2, None).unwrap_err();
        assert!(err.to_string().contains("even width"), "{err}");
        let err = RawLayout::new(PixelFormat::Rgb24, 4, 2, Some(10)).unwrap_err();
        assert!(err.to_string().contains("expected at least 12"), "{err}");
    }

    #[test]
    fn rgb24_rows_drop_their_padding() {
        let layout = RawLayout::new(PixelFormat::Rgb24, 1, 2, Some(4)).unwrap();
        let mut frame = empty();
        let bytes = [1, 2, 3, 99, 4, 5, 6, 99];
        frame
            .convert_from(&layout, &bytes, Colour::default())
            .unwrap();
        assert_eq!(frame.data, vec![1, 2, 3, 4, 5, 6]);
    }
}
