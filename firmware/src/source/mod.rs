//! Frame sources and the capture thread. Capture runs on its own thread and hands
//! frames to inference through a one-frame slot: in live mode a new frame replaces
//! one not yet taken (dropped and counted), so latency never queues up.

mod folder;
mod pipe;
mod v4l;
mod video;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use edgebone::frame::{Colour, RawLayout};
use serde::{Deserialize, Serialize};

pub use folder::FolderConfig;
pub use pipe::{PipeConfig, StreamReader};
pub use v4l::V4lConfig;
pub use video::VideoConfig;

/// The `[source]` section: where frames come from, chosen by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    V4l(V4lConfig),
    Pipe(PipeConfig),
    Folder(FolderConfig),
    Video(VideoConfig),
}

impl SourceConfig {
    pub fn validate(&self) -> Result<()> {
        match self {
            SourceConfig::V4l(v4l) => v4l.validate(),
            SourceConfig::Pipe(pipe) => pipe.validate(),
            SourceConfig::Folder(folder) => folder.validate(),
            SourceConfig::Video(_) => Ok(()),
        }
    }

    /// The file, folder or pipe read, which the config resolves against its own
    /// folder; a V4L2 device is not a file of the project.
    pub fn path_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            SourceConfig::Pipe(pipe) => Some(&mut pipe.path),
            SourceConfig::Folder(folder) => Some(&mut folder.path),
            SourceConfig::Video(video) => Some(&mut video.path),
            SourceConfig::V4l(_) => None,
        }
    }
}

/// The frame rate of the paced sources (a camera's request, a folder's pace).
const DEFAULT_FPS: u32 = 30;

fn check_fps(fps: u32) -> Result<()> {
    if fps == 0 {
        bail!("source.fps: expected at least 1");
    }
    Ok(())
}

/// The longest wait between attempts to reopen a source: an hour.
const MAX_RETRY_MS: u64 = 60 * 60 * 1000;

/// The `[capture]` section: how frames are taken from the source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// `live`: inference takes the newest frame, older ones are dropped and counted.
    /// `every-frame`: capture waits for inference (files, offline runs).
    pub mode: Mode,
    /// Back-off between attempts to reopen a source that went away.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

/// The first wait before reopening a lost source; it doubles up to the maximum.
const DEFAULT_RETRY_INITIAL_MS: u64 = 200;
const DEFAULT_RETRY_MAX_MS: u64 = 5_000;

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: Mode::default(),
            retry_initial_ms: DEFAULT_RETRY_INITIAL_MS,
            retry_max_ms: DEFAULT_RETRY_MAX_MS,
        }
    }
}

impl CaptureConfig {
    pub fn validate(&self) -> Result<()> {
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            bail!("capture.retry_initial_ms / retry_max_ms: expected 0 < initial ≤ max");
        }
        // The back-off adds its wait to `Instant::now()`: u64::MAX ms
        // overflowed it and panicked at the first retry (audit, issue 16).
        if self.retry_max_ms > MAX_RETRY_MS {
            bail!("capture.retry_max_ms: expected at most {MAX_RETRY_MS} (an hour)");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Live,
    EveryFrame,
}

pub use folder::Folder;

/// One captured frame, still in the source's pixel format: conversion happens on
/// the inference thread, only for the frames that are processed.
pub struct Frame {
    pub number: u64,
    pub captured: Instant,
    /// Capture time as Unix milliseconds, for reports.
    pub unix_ms: f64,
    pub layout: RawLayout,
    pub colour: Colour,
    pub bytes: Vec<u8>,
    /// The image file it was read from (folder sources).
    pub file: Option<PathBuf>,
}

/// Raw pixels as a source reads them.
pub struct Pixels {
    pub layout: RawLayout,
    pub colour: Colour,
    pub bytes: Vec<u8>,
}

/// What reading from a source can go wrong with, beyond a clean end.
pub enum ReadError {
    /// The stream ended inside a frame: skipped and counted.
    Truncated { got: usize, expected: String },
    /// One frame could not be used (a bad file in a folder); the source goes on.
    Bad(String),
    /// The device went away: reopened with back-off.
    Lost(anyhow::Error),
}

pub trait FrameSource: Send {
    /// The next frame, `Ok(None)` at the end of the stream.
    fn next(&mut self) -> Result<Option<Pixels>, ReadError>;

    /// The file the last frame came from, for sources that read files.
    fn file(&self) -> Option<&Path> {
        None
    }
}

/// Opens a source again after it was lost.
pub type Reopen = Box<dyn FnMut() -> Result<Box<dyn FrameSource>> + Send>;

/// Where the loop's frames come from.
pub struct Input {
    /// The source opened at start; `None` while a camera is not there yet.
    pub opened: Option<Box<dyn FrameSource>>,
    /// `None`: the source cannot be opened again, and losing it ends the stream.
    pub reopen: Option<Reopen>,
    pub capture: CaptureConfig,
}

/// Opens the configured source; may be called again after `Lost`.
pub fn open(source: &SourceConfig) -> Result<Box<dyn FrameSource>> {
    Ok(match source {
        SourceConfig::V4l(v4l) => Box::new(v4l::Camera::open(v4l)?),
        SourceConfig::Pipe(pipe) => Box::new(pipe::Pipe::open(pipe)?),
        SourceConfig::Folder(folder) => Box::new(folder::Folder::open(
            &folder.path,
            folder.fps,
            folder.repeat,
        )?),
        SourceConfig::Video(video) => Box::new(video::Video::open(
            &video.path,
            video.realtime,
            &video.ffmpeg,
        )?),
    })
}

/// Whether a failure to open at start is worth retrying: cameras come and go.
pub fn retried_at_start(source: &SourceConfig) -> bool {
    matches!(source, SourceConfig::V4l(_))
}

#[derive(Default)]
pub struct Counters {
    pub captured: AtomicU64,
    pub dropped: AtomicU64,
    pub truncated: AtomicU64,
    pub bad: AtomicU64,
}

enum SlotState {
    Empty,
    Full(Frame),
    Closed,
}

/// The newest frame, handed from capture to inference.
pub struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
    mode: Mode,
    pub counters: Counters,
}

pub enum Taken {
    Frame(Frame),
    Timeout,
    Closed,
}

impl Slot {
    pub fn new(mode: Mode) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Empty),
            changed: Condvar::new(),
            mode,
            counters: Counters::default(),
        })
    }

    /// Live: replaces an untaken frame. Every-frame: waits until it is taken, or
    /// until `stop` is set.
    fn put(&self, frame: Frame, stop: &AtomicBool) {
        let mut state = self.state.lock().unwrap();
        if self.mode == Mode::EveryFrame {
            while matches!(*state, SlotState::Full(_)) && !stop.load(Ordering::Relaxed) {
                state = self
                    .changed
                    .wait_timeout(state, Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
        }
        if let SlotState::Full(old) = &*state {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            log::debug!("frame {}: dropped for a newer one", old.number);
        }
        if !matches!(*state, SlotState::Closed) {
            *state = SlotState::Full(frame);
        }
        self.changed.notify_all();
    }

    /// Ends the stream once inference has taken the last frame.
    fn close(&self) {
        let mut state = self.state.lock().unwrap();
        while matches!(*state, SlotState::Full(_)) {
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        *state = SlotState::Closed;
        self.changed.notify_all();
    }

    pub fn take(&self, timeout: Duration) -> Taken {
        let mut state = self.state.lock().unwrap();
        if matches!(*state, SlotState::Empty) {
            state = self.changed.wait_timeout(state, timeout).unwrap().0;
        }
        let taken = match std::mem::replace(&mut *state, SlotState::Empty) {
            SlotState::Full(frame) => Taken::Frame(frame),
            SlotState::Empty => Taken::Timeout,
            SlotState::Closed => {
                *state = SlotState::Closed;
                Taken::Closed
            }
        };
        self.changed.notify_all();
        taken
    }
}

/// Runs capture until the source ends or `stop` is set; reopens a lost source with
/// back-off.
pub fn capture(input: Input, slot: Arc<Slot>, stop: Arc<AtomicBool>) {
    let Input {
        mut opened,
        mut reopen,
        capture: config,
    } = input;
    let mut number = 0u64;
    let mut backoff = Backoff::new(&config);
    while !stop.load(Ordering::Relaxed) {
        let Some(src) = opened.as_mut() else {
            let Some(reopen) = reopen.as_mut() else {
                break;
            };
            match reopen() {
                Ok(src) => {
                    if backoff.attempts > 0 {
                        log::info!("source: back after {} attempt(s)", backoff.attempts);
                    }
                    backoff = Backoff::new(&config);
                    opened = Some(src);
                }
                Err(err) => backoff.wait(&format!("{err:#}"), &stop),
            }
            continue;
        };
        match src.next() {
            Ok(Some(pixels)) => {
                slot.counters.captured.fetch_add(1, Ordering::Relaxed);
                let file = src.file().map(Path::to_path_buf);
                slot.put(stamp(number, pixels, file), &stop);
                number += 1;
            }
            Ok(None) => break,
            Err(ReadError::Truncated { got, expected }) => {
                slot.counters.truncated.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "source: a truncated frame ({got} bytes, expected {expected}) was skipped"
                );
            }
            Err(ReadError::Bad(message)) => {
                slot.counters.bad.fetch_add(1, Ordering::Relaxed);
                log::error!("source: {message}; skipped");
            }
            Err(ReadError::Lost(err)) => {
                log::warn!("source: lost: {err:#}");
                opened = None;
            }
        }
    }
    log::info!("source: end of stream after {number} frame(s)");
    slot.close();
}

fn stamp(number: u64, pixels: Pixels, file: Option<PathBuf>) -> Frame {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or_default();
    Frame {
        number,
        captured: Instant::now(),
        unix_ms,
        layout: pixels.layout,
        colour: pixels.colour,
        bytes: pixels.bytes,
        file,
    }
}

/// Doubling delays between reopen attempts, capped.
struct Backoff {
    next: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    fn new(config: &CaptureConfig) -> Backoff {
        Backoff {
            next: Duration::from_millis(config.retry_initial_ms),
            max: Duration::from_millis(config.retry_max_ms),
            attempts: 0,
        }
    }

    fn wait(&mut self, why: &str, stop: &AtomicBool) {
        self.attempts += 1;
        log::warn!(
            "source: cannot open ({why}); retry {} in {} ms",
            self.attempts,
            self.next.as_millis()
        );
        let until = Instant::now() + self.next;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.next = (self.next * 2).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgebone::frame::PixelFormat;

    fn frame(number: u64) -> Frame {
        let layout = RawLayout::new(PixelFormat::Rgb24, 1, 1, None).unwrap();
        stamp(
            number,
            Pixels {
                layout,
                colour: Colour::default(),
                bytes: vec![0; 3],
            },
            None,
        )
    }

    fn number(taken: Taken) -> Option<u64> {
        match taken {
            Taken::Frame(f) => Some(f.number),
            _ => None,
        }
    }

    #[test]
    fn the_retry_back_off_must_grow_from_a_positive_start() {
        let capture = |text: &str| toml::from_str::<CaptureConfig>(text).unwrap();
        let config = capture("");
        assert_eq!(
            (config.mode, config.retry_initial_ms, config.retry_max_ms),
            (Mode::Live, 200, 5_000)
        );
        config.validate().unwrap();
        capture("retry_initial_ms = 7\nretry_max_ms = 7")
            .validate()
            .unwrap();
        for bad in [
            "retry_initial_ms = 0",
            "retry_initial_ms = 300\nretry_max_ms = 20",
        ] {
            let err = capture(bad).validate().unwrap_err();
            assert_eq!(
                err.to_string(),
                "capture.retry_initial_ms / retry_max_ms: expected 0 < initial ≤ max"
            );
        }
    }

    #[test]
    fn only_file_sources_have_a_path_to_resolve() {
        let mut source: SourceConfig =
            toml::from_str("kind = \"folder\"\npath = \"images\"").unwrap();
        assert_eq!(source.path_mut().map(|p| p.clone()), Some("images".into()));
        let mut camera: SourceConfig =
            toml::from_str("kind = \"v4l\"\nwidth = 64\nheight = 48").unwrap();
        assert!(camera.path_mut().is_none());
    }

    #[test]
    fn live_keeps_the_newest_and_counts_the_rest() {
        let slot = Slot::new(Mode::Live);
        let stop = AtomicBool::new(false);
        for n in 0..3 {
            slot.put(frame(n), &stop);
        }
        assert_eq!(number(slot.take(Duration::ZERO)), Some(2));
        assert_eq!(slot.counters.dropped.load(Ordering::Relaxed), 2);
        assert!(matches!(
            slot.take(Duration::from_millis(1)),
            Taken::Timeout
        ));
        slot.close();
        assert!(matches!(slot.take(Duration::ZERO), Taken::Closed));
    }

    #[test]
    fn every_frame_waits_and_close_keeps_the_last_frame() {
        let slot = Slot::new(Mode::EveryFrame);
        let producer = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                let stop = AtomicBool::new(false);
                for n in 0..5 {
                    slot.put(frame(n), &stop);
                }
                slot.close();
            })
        };
        let mut seen = Vec::new();
        loop {
            match slot.take(Duration::from_secs(5)) {
                Taken::Frame(f) => seen.push(f.number),
                Taken::Closed => break,
                Taken::Timeout => panic!("producer stalled"),
            }
        }
        producer.join().unwrap();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(slot.counters.dropped.load(Ordering::Relaxed), 0);
    }
}
