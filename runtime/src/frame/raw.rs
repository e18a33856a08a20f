//! Camera pixel formats (I420, NV12, YUYV, RGB24, MJPEG): the one place that knows
//! where a raw frame's planes sit (rows may be padded, as `rpicam-vid` and V4L2
//! drivers pad them) and hands out its pixels with the padding taken out.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::RgbFrame;
use super::yuv::{Chroma, Colour, YuvPlanes};
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

impl PixelFormat {
    /// Luma pixels per chroma sample, across and down; `None` for RGB formats.
    pub fn chroma_subsampling(self) -> Option<(u32, u32)> {
        match self {
            PixelFormat::I420 | PixelFormat::Nv12 => Some((2, 2)),
            PixelFormat::Yuyv => Some((2, 1)),
            PixelFormat::Rgb24 | PixelFormat::Mjpeg => None,
        }
    }

    /// Bytes per pixel in the first plane's rows.
    fn bytes_per_pixel(self) -> u32 {
        match self {
            PixelFormat::Yuyv => 2,
            PixelFormat::Rgb24 => 3,
            PixelFormat::I420 | PixelFormat::Nv12 | PixelFormat::Mjpeg => 1,
        }
    }
}

/// The largest frame side edgebone takes, from a camera or a file (8K video is
/// 7680 wide). Past it a frame is refused: frame sizes, strides and the
/// preprocessor's buffers then fit in 32 bits, and a typo in a config cannot
/// ask for a buffer of gigabytes per frame.
pub const MAX_SIDE: u32 = 8192;

/// The largest row stride: RGB24 rows at [`MAX_SIDE`] with generous padding.
const MAX_STRIDE: u32 = 4 * MAX_SIDE;

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
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(bad(format!("width and height must be at most {MAX_SIDE}")));
        }
        if let Some((across, down)) = format.chroma_subsampling() {
            if !width.is_multiple_of(across) {
                return Err(bad("chroma subsampling needs an even width".into()));
            }
            if !height.is_multiple_of(down) {
                return Err(bad("4:2:0 chroma subsampling needs an even height".into()));
            }
        }
        let tight = width * format.bytes_per_pixel();
        let stride = stride.unwrap_or(tight);
        // I420's chroma rows are half the luma stride.
        if stride < tight || (format == PixelFormat::I420 && stride % 2 == 1) {
            return Err(bad(format!(
                "row stride {stride} is too small or odd, expected at least {tight}"
            )));
        }
        if stride > MAX_STRIDE {
            return Err(bad(format!(
                "row stride {stride} is more than {MAX_STRIDE} bytes"
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
        (self.format != PixelFormat::Mjpeg).then(|| self.planes().map(|p| p.len()).sum())
    }

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

    /// The planes of one frame, in the order they follow each other (none for MJPEG).
    fn planes(&self) -> impl Iterator<Item = Plane> {
        let (w, h, s) = (self.width, self.height, self.stride);
        let first = Plane {
            row: (w * self.format.bytes_per_pixel()) as usize,
            stride: s as usize,
            rows: h as usize,
        };
        let (across, down) = self.format.chroma_subsampling().unwrap_or((1, 1));
        let chroma = |samples_per_pixel: u32, stride: u32| Plane {
            row: (w / across * samples_per_pixel) as usize,
            stride: stride as usize,
            rows: (h / down) as usize,
        };
        let planes = match self.format {
            PixelFormat::I420 => {
                let plane = chroma(1, s / across);
                [Some(first), Some(plane), Some(plane)]
            }
            PixelFormat::Nv12 => [Some(first), Some(chroma(2, s)), None],
            PixelFormat::Yuyv | PixelFormat::Rgb24 => [Some(first), None, None],
            PixelFormat::Mjpeg => [None; 3],
        };
        planes.into_iter().flatten()
    }

    /// `bytes`, one whole frame, cut into its planes.
    fn split<'a>(&self, bytes: &'a [u8]) -> Result<Vec<PlaneRef<'a>>> {
        self.check_len(bytes)?;
        let mut rest = bytes;
        Ok(self
            .planes()
            .map(|shape| {
                let (bytes, next) = rest.split_at(shape.len());
                rest = next;
                PlaneRef { shape, bytes }
            })
            .collect())
    }
}

/// Where one plane's pixels are in its bytes: `rows` rows of `row` bytes, each row
/// starting `stride` bytes after the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plane {
    row: usize,
    stride: usize,
    rows: usize,
}

impl Plane {
    fn len(&self) -> usize {
        self.stride * self.rows
    }
}

/// One plane of a frame in memory.
struct PlaneRef<'a> {
    shape: Plane,
    bytes: &'a [u8],
}

impl<'a> PlaneRef<'a> {
    /// Each row's pixel bytes, padding left out.
    fn rows(&self) -> impl Iterator<Item = &'a [u8]> {
        let row = self.shape.row;
        self.bytes.chunks(self.shape.stride).map(move |r| &r[..row])
    }

    /// The plane without row padding: its own bytes when rows are tight, else its
    /// rows copied into `buffer`.
    fn tight(&self, buffer: &'a mut Vec<u8>) -> &'a [u8] {
        if self.shape.row == self.shape.stride {
            return self.bytes;
        }
        buffer.clear();
        for row in self.rows() {
            buffer.extend_from_slice(row);
        }
        buffer
    }
}

/// A frame for preprocessing: decoded RGB, or camera bytes in their own layout
/// (YUV is then resized before colour conversion, so only the model-sized image
/// is converted).
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

/// A frame's pixels without row padding, ready to resize.
pub(crate) enum Pixels<'a> {
    /// Packed RGB8 (decoded, RGB24, or MJPEG decoded here).
    Rgb {
        width: u32,
        height: u32,
        data: Cow<'a, [u8]>,
    },
    Yuv(YuvPlanes<'a>),
}

impl Pixels<'_> {
    pub(crate) fn size(&self) -> (u32, u32) {
        match self {
            Pixels::Rgb { width, height, .. } => (*width, *height),
            Pixels::Yuv(planes) => (planes.width, planes.height),
        }
    }
}

impl<'a> FrameRef<'a> {
    /// The frame's pixels; planes with padded rows are copied into `buffers` (one
    /// per plane, reused from frame to frame). Fails on a frame of the wrong size
    /// or a JPEG that does not decode.
    pub(crate) fn pixels<'b>(self, buffers: &'b mut [Vec<u8>; 3]) -> Result<Pixels<'b>>
    where
        'a: 'b,
    {
        let (layout, bytes, colour) = match self {
            FrameRef::Rgb(rgb) => {
                return Ok(Pixels::Rgb {
                    width: rgb.width,
                    height: rgb.height,
                    data: Cow::Borrowed(&rgb.data),
                });
            }
            FrameRef::Raw {
                layout,
                bytes,
                colour,
            } => (layout, bytes, colour),
        };
        if layout.format == PixelFormat::Mjpeg {
            // The size is in the stream, not in the layout.
            let rgb = RgbFrame::decode(bytes).map_err(|message| Error::Frame {
                what: "MJPEG frame".into(),
                message,
            })?;
            return Ok(Pixels::Rgb {
                width: rgb.width,
                height: rgb.height,
                data: Cow::Owned(rgb.data),
            });
        }
        let planes = layout.split(bytes)?;
        let [b0, b1, b2] = buffers;
        let yuv = |luma, chroma| {
            Pixels::Yuv(YuvPlanes {
                width: layout.width,
                height: layout.height,
                luma,
                chroma,
                subsampling: layout.format.chroma_subsampling().unwrap_or((1, 1)),
                colour,
            })
        };
        Ok(match (layout.format, &planes[..]) {
            (PixelFormat::Rgb24, [rgb]) => Pixels::Rgb {
                width: layout.width,
                height: layout.height,
                data: Cow::Borrowed(rgb.tight(b0)),
            },
            (PixelFormat::I420, [y, u, v]) => {
                yuv(y.tight(b0), Chroma::Planar(u.tight(b1), v.tight(b2)))
            }
            (PixelFormat::Nv12, [y, uv]) => yuv(y.tight(b0), Chroma::Interleaved(uv.tight(b1))),
            (PixelFormat::Yuyv, [packed]) => {
                let (y, uv) = deinterleave_yuyv(packed, b0, b1);
                yuv(y, Chroma::Interleaved(uv))
            }
            (format, planes) => {
                unreachable!("RawLayout::planes gave {format:?} {} planes", planes.len())
            }
        })
    }
}

/// YUYV (Y0 U Y1 V per pixel pair) → a luma plane and an interleaved UV plane of
/// half the width, rows unpadded. By hand: a byte shuffle that no crate offers for
/// fast_image_resize's plane types.
fn deinterleave_yuyv<'a>(
    packed: &PlaneRef,
    luma: &'a mut Vec<u8>,
    uv: &'a mut Vec<u8>,
) -> (&'a [u8], &'a [u8]) {
    // Sized first and written by index: a loop the compiler turns into byte
    // shuffles (pushing pair by pair was 4x slower on a 720p frame).
    let width = packed.shape.row / 2;
    let rows = packed.rows().count();
    luma.resize(width * rows, 0);
    uv.resize(width * rows, 0);
    if width == 0 {
        return (luma, uv);
    }
    let planes = luma.chunks_exact_mut(width).zip(uv.chunks_exact_mut(width));
    for (row, (luma, uv)) in packed.rows().zip(planes) {
        let pixels = row.chunks_exact(4).zip(luma.chunks_exact_mut(2));
        for ((yuyv, y), c) in pixels.zip(uv.chunks_exact_mut(2)) {
            y.copy_from_slice(&[yuyv[0], yuyv[2]]);
            c.copy_from_slice(&[yuyv[1], yuyv[3]]);
        }
    }
    (luma, uv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::yuv::Chroma;

    /// The pixels of `bytes` in `layout`.
    fn pixels<'b>(
        layout: &'b RawLayout,
        bytes: &'b [u8],
        buffers: &'b mut [Vec<u8>; 3],
    ) -> Result<Pixels<'b>> {
        let frame = FrameRef::Raw {
            layout,
            bytes,
            colour: Colour::default(),
        };
        frame.pixels(buffers)
    }

    fn yuv<'b>(pixels: Result<Pixels<'b>>) -> YuvPlanes<'b> {
        match pixels.unwrap() {
            Pixels::Yuv(planes) => planes,
            Pixels::Rgb { .. } => panic!("expected YUV planes"),
        }
    }

    #[test]
    fn i420_planes_drop_their_padding() {
        // 4x2 luma in rows of 6, 2x1 U and V in rows of 3; padding is 0xFF.
        let bytes = [
            1, 2, 3, 4, 255, 255, 5, 6, 7, 8, 255, 255, // Y
            10, 11, 255, // U
            20, 21, 255, // V
        ];
        let layout = RawLayout::new(PixelFormat::I420, 4, 2, Some(6)).unwrap();
        assert_eq!(layout.frame_len(), Some(bytes.len()));
        let mut buffers = Default::default();
        let planes = yuv(pixels(&layout, &bytes, &mut buffers));
        assert_eq!(planes.luma, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(planes.chroma, Chroma::Planar([10, 11], [20, 21])));
        assert_eq!((planes.subsampling, planes.chroma_size()), ((2, 2), (2, 1)));
    }

    #[test]
    fn nv12_keeps_uv_interleaved() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8, 10, 20, 11, 21];
        let layout = RawLayout::new(PixelFormat::Nv12, 4, 2, None).unwrap();
        assert_eq!(layout.frame_len(), Some(bytes.len()));
        let mut buffers = Default::default();
        let planes = yuv(pixels(&layout, &bytes, &mut buffers));
        assert_eq!(planes.luma, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(
            planes.chroma,
            Chroma::Interleaved([10, 20, 11, 21])
        ));
        assert_eq!(planes.chroma_size(), (2, 1));
    }

    #[test]
    fn yuyv_splits_into_luma_and_half_width_chroma() {
        // Two rows of two pixel pairs, padded to 10 bytes.
        let bytes = [
            1, 10, 2, 20, 3, 11, 4, 21, 255, 255, //
            5, 12, 6, 22, 7, 13, 8, 23, 255, 255,
        ];
        let layout = RawLayout::new(PixelFormat::Yuyv, 4, 2, Some(10)).unwrap();
        let mut buffers = Default::default();
        let planes = yuv(pixels(&layout, &bytes, &mut buffers));
        assert_eq!(planes.luma, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(
            planes.chroma,
            Chroma::Interleaved([10, 20, 11, 21, 12, 22, 13, 23])
        ));
        assert_eq!((planes.subsampling, planes.chroma_size()), ((2, 1), (2, 2)));
    }

    #[test]
    fn rgb24_rows_drop_their_padding() {
        let layout = RawLayout::new(PixelFormat::Rgb24, 1, 2, Some(4)).unwrap();
        let bytes = [1, 2, 3, 99, 4, 5, 6, 99];
        let mut buffers = Default::default();
        let Pixels::Rgb {
            width,
            height,
            data,
        } = pixels(&layout, &bytes, &mut buffers).unwrap()
        else {
            panic!("expected RGB");
        };
        assert_eq!((width, height, &data[..]), (1, 2, &[1, 2, 3, 4, 5, 6][..]));
    }

    #[test]
    fn a_short_frame_or_odd_size_is_an_error() {
        let layout = RawLayout::new(PixelFormat::I420, 4, 2, None).unwrap();
        let Err(err) = pixels(&layout, &[0; 11], &mut Default::default()) else {
            panic!("a short frame was accepted");
        };
        assert!(
            err.to_string().contains("expected 12 bytes, got 11"),
            "{err}"
        );
        let err = RawLayout::new(PixelFormat::Nv12, 5, 2, None).unwrap_err();
        assert!(err.to_string().contains("even width"), "{err}");
        let err = RawLayout::new(PixelFormat::I420, 4, 3, None).unwrap_err();
        assert!(err.to_string().contains("even height"), "{err}");
        assert!(RawLayout::new(PixelFormat::Yuyv, 4, 3, None).is_ok());
        let err = RawLayout::new(PixelFormat::Rgb24, 4, 2, Some(10)).unwrap_err();
        assert!(err.to_string().contains("expected at least 12"), "{err}");
    }

    /// Audit (issue 16): `width * 3` overflowed u32 for an RGB24 width past
    /// 1.4 billion from a config, and a 65536×65536 I420 frame asked for 6 GB.
    #[test]
    fn oversized_frames_and_strides_are_refused() {
        for (w, h, stride) in [
            (1_500_000_000, 2, None),
            (65536, 65536, None),
            (8194, 2, None),
        ] {
            let err = RawLayout::new(PixelFormat::Rgb24, w, h, stride).unwrap_err();
            assert!(err.to_string().contains("at most 8192"), "{err}");
        }
        let err = RawLayout::new(PixelFormat::I420, 64, 64, Some(u32::MAX - 1)).unwrap_err();
        assert!(err.to_string().contains("more than 32768 bytes"), "{err}");
        let biggest = RawLayout::new(PixelFormat::Rgb24, 8192, 8192, Some(32768)).unwrap();
        assert_eq!(biggest.frame_len(), Some(32768 * 8192));
    }

    #[test]
    fn a_broken_mjpeg_frame_is_an_error() {
        let layout = RawLayout::new(PixelFormat::Mjpeg, 1, 1, None).unwrap();
        let Err(err) = pixels(&layout, b"not a jpeg", &mut Default::default()) else {
            panic!("text decoded as a JPEG");
        };
        assert!(err.to_string().contains("MJPEG frame"), "{err}");
    }
}
