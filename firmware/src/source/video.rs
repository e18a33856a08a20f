//! Video files through an `ffmpeg` child process: it decodes anything ffmpeg
//! reads and writes RGB24 frames into a pipe.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};
use edgebone::frame::{Colour, PixelFormat, RawLayout};
use serde::{Deserialize, Serialize};
use serde_inline_default::serde_inline_default;

use super::pipe::StreamReader;
use super::{FrameSource, Pixels, ReadError};

/// `[source]` with `kind = "video"`.
#[serde_inline_default]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    pub path: PathBuf,
    /// At the file's own frame rate, as a camera would deliver it; `false`: as fast
    /// as it decodes.
    #[serde_inline_default(DEFAULT_REALTIME)]
    pub realtime: bool,
    /// The ffmpeg program; ffprobe is looked for beside it.
    #[serde_inline_default(DEFAULT_FFMPEG.into())]
    pub ffmpeg: PathBuf,
}

const DEFAULT_REALTIME: bool = true;
/// Found on `PATH`.
const DEFAULT_FFMPEG: &str = "ffmpeg";

pub struct Video {
    child: Child,
    reader: StreamReader<ChildStdout>,
}

impl Video {
    pub fn open(path: &Path, realtime: bool, ffmpeg: &Path) -> Result<Video> {
        if !path.is_file() {
            bail!("{}: no such video file", path.display());
        }
        let (width, height) = probe_size(path, ffmpeg)?;
        let mut command = Command::new(ffmpeg);
        command.args(["-nostdin", "-v", "error"]);
        if realtime {
            command.arg("-re");
        }
        let mut child = command
            .arg("-i")
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| spawn_error(ffmpeg))?;
        let stdout = child.stdout.take().expect("piped");
        let layout = RawLayout::new(PixelFormat::Rgb24, width, height, None)?;
        Ok(Video {
            child,
            reader: StreamReader::new(stdout, layout, Colour::default()),
        })
    }
}

impl FrameSource for Video {
    fn next(&mut self) -> Result<Option<Pixels>, ReadError> {
        self.reader.next()
    }
}

impl Drop for Video {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_error(ffmpeg: &Path) -> String {
    format!(
        "cannot run {} (install Debian's ffmpeg package, or set source.ffmpeg)",
        ffmpeg.display()
    )
}

/// The frame size, from ffprobe beside ffmpeg.
fn probe_size(path: &Path, ffmpeg: &Path) -> Result<(u32, u32)> {
    let ffprobe = ffmpeg.with_file_name(
        ffmpeg
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("ffmpeg")
            .replace("ffmpeg", "ffprobe"),
    );
    let out = Command::new(&ffprobe)
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=width,height", "-of", "csv=p=0:s=x"])
        .arg(path)
        .output()
        .with_context(|| spawn_error(&ffprobe))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let size = text
        .trim()
        .split_once('x')
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    match size {
        Some(size) if out.status.success() => Ok(size),
        _ => bail!(
            "{}: no video stream ({})",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}
