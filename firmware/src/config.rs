//! `edgebone run`'s one configuration file (TOML). Every key has a default except
//! the model; unknown keys are errors, so a typo cannot silently fall back.
//!
//! Each section's type, defaults and checks live with the code it configures
//! (`source`, `report::serial`, `report::gpio`, ...); this file assembles them
//! and checks what spans sections.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_inline_default::serde_inline_default;

use crate::report::gpio::GpioConfig;
use crate::report::serial::SerialConfig;
use crate::report::stdout::StdoutConfig;
use crate::source::{CaptureConfig, SourceConfig};
use crate::stats::StatsConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    #[serde(default)]
    pub task: Task,
    pub source: SourceConfig,
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

#[serde_inline_default]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A model bundle folder (manifest.toml, network, labels).
    pub bundle: PathBuf,
    #[serde_inline_default(DEFAULT_THREADS)]
    pub threads: u16,
    /// Float layers in half precision where the core has fp16 arithmetic.
    #[serde(default)]
    pub fp16: bool,
}

#[serde_inline_default]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Task {
    Classify {
        #[serde_inline_default(DEFAULT_TOP_K)]
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
        #[serde_inline_default(DEFAULT_TAPS_EVERY_S)]
        taps_every_s: f64,
    },
}

impl Default for Task {
    fn default() -> Self {
        Task::Classify {
            top_k: DEFAULT_TOP_K,
        }
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

const DEFAULT_THREADS: u16 = 1;
const DEFAULT_TOP_K: usize = 5;
const DEFAULT_TAPS_EVERY_S: f64 = 10.0;

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
        if let Some(path) = self.source.path_mut() {
            join(path);
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
        self.capture.validate()?;
        self.source.validate()?;
        // top_k, conf and iou are checked against the bundle when it loads.
        // NaN and infinity passed a `< 0.0` test and then panicked in
        // `Duration::from_secs_f64` when `run` started (audit, issue 16).
        if let Task::Features { taps_every_s, .. } = &self.task
            && !(*taps_every_s >= 0.0 && Duration::try_from_secs_f64(*taps_every_s).is_ok())
        {
            bail!("task.taps_every_s: expected a number of seconds ≥ 0")
        }
        if let Some(serial) = &self.serial {
            serial.validate()?;
        }
        if !self.gpio.rules.is_empty() && matches!(self.task, Task::Features { .. }) {
            bail!("gpio.rules: rules match classes or detections; the features task has neither");
        }
        self.gpio.validate()?;
        self.stats.validate()
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

#[cfg(test)]
mod tests {
    use edgebone::frame::PixelFormat;

    use super::*;
    use crate::source::{FolderConfig, Mode};

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
        assert!(matches!(
            config.source,
            SourceConfig::Folder(FolderConfig { fps: 30, .. })
        ));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = Config::parse(MINIMAL).unwrap();
        assert!(matches!(config.task, Task::Classify { top_k: 5 }));
        assert_eq!(config.capture.mode, Mode::Live);
        assert!(config.stdout.enabled && config.serial.is_none());
        let SourceConfig::Pipe(pipe) = &config.source else {
            panic!("{:?}", config.source)
        };
        assert_eq!(
            (pipe.path.to_str(), pipe.format),
            (Some("-"), PixelFormat::I420)
        );
        // The printed config parses back to the same config.
        let again = Config::parse(&config.to_toml()).unwrap();
        assert_eq!(again.to_toml(), config.to_toml());
    }

    #[test]
    fn the_printed_config_shows_every_default() {
        let printed = Config::parse(MINIMAL).unwrap().to_toml();
        let expected = r#"[model]
bundle = "models/mobilenet_v2"
threads = 1
fp16 = false

[task]
kind = "classify"
top_k = 5

[source]
kind = "pipe"
path = "-"
format = "i420"
width = 640
height = 480

[source.colour]
matrix = "bt601"
range = "limited"

[capture]
mode = "live"
retry_initial_ms = 200
retry_max_ms = 5000

[stdout]
enabled = true

[gpio]
driver = "log"
chip = "/dev/gpiochip0"
rules = []

[stats]
interval_s = 10.0
"#;
        assert_eq!(printed, expected);
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
        for every in ["nan", "inf", "-1.0", "1e300"] {
            let features = format!("[task]\nkind = \"features\"\ntaps_every_s = {every}\n");
            let err = error(&format!("{MINIMAL}{features}"));
            assert!(
                err.contains("task.taps_every_s: expected"),
                "{every}: {err}"
            );
        }
        let hold = "[[gpio.rules]]\npin = 17\naction = \"hold\"\nms = 18446744073709551615\n";
        let err = error(&format!("{MINIMAL}{hold}"));
        assert!(err.contains("gpio.rules[0].ms: expected at most"), "{err}");
        let retry = "[capture]\nretry_max_ms = 18446744073709551615\n";
        let err = error(&format!("{MINIMAL}{retry}"));
        assert!(
            err.contains("capture.retry_max_ms: expected at most"),
            "{err}"
        );
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
