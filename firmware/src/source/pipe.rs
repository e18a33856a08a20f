//! Raw frames from stdin or a named pipe (rpicam-vid, GStreamer's fdsink,
//! `ffmpeg -f rawvideo`), and the stream reader the video source shares.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::PathBuf;

use anyhow::{Context, Result};
use edgebone::frame::{Colour, PixelFormat, RawLayout};
use serde::{Deserialize, Serialize};
use serde_inline_default::serde_inline_default;

use super::{FrameSource, Pixels, ReadError};

/// `[source]` with `kind = "pipe"`.
#[serde_inline_default]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeConfig {
    /// A named pipe or file, or `STDIN`.
    #[serde_inline_default(STDIN.into())]
    pub path: PathBuf,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes per row of the first plane when rows are padded (rpicam-vid).
    pub stride: Option<u32>,
    #[serde(default)]
    pub colour: Colour,
}

/// The path that means standard input.
const STDIN: &str = "-";

impl PipeConfig {
    pub fn validate(&self) -> Result<()> {
        self.layout().context("source")?;
        Ok(())
    }

    /// The frame layout the settings describe: the one check of format, size and
    /// stride, made at load and again by `open`.
    fn layout(&self) -> edgebone::Result<RawLayout> {
        RawLayout::new(self.format, self.width, self.height, self.stride)
    }
}

pub struct Pipe {
    path: PathBuf,
    /// A named pipe outlives its writer: at its end, wait for the next writer
    /// (rpicam-vid restarted) instead of ending the program.
    fifo: bool,
    reader: StreamReader<Box<dyn Read + Send>>,
}

impl Pipe {
    pub fn open(config: &PipeConfig) -> Result<Pipe> {
        use std::os::unix::fs::FileTypeExt;
        let path = &config.path;
        let layout = config.layout()?;
        let fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
        let input: Box<dyn Read + Send> = if path.as_os_str() == STDIN {
            Box::new(std::io::stdin())
        } else {
            // Opening a FIFO waits for its writer; the capture thread may wait.
            Box::new(File::open(path).with_context(|| format!("{}", path.display()))?)
        };
        Ok(Pipe {
            path: path.clone(),
            fifo,
            reader: StreamReader::new(input, layout, config.colour),
        })
    }
}

impl FrameSource for Pipe {
    fn next(&mut self) -> Result<Option<Pixels>, ReadError> {
        match self.reader.next() {
            Ok(None) if self.fifo => Err(ReadError::Lost(anyhow::anyhow!(
                "{}: the writer closed the pipe",
                self.path.display()
            ))),
            Err(ReadError::Lost(err)) => Err(ReadError::Lost(
                err.context(self.path.display().to_string()),
            )),
            other => other,
        }
    }
}

/// The largest MJPEG image taken, 16 MiB: 8192×8192 RGB ([`edgebone::frame::MAX_SIDE`])
/// uncompressed is 192 MiB, and a camera's JPEG is a small fraction of that.
const MAX_JPEG_BYTES: usize = 16 << 20;

/// Cuts a byte stream into frames: fixed-size raw frames, or JPEG images for MJPEG.
pub struct StreamReader<R> {
    input: R,
    layout: RawLayout,
    colour: Colour,
    /// MJPEG bytes read past the end of the previous image.
    pending: Vec<u8>,
    ended: bool,
}

impl<R: Read> StreamReader<R> {
    pub fn new(input: R, layout: RawLayout, colour: Colour) -> Self {
        StreamReader {
            input,
            layout,
            colour,
            pending: Vec::new(),
            ended: false,
        }
    }

    // Named as `FrameSource::next`; not an `Iterator`, whose items could not
    // tell a truncated frame from the end of the stream.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Pixels>, ReadError> {
        if self.ended {
            return Ok(None);
        }
        let bytes = match self.layout.frame_len() {
            Some(len) => self.read_raw(len)?,
            None => self.read_jpeg()?,
        };
        Ok(bytes.map(|bytes| Pixels {
            layout: self.layout,
            colour: self.colour,
            bytes,
        }))
    }

    fn read_raw(&mut self, len: usize) -> Result<Option<Vec<u8>>, ReadError> {
        let mut bytes = vec![0; len];
        let got = read_full(&mut self.input, &mut bytes)?;
        if got == len {
            return Ok(Some(bytes));
        }
        self.ended = true;
        if got == 0 {
            return Ok(None);
        }
        Err(ReadError::Truncated {
            got,
            expected: format!("{len} for {}", describe(&self.layout)),
        })
    }

    fn read_jpeg(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        let mut chunk = vec![0; 64 * 1024];
        loop {
            match jpeg_end(&self.pending) {
                JpegScan::Complete(end) => {
                    let rest = self.pending.split_off(end);
                    return Ok(Some(std::mem::replace(&mut self.pending, rest)));
                }
                JpegScan::NotJpeg => {
                    self.ended = true;
                    return Err(ReadError::Bad(
                        "the MJPEG stream does not start with a JPEG image (FF D8)".into(),
                    ));
                }
                // Garbage after a start marker would otherwise be read
                // forever into memory, waiting for an end (audit, issue 16).
                JpegScan::Incomplete if self.pending.len() > MAX_JPEG_BYTES => {
                    self.ended = true;
                    return Err(ReadError::Bad(format!(
                        "an MJPEG image ran past {MAX_JPEG_BYTES} bytes without its end (FF D9)"
                    )));
                }
                JpegScan::Incomplete => {}
            }
            let n = read_some(&mut self.input, &mut chunk)?;
            if n == 0 {
                self.ended = true;
                if self.pending.is_empty() {
                    return Ok(None);
                }
                return Err(ReadError::Truncated {
                    got: self.pending.len(),
                    expected: "a complete JPEG image".into(),
                });
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }
}

fn describe(layout: &RawLayout) -> String {
    let format = match layout.format {
        PixelFormat::I420 => "yuv420",
        PixelFormat::Nv12 => "nv12",
        PixelFormat::Yuyv => "yuyv",
        PixelFormat::Rgb24 => "rgb24",
        PixelFormat::Mjpeg => "mjpeg",
    };
    format!("{format} {}x{}", layout.width, layout.height)
}

/// Fills `buf` unless the stream ends first; returns how much it read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, ReadError> {
    let mut got = 0;
    while got < buf.len() {
        match read_some(input, &mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn read_some(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, ReadError> {
    loop {
        match input.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Lost(e.into())),
        }
    }
}

#[derive(Debug, PartialEq)]
enum JpegScan {
    Complete(usize),
    Incomplete,
    NotJpeg,
}

/// Where the first JPEG in `data` ends. Written by hand because no crate splits a
/// concatenated MJPEG byte stream; it walks the marker segments rather than looking
/// for the first FF D9, which an EXIF thumbnail inside APP1 would also contain.
fn jpeg_end(data: &[u8]) -> JpegScan {
    if data.len() < 2 {
        return JpegScan::Incomplete;
    }
    if data[..2] != [0xFF, 0xD8] {
        return JpegScan::NotJpeg;
    }
    let mut i = 2;
    loop {
        // Fill bytes (FF FF ...) may precede a marker.
        while i + 1 < data.len() && data[i] == 0xFF && data[i + 1] == 0xFF {
            i += 1;
        }
        let Some(&[ff, marker]) = data.get(i..i + 2).map(|s| <&[u8; 2]>::try_from(s).unwrap())
        else {
            return JpegScan::Incomplete;
        };
        if ff != 0xFF {
            return JpegScan::NotJpeg;
        }
        match marker {
            0xD9 => return JpegScan::Complete(i + 2),
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = data.get(i + 2..i + 4) else {
                    return JpegScan::Incomplete;
                };
                i += 2 + u16::from_be_bytes([len[0], len[1]]) as usize;
                if marker == 0xDA {
                    match scan_entropy(data, i) {
                        Some(next) => i = next,
                        None => return JpegScan::Incomplete,
                    }
                }
            }
        }
    }
}

/// Skips entropy-coded data (where FF is followed by 00 or a restart marker) to
/// the next real marker.
fn scan_entropy(data: &[u8], mut i: usize) -> Option<usize> {
    while i + 1 < data.len() {
        if data[i] == 0xFF && !matches!(data[i + 1], 0x00 | 0xD0..=0xD7 | 0xFF) {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(width: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::from_pixel(width, 8, image::Rgb([200, 10, 10]))
            .write_to(
                &mut std::io::Cursor::new(&mut out),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        out
    }

    #[test]
    fn splits_an_mjpeg_stream_and_reports_a_truncated_tail() {
        let (a, b) = (jpeg(8), jpeg(16));
        let mut stream = [a.clone(), b.clone()].concat();
        stream.extend_from_slice(&a[..a.len() / 2]);
        let layout = RawLayout::new(PixelFormat::Mjpeg, 1, 1, None).unwrap();
        let mut reader = StreamReader::new(&stream[..], layout, Colour::default());
        assert_eq!(reader.next().ok().flatten().unwrap().bytes, a);
        assert_eq!(reader.next().ok().flatten().unwrap().bytes, b);
        assert!(matches!(reader.next(), Err(ReadError::Truncated { .. })));
        assert!(matches!(reader.next(), Ok(None)));
    }

    /// Audit (issue 16): a start marker then garbage was read into memory
    /// until the process ran out of it.
    #[test]
    fn an_mjpeg_image_without_an_end_is_cut_off() {
        use std::io::Read;
        let stream = [0xFF, 0xD8, 0xFF, 0xDA, 0, 2].chain(std::io::repeat(0));
        let layout = RawLayout::new(PixelFormat::Mjpeg, 1, 1, None).unwrap();
        let mut reader = StreamReader::new(stream, layout, Colour::default());
        let Err(ReadError::Bad(why)) = reader.next() else {
            panic!("an endless image was not refused");
        };
        assert!(why.contains("without its end"), "{why}");
        assert!(matches!(reader.next(), Ok(None)));
    }

    #[test]
    fn raw_frames_then_a_truncated_one() {
        let layout = RawLayout::new(PixelFormat::I420, 4, 2, None).unwrap();
        let stream: Vec<u8> = (0..12 * 2 + 5).map(|i| i as u8).collect();
        let mut reader = StreamReader::new(&stream[..], layout, Colour::default());
        assert_eq!(reader.next().ok().flatten().unwrap().bytes, stream[..12]);
        assert_eq!(reader.next().ok().flatten().unwrap().bytes, stream[12..24]);
        match reader.next() {
            Err(ReadError::Truncated { got, expected }) => {
                assert_eq!(got, 5);
                assert_eq!(expected, "12 for yuv420 4x2");
            }
            _ => panic!("expected a truncated frame"),
        }
        assert!(matches!(reader.next(), Ok(None)));
    }

    fn pipe(text: &str) -> PipeConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_configured_layout_is_checked_and_read() {
        let odd = pipe("format = \"yuv420\"\nwidth = 5\nheight = 2");
        let err = format!("{:#}", odd.validate().unwrap_err());
        assert!(
            err.starts_with("source: ") && err.contains("even width"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("frames.raw");
        std::fs::write(&file, [7u8; 2 * 6 * 2]).unwrap();
        let mut config = pipe("format = \"rgb24\"\nwidth = 2\nheight = 2\nstride = 7");
        assert_eq!(config.path.to_str(), Some(STDIN));
        config.validate().unwrap();
        config.path = file;
        let mut source = Pipe::open(&config).unwrap();
        let frame = source.next().ok().flatten().unwrap();
        assert_eq!((frame.layout.stride, frame.bytes.len()), (7, 14));
        assert!(matches!(
            source.next(),
            Err(ReadError::Truncated { got: 10, .. })
        ));
    }

    #[test]
    fn a_stream_that_is_not_jpeg_is_named() {
        assert_eq!(jpeg_end(b"GIF89a"), JpegScan::NotJpeg);
        assert_eq!(jpeg_end(&[0xFF, 0xD8, 0xFF]), JpegScan::Incomplete);
    }
}
