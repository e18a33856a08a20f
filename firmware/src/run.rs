//! `edgebone run --config edgebone.toml`: the device loop. Capture on its own
//! thread, inference on the newest frame, reports out, stats in the log; SIGTERM
//! or SIGINT end it cleanly (pending reports flushed, pins safe).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use edgebone::decode::FeatureMap;
use edgebone::frame::FrameRef;
use edgebone::model::Outputs;
use edgebone::{Bundle, ModelOptions, Pipeline};

use crate::config::{Config, Task};
use crate::report::{Report, Reporter, Results};
use crate::source::{self, Frame, Slot, Taken};
use crate::stats::Stats;

#[derive(Args)]
pub struct RunArgs {
    /// The configuration file (TOML; README, "The device program").
    #[arg(long)]
    config: PathBuf,
    /// Print the effective configuration, defaults filled in, and exit.
    #[arg(long)]
    print_config: bool,
}

/// How long shutdown may take to flush reports before the process exits.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .context("installing signal handlers")?;
    }
    let mut task = TaskRunner::load(&config)?;
    let opened = open_source(&config)?;
    let mut reporter = Reporter::start(&config)?;
    let slot = Slot::new(config.capture.mode);
    let capture = {
        let (source, capture, slot, stop) = (
            config.source.clone(),
            config.capture.clone(),
            slot.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || source::capture(source, capture, opened, slot, stop))
            .context("spawning the capture thread")?
    };
    let watchdog = Watchdog::start();
    let mut stats = Stats::new(Duration::from_secs_f64(config.stats.interval_s));
    while !stop.load(Ordering::Relaxed) {
        watchdog.ping();
        stats.maybe_log(&slot.counters);
        let frame = match slot.take(Duration::from_millis(100)) {
            Taken::Frame(frame) => frame,
            Taken::Timeout => continue,
            Taken::Closed => break,
        };
        match task.process(&frame) {
            Ok(report) => {
                stats.record(report.latency_ms);
                reporter.send(report);
            }
            Err(err) => {
                stats.failed += 1;
                log::error!("frame {}: {err:#}", frame.number);
            }
        }
    }
    let interrupted = stop.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    reporter.finish(FLUSH_TIMEOUT);
    stats.summary(&slot.counters);
    if !interrupted {
        let _ = capture.join();
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the source before the loop starts, so a wrong path or an unsupported
/// format is one error at start; a camera that is not there yet is retried.
fn open_source(config: &Config) -> Result<Option<Box<dyn source::FrameSource>>> {
    match source::open(&config.source) {
        Ok(src) => Ok(Some(src)),
        Err(err) if source::retried_at_start(&config.source) => {
            log::warn!("source: {err:#}; retrying until it appears");
            Ok(None)
        }
        Err(err) => Err(err.context("source")),
    }
}

/// The model and what to do with its output.
struct TaskRunner {
    pipeline: Pipeline,
    task: Task,
    conf: f32,
    iou: f32,
    taps_written: Option<Instant>,
}

impl TaskRunner {
    fn load(config: &Config) -> Result<TaskRunner> {
        let bundle = Bundle::open(&config.model.bundle)?;
        let outputs = match config.task {
            Task::Features { .. } => Outputs::Taps,
            _ => Outputs::Head,
        };
        let options = ModelOptions {
            threads: config.model.threads as usize,
            input_size: None,
            outputs,
            integer: true,
        };
        let pipeline = Pipeline::load(bundle, &options)?;
        let defaults = &pipeline.bundle().manifest.output;
        let (conf, iou) = match config.task {
            Task::Detect { conf, iou } => {
                (conf.unwrap_or(defaults.conf), iou.unwrap_or(defaults.iou))
            }
            _ => (defaults.conf, defaults.iou),
        };
        if let Task::Features {
            taps_dir: Some(dir),
            ..
        } = &config.task
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("task.taps_dir {}: cannot create", dir.display()))?;
        }
        log::info!(
            "model {}: input {:?}, {} thread(s)",
            config.model.bundle.display(),
            pipeline.input_shape(),
            config.model.threads
        );
        Ok(TaskRunner {
            pipeline,
            task: config.task.clone(),
            conf,
            iou,
            taps_written: None,
        })
    }

    fn process(&mut self, frame: &Frame) -> Result<Report> {
        // The preprocessor resizes YUV before converting it (runtime/src/preprocess.rs).
        let rgb = FrameRef::Raw {
            layout: &frame.layout,
            bytes: &frame.bytes,
            colour: frame.colour,
        };
        let (results, stages_ms) = match &self.task {
            Task::Classify { top_k } => {
                let (top, latency) = self.pipeline.classify(rgb, *top_k)?;
                (Results::Top(top), latency)
            }
            Task::Detect { .. } => {
                let (dets, latency) = self.pipeline.detect(rgb, self.conf, self.iou)?;
                (Results::Detections(dets), latency)
            }
            Task::Features {
                taps_dir,
                taps_every_s,
            } => {
                let (maps, embedding, latency) = self.pipeline.features(rgb)?;
                if let Some(dir) = taps_dir.clone() {
                    self.maybe_write_taps(&dir, *taps_every_s, frame.number, &maps)?;
                }
                (Results::Embedding(embedding), latency)
            }
        };
        Ok(Report {
            frame: frame.number,
            captured_unix_ms: frame.unix_ms,
            latency_ms: frame.captured.elapsed().as_secs_f64() * 1e3,
            stages_ms,
            results,
        })
    }

    fn maybe_write_taps(
        &mut self,
        dir: &Path,
        every_s: f64,
        number: u64,
        maps: &[FeatureMap],
    ) -> Result<()> {
        let due = self
            .taps_written
            .is_none_or(|t| t.elapsed().as_secs_f64() >= every_s);
        if !due {
            return Ok(());
        }
        self.taps_written = Some(Instant::now());
        for map in maps {
            let path = dir.join(format!("frame{number:08}_{}.npy", map.name));
            crate::oneshot::write_npy_map(&path, map)?;
        }
        Ok(())
    }
}

/// systemd's watchdog, when the unit sets `WatchdogSec=`: pinged from the loop,
/// so a stuck inference (not only a dead process) gets the service restarted.
struct Watchdog {
    every: Option<Duration>,
    last: std::cell::Cell<Instant>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        Watchdog {
            every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last: std::cell::Cell::new(Instant::now()),
        }
    }

    fn ping(&self) {
        if let Some(every) = self.every
            && self.last.get().elapsed() >= every
        {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            self.last.set(Instant::now());
        }
    }
}
