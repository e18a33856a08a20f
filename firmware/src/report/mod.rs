//! Where results go: NDJSON on stdout, the serial port (its own thread, so a slow
//! or absent device never stalls inference), GPIO rules (their own thread, for
//! hold and pulse timing) and feature maps as .npy files.

pub mod gpio;
pub mod serial;
pub mod stdout;
pub mod taps;
pub mod wire;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use edgebone::{Latency, Results};
use serde::Serialize;

use crate::config::Config;

/// One processed frame: a line on stdout (README, "Report format").
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image file the frame was read from (one-shot commands, folder sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<PathBuf>,
    pub frame: u64,
    pub captured_unix_ms: f64,
    /// Capture to report, milliseconds.
    pub latency_ms: f64,
    pub stages_ms: Latency,
    #[serde(flatten)]
    pub results: Results,
}

/// (label, score) of every class or detection, for GPIO rules.
fn hits(results: &Results) -> Vec<(String, f32)> {
    match results {
        Results::Top(top) => top.iter().map(|c| (c.label.clone(), c.score)).collect(),
        Results::Detections(dets) => dets.iter().map(|d| (d.label.clone(), d.score)).collect(),
        Results::Features { .. } => Vec::new(),
    }
}

fn write_line(stdout: &std::io::Stdout, report: &Report) -> Result<()> {
    let mut line = serde_json::to_vec(report)?;
    line.push(b'\n');
    let mut out = stdout.lock();
    out.write_all(&line).and_then(|_| out.flush())?;
    Ok(())
}

/// Every configured output.
pub struct Reporter {
    stdout: Option<std::io::Stdout>,
    serial: Option<serial::Serial>,
    gpio: Option<gpio::Gpio>,
}

impl Reporter {
    /// Opens GPIO (an error here is fatal: a wrong pin is a config mistake) and
    /// starts the serial writer (which retries a missing device by itself).
    pub fn start(config: &Config) -> Result<Reporter> {
        let gpio = if config.gpio.rules.is_empty() {
            None
        } else {
            Some(gpio::Gpio::start(&config.gpio).context("gpio")?)
        };
        let serial = config.serial.clone().map(serial::Serial::start);
        Ok(Reporter {
            stdout: config.stdout.enabled.then(std::io::stdout),
            serial,
            gpio,
        })
    }

    /// Reports on stdout alone (the one-shot commands).
    pub fn stdout() -> Reporter {
        Reporter {
            stdout: Some(std::io::stdout()),
            serial: None,
            gpio: None,
        }
    }

    /// The serial writer's counts, when `[serial]` is configured.
    pub fn serial_counters(&self) -> Option<Arc<serial::SerialCounters>> {
        self.serial.as_ref().map(|serial| serial.counters.clone())
    }

    pub fn send(&mut self, report: Report) {
        let report = Arc::new(report);
        if let Some(gpio) = &self.gpio {
            gpio.send(hits(&report.results));
        }
        if let Some(serial) = &self.serial {
            serial.send(report.clone());
        }
        if let Some(stdout) = &mut self.stdout
            && let Err(err) = write_line(stdout, &report)
        {
            // A closed stdout must not stop serial and GPIO reports.
            log::error!("stdout: {err:#}; stdout reports are off from now on");
            self.stdout = None;
        }
    }

    /// Flushes pending serial reports (waiting at most `timeout`) and puts the
    /// pins at their safe levels.
    pub fn finish(self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        if let Some(gpio) = self.gpio {
            gpio.finish(deadline);
        }
        if let Some(serial) = self.serial {
            serial.finish(deadline);
        }
    }
}
