//! `edgebone run`'s one configuration file (TOML). Every key has a default except
//! the model; unknown keys are errors, so a typo cannot silently fall back.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgebone::frame::{Colour, PixelFormat};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    #[serde(default)]
    pub task: Task,
    pub source: Source,
    #[serde(default)]
    pub capture: CaptureConfig,
    #[serde(default)]
    pub stdout: StdoutConfig,
    #[serde(default)]
    pub serial: Option<SerialConfig>,
    #[serde(default)]
    pub gpio: GpioConfig,
    #[serde(default)]
    pub stats: StatsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A model bundle folder (manifest.toml, network, labels).
    pub bundle: PathBuf,
    #[serde(default = "one")]
    pub threads: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Task {
    Classify {
        #[serde(default = "five")]
        top_k: usize,
    },
    Detect {
        /// Score threshold; the manifest's when absent.
        conf: Option<f32>,
        /// NMS IoU threshold; the manifest's when absent.
        iou: Option<f32>,
    },
    Features {
        /// Write every tap as .npy into this folder, at most once per `taps_every_s`.
        taps_dir: Option<PathBuf>,
        #[serde(default = "ten")]
        taps_every_s: f64,
    },
}

impl Default for Task {
    fn default() -> Self {
        Task::Classify { top_k: 5 }
    }
}

impl Task {
    /// What the pipeline is loaded for.
    pub fn pipeline(&self) -> edgebone::Task {
        match *self {
            Task::Classify { top_k } => edgebone::Task::Classify { top_k },
            Task::Detect { conf, iou } => edgebone::Task::Detect { conf, iou },
            Task::Features { .. } => edgebone::Task::Features,
        }
    }
}

/// How frames are taken from the source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// `live`: inference takes the newest frame, older ones are dropped and counted.
    /// `every-frame`: capture waits for inference (files, offline runs).
    #[serde(default)]
    pub mode: Mode,
    /// Back-off between attempts to reopen a source that went away.
    #[serde(default = "retry_initial")]
    pub retry_initial_ms: u64,
    #[serde(default = "retry_max")]
    pub retry_max_ms: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: Mode::Live,
            retry_initial_ms: retry_initial(),
            retry_max_ms: retry_max(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// A V4L2 device (USB webcams; Pi and Jetson cameras exposed as V4L2).
    V4l {
        #[serde(default = "video0")]
        device: PathBuf,
        /// `mjpeg` or `yuyv`.
        #[serde(default = "mjpeg")]
        format: PixelFormat,
        width: u32,
        height: u32,
        #[serde(default = "thirty")]
        fps: u32,
    },
    /// Raw frames on stdin (`path = "-"`) or a named pipe: rpicam-vid, GStreamer's
    /// fdsink, `ffmpeg -f rawvideo`.
    Pipe {
        #[serde(default = "stdin")]
        path: PathBuf,
        format: PixelFormat,
        width: u32,
        height: u32,
        /// Bytes per row of the first plane when rows are padded (rpicam-vid).
        stride: Option<u32>,
        #[serde(default)]
        colour: Colour,
    },
    /// JPEG/PNG files of a folder in name order, at `fps`, optionally looping.
    Folder {
        path: PathBuf,
        #[serde(default = "thirty")]
        fps: u32,
        #[serde(default)]
        repeat: bool,
    },
    /// A video file decoded by an `ffmpeg` child process at the file's own rate
    /// (`realtime = true`) or as fast as it decodes.
    Video {
        path: PathBuf,
        #[serde(default = "yes")]
        realtime: bool,
        #[serde(default = "ffmpeg")]
        ffmpeg: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Live,
    EveryFrame,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// One NDJSON line per processed frame.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for StdoutConfig {
    fn default() -> Self {
        StdoutConfig { enabled: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// A tty: `/dev/ttyUSB0`, `/dev/ttyTHS1` (Jetson), `/dev/serial0` (Pi).
    pub path: PathBuf,
    /// `serialport` (any tty) or `rppal` (the Pi's own UART; ARM builds only).
    #[serde(default)]
    pub driver: SerialDriver,
    #[serde(default = "baud")]
    pub baud: u32,
    #[serde(default = "eight")]
    pub data_bits: u8,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "one_u8")]
    pub stop_bits: u8,
    #[serde(default)]
    pub format: WireFormat,
    /// Reports kept while the device is away; beyond it the oldest are dropped
    /// (and the receiver sees the gap in the sequence numbers).
    #[serde(default = "queue")]
    pub queue: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialDriver {
    #[default]
    Serialport,
    Rppal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    #[default]
    Ndjson,
    /// postcard, CRC-32, COBS-framed with a 0 delimiter (README).
    Binary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    #[serde(default)]
    pub driver: GpioDriver,
    /// The GPIO character device for `driver = "cdev"`.
    #[serde(default = "gpiochip0")]
    pub chip: PathBuf,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpioDriver {
    /// The Pi's GPIO through rppal (ARM builds only).
    Rppal,
    /// The Linux GPIO character device through gpiocdev (Jetson, other boards).
    Cdev,
    /// No hardware: level changes are logged (demos, tests).
    #[default]
    Log,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A label of the model; any class or detection when absent.
    pub class: Option<String>,
    #[serde(default)]
    pub min_score: f32,
    /// The GPIO number (BCM numbering on a Pi, the line offset on a chip).
    pub pin: u32,
    pub action: Action,
    /// How long `hold` keeps the pin after the last match, or the `pulse` length.
    pub ms: u64,
    /// The level while the rule fires; the pin rests (and starts and ends) at the other.
    #[serde(default = "high")]
    pub active: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Hold,
    Pulse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    High,
    Low,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// Seconds between stats lines in the log (FPS, latency percentiles, drops).
    #[serde(default = "ten")]
    pub interval_s: f64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig { interval_s: 10.0 }
    }
}

fn one() -> u16 {
    1
}
fn one_u8() -> u8 {
    1
}
fn five() -> usize {
    5
}
fn eight() -> u8 {
    8
}
fn ten() -> f64 {
    10.0
}
fn thirty() -> u32 {
    30
}
fn yes() -> bool {
    true
}
fn baud() -> u32 {
    115_200
}
fn queue() -> usize {
    256
}
fn retry_initial() -> u64 {
    200
}
fn retry_max() -> u64 {
    5_000
}
fn high() -> Level {
    Level::High
}
fn mjpeg() -> PixelFormat {
    PixelFormat::Mjpeg
}
fn video0() -> PathBuf {
    "/dev/video0".into()
}
fn stdin() -> PathBuf {
    "-".into()
}
fn ffmpeg() -> PathBuf {
    "ffmpeg".into()
}
fn gpiochip0() -> PathBuf {
    "/dev/gpiochip0".into()
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the config", path.display()))?;
        let mut config =
            Config::parse(&text).with_context(|| format!("{}: bad config", path.display()))?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| one_line(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a parsed config serializes")
    }

    /// Relative paths in the file are relative to the file, as systemd units expect.
    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() && p.as_os_str() != "-" {
                *p = base.join(&*p);
            }
        };
        join(&mut self.model.bundle);
        match &mut self.source {
            Source::Pipe { path, .. }
            | Source::Folder { path, .. }
            | Source::Video { path, .. } => join(path),
            Source::V4l { .. } => {}
        }
        if let Task::Features {
            taps_dir: Some(dir),
            ..
        } = &mut self.task
        {
            join(dir);
        }
    }

    fn validate(&self) -> Result<()> {
        if self.model.threads == 0 {
            bail!("model.threads: expected at least 1");
        }
        self.validate_source()?;
        // top_k, conf and iou are checked against the bundle when it loads.
        if let Task::Features { taps_every_s, .. } = &self.task
            && *taps_every_s < 0.0
        {
            bail!("task.taps_every_s: expected a number of seconds ≥ 0")
        }
        if let Some(serial) = &self.serial {
            validate_serial(serial)?;
        }
        self.validate_gpio()?;
        if self.stats.interval_s.is_nan() || self.stats.interval_s <= 0.0 {
            bail!("stats.interval_s: expected a positive number of seconds");
        }
        Ok(())
    }

    fn validate_source(&self) -> Result<()> {
        let c = &self.capture;
        if c.retry_initial_ms == 0 || c.retry_max_ms < c.retry_initial_ms {
            bail!("capture.retry_initial_ms / retry_max_ms: expected 0 < initial ≤ max");
        }
        match &self.source {
            Source::V4l { format, fps, .. } => {
                if !matches!(format, PixelFormat::Mjpeg | PixelFormat::Yuyv) {
                    bail!(
                        "source.format: V4L2 capture supports \"mjpeg\" or \"yuyv\", not {format:?}"
                    );
                }
                if *fps == 0 {
                    bail!("source.fps: expected at least 1");
                }
            }
            Source::Pipe {
                format,
                width,
                height,
                stride,
                ..
            } => {
                edgebone::frame::RawLayout::new(*format, *width, *height, *stride)
                    .context("source")?;
            }
            Source::Folder { fps: 0, .. } => bail!("source.fps: expected at least 1"),
            _ => {}
        }
        Ok(())
    }

    fn validate_gpio(&self) -> Result<()> {
        if self.gpio.rules.is_empty() {
            return Ok(());
        }
        if matches!(self.task, Task::Features { .. }) {
            bail!("gpio.rules: rules match classes or detections; the features task has neither");
        }
        for (i, rule) in self.gpio.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&rule.min_score) {
                bail!("gpio.rules[{i}].min_score: expected a number from 0 to 1");
            }
            if rule.ms == 0 {
                bail!("gpio.rules[{i}].ms: expected a positive number of milliseconds");
            }
            if self.gpio.driver == GpioDriver::Rppal && rule.pin > 27 {
                bail!(
                    "gpio.rules[{i}].pin: the Raspberry Pi's header has GPIO 0 to 27 (BCM numbering), not {}",
                    rule.pin
                );
            }
        }
        for (i, a) in self.gpio.rules.iter().enumerate() {
            let clash = self.gpio.rules[..i]
                .iter()
                .any(|b| b.pin == a.pin && b.active != a.active);
            if clash {
                bail!(
                    "gpio.rules[{i}]: pin {} has rules with different active levels",
                    a.pin
                );
            }
        }
        Ok(())
    }
}

/// toml's message names the key and what was expected, over several lines with a
/// source excerpt; a log wants one line.
fn one_line(text: &str, err: &toml::de::Error) -> anyhow::Error {
    let message = err.message().trim().replace('\n', "; ");
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            let excerpt = text.lines().nth(line - 1).unwrap_or("").trim();
            anyhow::anyhow!("line {line} ({excerpt}): {message}")
        }
        None => anyhow::anyhow!("{message}"),
    }
}

fn validate_serial(serial: &SerialConfig) -> Result<()> {
    if serial.baud == 0 {
        bail!("serial.baud: expected a positive baud rate such as 115200");
    }
    if !(5..=8).contains(&serial.data_bits) {
        bail!("serial.data_bits: expected 5, 6, 7 or 8");
    }
    if !(1..=2).contains(&serial.stop_bits) {
        bail!("serial.stop_bits: expected 1 or 2");
    }
    if serial.queue == 0 {
        bail!("serial.queue: expected at least 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [model]
        bundle = "models/mobilenet_v2"
        [source]
        kind = "pipe"
        format = "yuv420"
        width = 640
        height = 480
    "#;

    fn error(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn the_shipped_example_parses() {
        let config = Config::parse(include_str!("../edgebone.toml")).unwrap();
        assert!(matches!(config.source, Source::Folder { fps: 30, .. }));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = Config::parse(MINIMAL).unwrap();
        assert!(matches!(config.task, Task::Classify { top_k: 5 }));
        assert_eq!(config.capture.mode, Mode::Live);
        assert!(config.stdout.enabled && config.serial.is_none());
        let Source::Pipe { path, format, .. } = &config.source else {
            panic!("{:?}", config.source)
        };
        assert_eq!((path.to_str(), *format), (Some("-"), PixelFormat::I420));
        // The printed config parses back to the same config.
        let again = Config::parse(&config.to_toml()).unwrap();
        assert_eq!(again.to_toml(), config.to_toml());
    }

    #[test]
    fn an_unknown_key_is_named_with_what_was_expected() {
        let err = error(&MINIMAL.replace("width = 640", "widht = 640"));
        assert!(err.contains("widht"), "{err}");
        let err = error(&format!("{MINIMAL}\n[stdout]\nenable = true\n"));
        assert!(
            err.contains("unknown field `enable`, expected `enabled`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = error(&MINIMAL.replace("yuv420", "bgr48"));
        assert!(
            err.contains("unknown variant `bgr48`") && err.contains("nv12"),
            "{err}"
        );
        let err = error(&MINIMAL.replace("width = 640", "width = 639"));
        assert!(err.contains("even width"), "{err}");
        let serial = "[serial]\npath = \"/dev/ttyUSB0\"\nstop_bits = 3\n";
        let err = error(&format!("{MINIMAL}{serial}"));
        assert!(err.contains("serial.stop_bits: expected 1 or 2"), "{err}");
        let rule = "[[gpio.rules]]\npin = 17\naction = \"blink\"\nms = 5\n";
        let err = error(&format!("{MINIMAL}{rule}"));
        assert!(
            err.contains("unknown variant `blink`, expected `hold` or `pulse`"),
            "{err}"
        );
        let pi =
            "[gpio]\ndriver = \"rppal\"\n[[gpio.rules]]\npin = 40\naction = \"hold\"\nms = 5\n";
        let err = error(&format!("{MINIMAL}{pi}"));
        assert!(
            err.contains("gpio.rules[0].pin: the Raspberry Pi's header has GPIO 0 to 27"),
            "{err}"
        );
    }
}
