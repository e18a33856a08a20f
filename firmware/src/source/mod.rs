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

use anyhow::Result;
use edgebone::frame::{Colour, RawLayout};

use crate::config::{CaptureConfig, Mode, Source};

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
pub fn open(source: &Source) -> Result<Box<dyn FrameSource>> {
    Ok(match source {
        Source::V4l {
            device,
            format,
            width,
            height,
            fps,
        } => Box::new(v4l::Camera::open(device, *format, *width, *height, *fps)?),
        Source::Pipe {
            path,
            format,
            width,
            height,
            stride,
            colour,
        } => {
            let layout = RawLayout::new(*format, *width, *height, *stride)?;
            Box::new(pipe::Pipe::open(path, layout, *colour)?)
        }
        Source::Folder { path, fps, repeat } => {
            Box::new(folder::Folder::open(path, *fps, *repeat)?)
        }
        Source::Video {
            path,
            realtime,
            ffmpeg,
        } => Box::new(video::Video::open(path, *realtime, ffmpeg)?),
    })
}

/// Whether a failure to open at start is worth retrying: cameras come and go.
pub fn retried_at_start(source: &Source) -> bool {
    matches!(source, Source::V4l { .. })
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
                let mut frame = stamp(number, pixels);
                frame.file = src.file().map(Path::to_path_buf);
                slot.put(frame, &stop);
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

fn stamp(number: u64, pixels: Pixels) -> Frame {
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
        file: None,
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
        )
    }

    fn number(taken: Taken) -> Option<u64> {
        match taken {
            Taken::Frame(f) => Some(f.number),
            _ => None,
        }
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
