//! The JPEG/PNG files of a folder, in name order, paced at a frame rate: demos
//! and tests without a camera. Also the image files given to the one-shot
//! commands, in the order given, as fast as they are taken.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edgebone::RgbFrame;
use edgebone::frame::{Colour, PixelFormat, RawLayout};
use serde::{Deserialize, Serialize};
use serde_inline_default::serde_inline_default;

use super::{FrameSource, Pixels, ReadError};

/// `[source]` with `kind = "folder"`.
#[serde_inline_default]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    pub path: PathBuf,
    #[serde_inline_default(super::DEFAULT_FPS)]
    pub fps: u32,
    /// Start again after the last file, like a camera that never ends.
    #[serde(default)]
    pub repeat: bool,
}

impl FolderConfig {
    pub fn validate(&self) -> Result<()> {
        super::check_fps(self.fps)
    }
}

pub struct Folder {
    files: Vec<PathBuf>,
    next: usize,
    repeat: bool,
    period: Duration,
    due: Instant,
}

impl Folder {
    pub fn open(dir: &Path, fps: u32, repeat: bool) -> Result<Folder> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry.with_context(|| format!("{}", dir.display()))?.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ["jpg", "jpeg", "png"].contains(&ext.to_ascii_lowercase().as_str()) {
                files.push(path);
            }
        }
        if files.is_empty() {
            bail!("{}: no .jpg, .jpeg or .png files", dir.display());
        }
        files.sort();
        Ok(Folder {
            files,
            next: 0,
            repeat,
            period: Duration::from_secs_f64(1.0 / fps as f64),
            due: Instant::now(),
        })
    }

    /// These files once, unpaced: a file that cannot be read is a bad frame,
    /// not an error at start.
    pub fn from_files(files: Vec<PathBuf>) -> Folder {
        Folder {
            files,
            next: 0,
            repeat: false,
            period: Duration::ZERO,
            due: Instant::now(),
        }
    }
}

impl FrameSource for Folder {
    fn file(&self) -> Option<&Path> {
        self.next.checked_sub(1).map(|i| self.files[i].as_path())
    }

    fn next(&mut self) -> Result<Option<Pixels>, ReadError> {
        if self.next == self.files.len() {
            if !self.repeat {
                return Ok(None);
            }
            self.next = 0;
        }
        let path = &self.files[self.next];
        self.next += 1;
        // Pace like a camera: a frame every period, whatever decoding took.
        let now = Instant::now();
        if self.due > now {
            std::thread::sleep(self.due - now);
        }
        self.due = self.due.max(now) + self.period;
        let frame = RgbFrame::open(path).map_err(|e| ReadError::Bad(e.to_string()))?;
        let layout = RawLayout::new(PixelFormat::Rgb24, frame.width, frame.height, None)
            .map_err(|e| ReadError::Bad(e.to_string()))?;
        Ok(Some(Pixels {
            layout,
            colour: Colour::default(),
            bytes: frame.data,
        }))
    }
}
