//! Where results go: NDJSON on stdout, the serial port (its own thread, so a slow
//! or absent device never stalls inference) and GPIO rules (their own thread, for
//! hold and pulse timing).

pub mod gpio;
pub mod serial;
pub mod stdout;
pub mod wire;

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use edgebone::Latency;
use edgebone::decode::{Class, Detection};
use serde::Serialize;

use crate::config::Config;

/// One processed frame.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub frame: u64,
    pub captured_unix_ms: f64,
    /// Capture to report, milliseconds.
    pub latency_ms: f64,
    pub stages_ms: Latency,
    #[serde(flatten)]
    pub results: Results,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Results {
    Top(Vec<Class>),
    Detections(Vec<Detection>),
    Embedding(Vec<f32>),
}

impl Results {
    /// (label, score) of every class or detection, for GPIO rules.
    pub fn hits(&self) -> Vec<(String, f32)> {
        match self {
            Results::Top(top) => top.iter().map(|c| (c.label.clone(), c.score)).collect(),
            Results::Detections(dets) => dets.iter().map(|d| (d.label.clone(), d.score)).collect(),
            Results::Embedding(_) => Vec::new(),
        }
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

    pub fn send(&mut self, report: Report) {
        let report = Arc::new(report);
        if let Some(gpio) = &self.gpio {
            gpio.send(report.results.hits());
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
