//! V4L2 cameras (USB webcams; Pi and Jetson cameras exposed as V4L2) through
//! `moq-v4l` (the `v4l` crate's API with the kernel's videodev2.h bindings checked
//! in, so building needs no bindgen or libclang), with memory-mapped buffers.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use edgebone::frame::{Colour, PixelFormat, RawLayout};
use moq_v4l::buffer::Type;
use moq_v4l::io::mmap::Stream;
use moq_v4l::io::traits::CaptureStream;
use moq_v4l::video::Capture;
use moq_v4l::{Device, FourCC, Fraction};
use serde::{Deserialize, Serialize};
use serde_inline_default::serde_inline_default;

use super::{FrameSource, Pixels, ReadError};

/// `[source]` with `kind = "v4l"`.
#[serde_inline_default]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V4lConfig {
    #[serde_inline_default(DEFAULT_DEVICE.into())]
    pub device: PathBuf,
    /// One of `FORMATS`.
    #[serde_inline_default(DEFAULT_FORMAT)]
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    #[serde_inline_default(super::DEFAULT_FPS)]
    pub fps: u32,
}

const DEFAULT_DEVICE: &str = "/dev/video0";
const DEFAULT_FORMAT: PixelFormat = PixelFormat::Mjpeg;

/// The formats V4L2 capture asks a camera for: the config's name and the fourcc.
const FORMATS: [(PixelFormat, &str, &[u8; 4]); 2] = [
    (PixelFormat::Mjpeg, "mjpeg", b"MJPG"),
    (PixelFormat::Yuyv, "yuyv", b"YUYV"),
];

/// `"mjpeg" or "yuyv"`, for messages.
fn format_names() -> String {
    FORMATS
        .map(|(_, name, _)| format!("\"{name}\""))
        .join(" or ")
}

impl V4lConfig {
    pub fn validate(&self) -> Result<()> {
        self.fourcc()?;
        super::check_fps(self.fps)
    }

    fn fourcc(&self) -> Result<FourCC> {
        match FORMATS.iter().find(|(format, _, _)| *format == self.format) {
            Some((_, _, code)) => Ok(FourCC::new(code)),
            None => bail!(
                "source.format: V4L2 capture supports {}, not {:?}",
                format_names(),
                self.format
            ),
        }
    }
}

pub struct Camera {
    // The stream borrows nothing from the device but must be dropped first.
    stream: Stream<'static>,
    _device: Device,
    layout: RawLayout,
}

impl Camera {
    pub fn open(config: &V4lConfig) -> Result<Camera> {
        let fourcc = config.fourcc()?;
        let (path, width, height, fps) = (&config.device, config.width, config.height, config.fps);
        let device = Device::with_path(path).with_context(|| format!("{}", path.display()))?;
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
                "{}: the camera offers {} instead of {fourcc} (try format = {})",
                path.display(),
                got.fourcc,
                format_names()
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
        let stride = (config.format == PixelFormat::Yuyv).then_some(got.stride);
        let layout = RawLayout::new(config.format, got.width, got.height, stride)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(extra: &str) -> V4lConfig {
        toml::from_str(&format!("width = 640\nheight = 480\n{extra}")).unwrap()
    }

    #[test]
    fn a_camera_is_asked_for_mjpeg_or_yuyv_only() {
        let config = camera("");
        assert_eq!(
            (config.device.to_str(), config.format, config.fps),
            (Some("/dev/video0"), PixelFormat::Mjpeg, 30)
        );
        assert_eq!(config.fourcc().unwrap(), FourCC::new(b"MJPG"));
        assert_eq!(
            camera("format = \"yuyv\"").fourcc().unwrap(),
            FourCC::new(b"YUYV")
        );
        let err = camera("format = \"nv12\"").validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "source.format: V4L2 capture supports \"mjpeg\" or \"yuyv\", not Nv12"
        );
        let err = camera("fps = 0").validate().unwrap_err();
        assert_eq!(err.to_string(), "source.fps: expected at least 1");
    }
}
