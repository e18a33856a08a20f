//! V4L2 cameras (USB webcams; Pi and Jetson cameras exposed as V4L2) through
//! `moq-v4l` (the `v4l` crate's API with the kernel's videodev2.h bindings checked
//! in, so building needs no bindgen or libclang), with memory-mapped buffers.

use std::path::Path;

use anyhow::{Context, Result, bail};
use edgebone::frame::{Colour, PixelFormat, RawLayout};
use moq_v4l::buffer::Type;
use moq_v4l::io::mmap::Stream;
use moq_v4l::io::traits::CaptureStream;
use moq_v4l::video::Capture;
use moq_v4l::{Device, FourCC, Fraction};

use super::{FrameSource, Pixels, ReadError};

pub struct Camera {
    // The stream borrows nothing from the device but must be dropped first.
    stream: Stream<'static>,
    _device: Device,
    layout: RawLayout,
}

impl Camera {
    pub fn open(
        path: &Path,
        format: PixelFormat,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<Camera> {
        let device = Device::with_path(path).with_context(|| format!("{}", path.display()))?;
        let fourcc = match format {
            PixelFormat::Mjpeg => FourCC::new(b"MJPG"),
            PixelFormat::Yuyv => FourCC::new(b"YUYV"),
            other => bail!("V4L2 capture supports mjpeg or yuyv, not {other:?}"),
        };
        let mut wanted = device
            .format()
            .with_context(|| format!("{}", path.display()))?;
        wanted.width = width;
        wanted.height = height;
        wanted.fourcc = fourcc;
        let got = device
            .set_format(&wanted)
            .with_context(|| format!("{}: cannot set the format", path.display()))?;
        if got.fourcc != fourcc {
            bail!(
                "{}: the camera offers {} instead of {fourcc} (try format = \"mjpeg\" or \"yuyv\")",
                path.display(),
                got.fourcc
            );
        }
        if (got.width, got.height) != (width, height) {
            log::warn!(
                "{}: asked for {width}x{height}, the camera gives {}x{}",
                path.display(),
                got.width,
                got.height
            );
        }
        let mut params = device
            .params()
            .with_context(|| format!("{}", path.display()))?;
        params.interval = Fraction::new(1, fps);
        if let Err(err) = device.set_params(&params) {
            log::warn!("{}: cannot set {fps} fps: {err}", path.display());
        }
        let stride = (format == PixelFormat::Yuyv).then_some(got.stride);
        let layout = RawLayout::new(format, got.width, got.height, stride)?;
        let stream = Stream::with_buffers(&device, Type::VideoCapture, 4)
            .with_context(|| format!("{}: cannot start streaming", path.display()))?;
        log::info!(
            "{}: {}x{} {fourcc} at up to {fps} fps",
            path.display(),
            got.width,
            got.height
        );
        Ok(Camera {
            stream,
            _device: device,
            layout,
        })
    }
}

impl FrameSource for Camera {
    fn next(&mut self) -> Result<Option<Pixels>, ReadError> {
        let (buf, meta) = self.stream.next().map_err(|e| ReadError::Lost(e.into()))?;
        let used = (meta.bytesused as usize).min(buf.len());
        let bytes = match self.layout.frame_len() {
            Some(len) if used < len => {
                return Err(ReadError::Truncated {
                    got: used,
                    expected: format!("{len}"),
                });
            }
            Some(len) => buf[..len].to_vec(),
            None => buf[..used].to_vec(),
        };
        Ok(Some(Pixels {
            layout: self.layout,
            colour: Colour::default(),
            bytes,
        }))
    }
}
