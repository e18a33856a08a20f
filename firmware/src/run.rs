//! The device loop, shared by `edgebone run --config edgebone.toml` and the
//! one-shot commands: capture on its own thread, inference on the newest frame
//! (or on every frame), reports out, stats in the log; SIGTERM or SIGINT end it
//! cleanly (pending reports flushed, pins safe); SIGHUP re-reads the source
//! settings, used when the source is next opened.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use edgebone::frame::FrameRef;
use edgebone::{Bundle, ModelOptions, Pipeline};

use crate::config::{Config, Task};
use crate::memory;
use crate::report::taps::TapWriter;
use crate::report::{Report, Reporter};
use crate::source::{self, Frame, Input, Slot, SourceConfig, Taken};
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
    let bundle = Bundle::open(&config.model.bundle)?;
    let options = ModelOptions {
        threads: config.model.threads.into(),
        fp16: config.model.fp16,
        ..Default::default()
    };
    let pipeline = Pipeline::load(bundle, config.task.pipeline(), &options)?;
    log::info!(
        "model {}: input {:?}, {} thread(s)",
        config.model.bundle.display(),
        pipeline.input_shape(),
        config.model.threads
    );
    let taps = match &config.task {
        Task::Features {
            taps_dir: Some(dir),
            taps_every_s,
        } => Some(
            TapWriter::new(dir, Duration::from_secs_f64(*taps_every_s)).context("task.taps_dir")?,
        ),
        _ => None,
    };
    let settings = Arc::new(Mutex::new(config.source.clone()));
    let reopen = {
        let settings = settings.clone();
        move || {
            // Copied out first: opening a named pipe waits for its writer, and
            // SIGHUP must not wait for that.
            let current = settings.lock().unwrap().clone();
            source::open(&current)
        }
    };
    let input = Input {
        opened: open_source(&config)?,
        reopen: Some(Box::new(reopen)),
        capture: config.capture.clone(),
    };
    let device = Device {
        pipeline,
        input,
        reporter: Reporter::start(&config)?,
        taps,
        stats_every: Duration::from_secs_f64(config.stats.interval_s),
        reload: Some(Reload {
            config: args.config.clone(),
            settings,
        }),
    };
    device.run()?;
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

/// Everything the loop runs, loaded and opened before the first frame.
pub struct Device {
    pub pipeline: Pipeline,
    pub input: Input,
    pub reporter: Reporter,
    /// Where feature maps are written, for the features task.
    pub taps: Option<TapWriter>,
    /// How often stats are logged.
    pub stats_every: Duration,
    /// What SIGHUP re-reads (`run` only; the one-shot commands keep SIGHUP's
    /// default, ending the process).
    pub reload: Option<Reload>,
}

/// SIGHUP: the config file's `[source]` is read again and used from the
/// source's next opening: a named pipe's next writer (a camera process restarted
/// at another size: a byte stream can only be re-framed where a writer starts),
/// a camera that comes back. The model, task and sinks are read at start only.
pub struct Reload {
    pub config: PathBuf,
    /// The settings the capture thread opens the source with.
    pub settings: Arc<Mutex<SourceConfig>>,
}

impl Reload {
    fn apply(&self) {
        let path = self.config.display();
        let source = match Config::load(&self.config) {
            Ok(config) => config.source,
            Err(err) => {
                log::error!("SIGHUP: {err:#}; the running settings stay");
                return;
            }
        };
        let text = serde_json::to_string(&source).unwrap_or_default();
        let mut settings = self.settings.lock().unwrap();
        if serde_json::to_string(&*settings).unwrap_or_default() == text {
            log::info!("SIGHUP: {path}: [source] unchanged");
            return;
        }
        log::info!("SIGHUP: {path}: [source] is now {text}, from the source's next opening");
        *settings = source;
    }
}

impl Device {
    /// Runs until the source ends or a signal comes; returns how many frames
    /// could not be used (bad or truncated at the source, failed in the pipeline).
    pub fn run(mut self) -> Result<u64> {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // A second signal while shutting down exits at once.
            signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
                .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
                .context("installing signal handlers")?;
        }
        let hup = Arc::new(AtomicBool::new(false));
        if self.reload.is_some() {
            signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
                .context("installing the SIGHUP handler")?;
        }
        let slot = Slot::new(self.input.capture.mode);
        let capture = {
            let (input, slot, stop) = (self.input, slot.clone(), stop.clone());
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || source::capture(input, slot, stop))
                .context("spawning the capture thread")?
        };
        let watchdog = Watchdog::start();
        let mut stats = Stats::new(self.stats_every).with_serial(self.reporter.serial_counters());
        while !stop.load(Ordering::Relaxed) {
            watchdog.ping();
            if hup.swap(false, Ordering::Relaxed)
                && let Some(reload) = &self.reload
            {
                reload.apply();
            }
            if stats.due() {
                // Between frames: what is resident after the trim is what the
                // program holds, comparable from one stats line to the next.
                memory::release_free();
                stats.log(&slot.counters, memory::resident());
            }
            let frame = match slot.take(Duration::from_millis(100)) {
                Taken::Frame(frame) => frame,
                Taken::Timeout => continue,
                Taken::Closed => break,
            };
            match process(&mut self.pipeline, self.taps.as_mut(), &frame) {
                Ok(report) => {
                    stats.record(report.latency_ms);
                    self.reporter.send(report);
                }
                Err(err) => {
                    stats.failed += 1;
                    match &frame.file {
                        Some(file) => log::error!("{}: {err:#}", file.display()),
                        None => log::error!("frame {}: {err:#}", frame.number),
                    }
                }
            }
        }
        let interrupted = stop.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        self.reporter.finish(FLUSH_TIMEOUT);
        stats.summary(&slot.counters);
        if !interrupted {
            let _ = capture.join();
        }
        let counters = &slot.counters;
        Ok(stats.failed
            + counters.bad.load(Ordering::Relaxed)
            + counters.truncated.load(Ordering::Relaxed))
    }
}

/// One frame through the pipeline into a report; feature maps are written
/// before the report goes out.
fn process(pipeline: &mut Pipeline, taps: Option<&mut TapWriter>, frame: &Frame) -> Result<Report> {
    // The preprocessor resizes YUV before converting it (runtime/src/preprocess.rs).
    let pixels = FrameRef::Raw {
        layout: &frame.layout,
        bytes: &frame.bytes,
        colour: frame.colour,
    };
    let (results, stages_ms) = pipeline.run(pixels)?;
    let report = Report {
        image: frame.file.clone(),
        frame: frame.number,
        captured_unix_ms: frame.unix_ms,
        latency_ms: frame.captured.elapsed().as_secs_f64() * 1e3,
        stages_ms,
        results,
    };
    if let Some(taps) = taps {
        taps.write(&report)?;
    }
    Ok(report)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_config(width: u32) -> String {
        format!(
            "[model]\nbundle = \"models/yolov5n_int8\"\n\
             [source]\nkind = \"pipe\"\npath = \"frames\"\nformat = \"yuv420\"\nwidth = {width}\nheight = 240\n"
        )
    }

    fn width(reload: &Reload) -> u32 {
        match &*reload.settings.lock().unwrap() {
            SourceConfig::Pipe(pipe) => pipe.width,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sighup_takes_the_new_source_settings_and_keeps_them_when_the_file_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edgebone.toml");
        std::fs::write(&file, pipe_config(320)).unwrap();
        let reload = Reload {
            settings: Arc::new(Mutex::new(Config::load(&file).unwrap().source)),
            config: file.clone(),
        };
        std::fs::write(&file, pipe_config(256)).unwrap();
        reload.apply();
        assert_eq!(width(&reload), 256);
        // Paths still resolve against the config's folder.
        let path = reload.settings.lock().unwrap().path_mut().cloned();
        assert_eq!(path, Some(dir.path().join("frames")));
        std::fs::write(&file, pipe_config(320).replace("width", "widht")).unwrap();
        reload.apply();
        assert_eq!(width(&reload), 256);
        std::fs::remove_file(&file).unwrap();
        reload.apply();
        assert_eq!(width(&reload), 256);
    }
}
