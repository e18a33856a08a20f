//! Frames as they come: decoded RGB ([`RgbFrame`]), or camera bytes in their own
//! pixel format ([`RawLayout`], [`FrameRef`]) whose planes `raw` cuts out and `yuv`
//! converts to RGB; and [`Geometry`], how model-input coordinates map back to frame
//! pixels.

mod geometry;
pub(crate) mod raw;
pub(crate) mod yuv;

use std::path::Path;

pub use geometry::Geometry;
pub(crate) use raw::Pixels;
pub use raw::{FrameRef, MAX_SIDE, PixelFormat, RawLayout};
pub use yuv::{Colour, Matrix, Range};

use crate::error::{Error, Result};

/// A frame of packed RGB8 pixels, row-major, no row padding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RgbFrame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbFrame {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        let expected = width as usize * height as usize * 3;
        if width == 0 || height == 0 || data.len() != expected {
            return Err(Error::Frame {
                what: format!("{width}x{height} RGB frame"),
                message: format!("expected {expected} bytes, got {}", data.len()),
            });
        }
        Ok(RgbFrame {
            width,
            height,
            data,
        })
    }

    /// Decodes an image file (JPEG or PNG, recognised by content, not by name).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::decode(&bytes).map_err(|message| Error::Image {
            path: path.into(),
            message,
        })
    }

    /// Decodes an encoded image held in memory.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let format = image::guess_format(bytes)
            .map_err(|_| "unknown format, expected a JPEG or PNG image".to_string())?;
        if format == image::ImageFormat::Jpeg {
            return Self::decode_jpeg(bytes);
        }
        // Frames past MAX_SIDE are refused before their pixels are allocated.
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
        reader.limits(limits);
        let decoded = reader
            .decode()
            .map_err(|e| format!("{format:?} decoding failed: {e}"))?;
        let rgb = decoded.into_rgb8();
        let (width, height) = rgb.dimensions();
        Ok(RgbFrame {
            width,
            height,
            data: rgb.into_raw(),
        })
    }
}

impl RgbFrame {
    /// JPEG through zune-jpeg in strict mode: a lenient decoder paints a truncated
    /// file's missing rows grey and the model would classify the grey.
    fn decode_jpeg(bytes: &[u8]) -> std::result::Result<Self, String> {
        use zune_core::bytestream::ZCursor;
        use zune_core::colorspace::ColorSpace;
        use zune_core::options::DecoderOptions;
        let options = DecoderOptions::default()
            .set_strict_mode(true)
            .set_max_width(MAX_SIDE as usize)
            .set_max_height(MAX_SIDE as usize)
            .jpeg_set_out_colorspace(ColorSpace::RGB);
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        let data = decoder
            .decode()
            .map_err(|e| format!("JPEG decoding failed: {e:?}"))?;
        let (width, height) = decoder
            .dimensions()
            .ok_or("JPEG decoding failed: no dimensions")?;
        RgbFrame::new(width as u32, height as u32, data).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_buffer_of_the_wrong_size() {
        let err = RgbFrame::new(4, 2, vec![0; 23]).unwrap_err().to_string();
        assert!(err.contains("expected 24 bytes, got 23"), "{err}");
    }

    /// Audit (issue 16): a small file can declare a huge image; past
    /// [`MAX_SIDE`] it is refused before its pixels are allocated.
    #[test]
    fn images_wider_than_the_largest_frame_are_refused() {
        let wide = image::RgbImage::new(MAX_SIDE + 1, 1);
        for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
            let mut bytes = Vec::new();
            wide.write_to(&mut std::io::Cursor::new(&mut bytes), format)
                .unwrap();
            let err = RgbFrame::decode(&bytes).unwrap_err();
            assert!(err.contains("decoding failed"), "{format:?}: {err}");
        }
    }

    /// What the `image` fuzz target found (fuzz/crashes/image): zune-jpeg 0.5.15
    /// indexed past its output buffer in the IDCT (a panic, so an abort on the
    /// device). Every file there decodes or is an error; none panics.
    #[test]
    fn the_fuzzed_jpegs_decode_or_are_errors() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/crashes/image");
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(frame) = RgbFrame::decode(&bytes) {
                assert_eq!(
                    frame.data.len(),
                    frame.width as usize * frame.height as usize * 3
                );
            }
            files += 1;
        }
        assert!(files >= 1, "no crash files in {dir}");
    }

    #[test]
    fn decodes_a_png_and_rejects_text() {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let frame = RgbFrame::decode(&png).unwrap();
        assert_eq!((frame.width, frame.height), (3, 2));
        assert_eq!(&frame.data[..3], &[1, 2, 3]);
        assert!(
            RgbFrame::decode(b"hello")
                .unwrap_err()
                .contains("unknown format")
        );
    }
}
