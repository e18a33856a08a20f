//! Periodic stats in the log: frames per second, capture→report latency
//! percentiles, dropped and truncated frames; and a summary at exit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::memory::Resident;
use crate::report::serial::SerialCounters;
use crate::source::Counters;

/// The `[stats]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// Seconds between stats lines in the log (FPS, latency percentiles, drops).
    pub interval_s: f64,
}

const DEFAULT_INTERVAL_S: f64 = 10.0;

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            interval_s: DEFAULT_INTERVAL_S,
        }
    }
}

impl StatsConfig {
    pub fn validate(&self) -> Result<()> {
        // `Duration` takes neither infinity nor NaN.
        if self.interval_s <= 0.0 || Duration::try_from_secs_f64(self.interval_s).is_err() {
            bail!("stats.interval_s: expected a positive number of seconds");
        }
        Ok(())
    }
}

pub struct Stats {
    every: Duration,
    window_start: Instant,
    window: Histogram<u64>,
    total: Histogram<u64>,
    start: Instant,
    pub failed: u64,
    /// The serial writer's counts, when `[serial]` is configured.
    serial: Option<Arc<SerialCounters>>,
}

/// The summary line's content (`summary {json}` in the log at exit).
#[derive(Serialize)]
struct Summary {
    seconds: f64,
    processed: u64,
    fps: f64,
    captured: u64,
    dropped: u64,
    truncated: u64,
    bad: u64,
    failed: u64,
    latency_ms: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<SerialSummary>,
}

/// Serial reports written and dropped (the receiver's `seq` gaps add up to
/// `dropped`).
#[derive(Serialize)]
struct SerialSummary {
    written: u64,
    dropped: u64,
}

#[derive(Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1e3;
    Percentiles {
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

impl Stats {
    pub fn new(every: Duration) -> Stats {
        Stats {
            every,
            window_start: Instant::now(),
            window: histogram(),
            total: histogram(),
            start: Instant::now(),
            failed: 0,
            serial: None,
        }
    }

    /// Adds the serial writer's counts to the stats lines and the summary.
    pub fn with_serial(mut self, serial: Option<Arc<SerialCounters>>) -> Stats {
        self.serial = serial;
        self
    }

    pub fn record(&mut self, latency_ms: f64) {
        let us = (latency_ms * 1e3).clamp(1.0, 3.6e9) as u64;
        self.window.saturating_record(us);
        self.total.saturating_record(us);
    }

    /// Whether the window is over and its stats line is due.
    pub fn due(&self) -> bool {
        self.window_start.elapsed() >= self.every
    }

    /// Logs the window's stats (and the memory in use, when known) and starts
    /// the next window.
    pub fn log(&mut self, counters: &Counters, memory: Option<Resident>) {
        let elapsed = self.window_start.elapsed();
        let p = percentiles(&self.window);
        let serial = match &self.serial {
            Some(serial) => format!(
                ", serial dropped {}",
                serial.dropped.load(Ordering::Relaxed)
            ),
            None => String::new(),
        };
        let memory = match memory {
            Some(m) => format!(", memory {} kB (anon {} kB)", m.rss_kb, m.anon_kb),
            None => String::new(),
        };
        log::info!(
            "stats: {:.1} fps, latency p50 {:.1} p90 {:.1} p99 {:.1} ms, dropped {}, truncated {}{serial}{memory}",
            self.window.len() as f64 / elapsed.as_secs_f64(),
            p.p50,
            p.p90,
            p.p99,
            counters.dropped.load(Ordering::Relaxed),
            counters.truncated.load(Ordering::Relaxed),
        );
        self.window.reset();
        self.window_start = Instant::now();
    }

    pub fn summary(&self, counters: &Counters) {
        let seconds = self.start.elapsed().as_secs_f64();
        let summary = Summary {
            seconds,
            processed: self.total.len(),
            fps: self.total.len() as f64 / seconds,
            captured: counters.captured.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
            truncated: counters.truncated.load(Ordering::Relaxed),
            bad: counters.bad.load(Ordering::Relaxed),
            failed: self.failed,
            latency_ms: percentiles(&self.total),
            serial: self.serial.as_ref().map(|serial| SerialSummary {
                written: serial.written.load(Ordering::Relaxed),
                dropped: serial.dropped.load(Ordering::Relaxed),
            }),
        };
        log::info!(
            "summary {}",
            serde_json::to_string(&summary).unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_a_positive_finite_duration() {
        assert_eq!(StatsConfig::default().interval_s, 10.0);
        for good in [0.5, 10.0, 3600.0] {
            StatsConfig { interval_s: good }.validate().unwrap();
        }
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            let err = StatsConfig { interval_s: bad }.validate().unwrap_err();
            assert_eq!(
                err.to_string(),
                "stats.interval_s: expected a positive number of seconds",
                "{bad}"
            );
        }
    }
}
