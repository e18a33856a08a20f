//! GPIO rules: `class "person" with score ≥ 0.6 → pin 17 high, held 500 ms after
//! the last match`, `any detection → pulse pin 27 for 50 ms`. Pins are driven
//! through embedded-hal's `OutputPin`: rppal on a Pi, the GPIO character device
//! (gpiocdev) elsewhere, or a logging pin without hardware.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use embedded_hal::digital::{ErrorType, OutputPin, PinState};
use serde::{Deserialize, Serialize};

/// The longest hold or pulse: a day.
const MAX_RULE_MS: u64 = 24 * 60 * 60 * 1000;

/// The `[gpio]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpioConfig {
    pub driver: GpioDriver,
    /// The GPIO character device for `driver = "cdev"`.
    pub chip: PathBuf,
    pub rules: Vec<RuleConfig>,
}

const DEFAULT_CHIP: &str = "/dev/gpiochip0";

impl Default for GpioConfig {
    fn default() -> Self {
        GpioConfig {
            driver: GpioDriver::default(),
            chip: DEFAULT_CHIP.into(),
            rules: Vec::new(),
        }
    }
}

/// The highest BCM number on the Pi's 40-pin header.
const PI_HEADER_LAST_GPIO: u32 = 27;

impl GpioConfig {
    pub fn validate(&self) -> Result<()> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&rule.min_score) {
                bail!("gpio.rules[{i}].min_score: expected a number from 0 to 1");
            }
            if rule.ms == 0 {
                bail!("gpio.rules[{i}].ms: expected a positive number of milliseconds");
            }
            // `now + ms` must stay a time the clock can hold (audit, issue 16:
            // u64::MAX ms overflowed `Instant` and panicked on the first match).
            if rule.ms > MAX_RULE_MS {
                bail!("gpio.rules[{i}].ms: expected at most {MAX_RULE_MS} (a day)");
            }
            if self.driver == GpioDriver::Rppal && rule.pin > PI_HEADER_LAST_GPIO {
                bail!(
                    "gpio.rules[{i}].pin: the Raspberry Pi's header has GPIO 0 to {PI_HEADER_LAST_GPIO} (BCM numbering), not {}",
                    rule.pin
                );
            }
        }
        // One pin cannot rest at two levels.
        for (i, a) in self.rules.iter().enumerate() {
            let clash = self.rules[..i]
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

/// One `[[gpio.rules]]` entry.
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
    #[serde(default)]
    pub active: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Hold,
    Pulse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    High,
    Low,
}

/// An `OutputPin` of any driver, its error made printable.
pub trait Pin: Send {
    fn set(&mut self, high: bool) -> Result<(), String>;
}

/// Adapts any embedded-hal output pin.
pub struct Hal<P>(pub P);

impl<P> Pin for Hal<P>
where
    P: OutputPin + Send,
    P::Error: std::fmt::Debug,
{
    fn set(&mut self, high: bool) -> Result<(), String> {
        self.0
            .set_state(PinState::from(high))
            .map_err(|e| format!("{e:?}"))
    }
}

/// A pin without hardware that logs its level changes (demos, tests, dry runs).
pub struct LogPin(pub u32);

impl ErrorType for LogPin {
    type Error = Infallible;
}

impl OutputPin for LogPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        log::info!("gpio {}: low", self.0);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        log::info!("gpio {}: high", self.0);
        Ok(())
    }
}

struct Output {
    number: u32,
    active: Level,
    pin: Box<dyn Pin>,
    /// The level last written: `Some(true)` when active.
    on: Option<bool>,
}

struct Rule {
    config: RuleConfig,
    output: usize,
    until: Option<Instant>,
}

/// The rules and their pins; time is passed in, so the timeline is testable.
pub struct Rules {
    rules: Vec<Rule>,
    outputs: Vec<Output>,
}

impl Rules {
    /// `pin` opens one pin number; every pin is set to its safe level at once.
    pub fn new(
        configs: &[RuleConfig],
        mut pin: impl FnMut(u32, PinState) -> Result<Box<dyn Pin>>,
    ) -> Result<Rules> {
        let mut outputs: Vec<Output> = Vec::new();
        let mut rules = Vec::new();
        for config in configs {
            let output = match outputs.iter().position(|o| o.number == config.pin) {
                Some(i) => i,
                None => {
                    let safe = PinState::from(config.active == Level::Low);
                    outputs.push(Output {
                        number: config.pin,
                        active: config.active,
                        pin: pin(config.pin, safe)
                            .with_context(|| format!("pin {}", config.pin))?,
                        on: None,
                    });
                    outputs.len() - 1
                }
            };
            rules.push(Rule {
                config: config.clone(),
                output,
                until: None,
            });
        }
        let mut rules = Rules { rules, outputs };
        rules.rest();
        Ok(rules)
    }

    /// One processed frame's classes or detections, as (label, score).
    pub fn on_results(&mut self, now: Instant, hits: &[(String, f32)]) {
        for rule in &mut self.rules {
            let c = &rule.config;
            let matched = hits.iter().any(|(label, score)| {
                *score >= c.min_score && c.class.as_ref().is_none_or(|want| want == label)
            });
            if !matched {
                continue;
            }
            let length = Duration::from_millis(c.ms);
            match c.action {
                Action::Hold => rule.until = Some(now + length),
                // A pulse runs its length; a match during it does not stretch it.
                Action::Pulse if rule.until.is_none_or(|u| u <= now) => {
                    rule.until = Some(now + length)
                }
                Action::Pulse => {}
            }
        }
        self.apply(now);
    }

    /// Ends holds and pulses whose time is up.
    pub fn tick(&mut self, now: Instant) {
        self.apply(now);
    }

    /// When a pin will next change by itself.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        self.rules
            .iter()
            .filter_map(|r| r.until)
            .filter(|u| *u > now)
            .min()
    }

    /// Every pin to its safe level (at start and at exit).
    pub fn rest(&mut self) {
        for rule in &mut self.rules {
            rule.until = None;
        }
        for output in &mut self.outputs {
            write(output, false);
        }
    }

    fn apply(&mut self, now: Instant) {
        for (i, output) in self.outputs.iter_mut().enumerate() {
            let on = self
                .rules
                .iter()
                .any(|r| r.output == i && r.until.is_some_and(|u| u > now));
            if output.on != Some(on) {
                write(output, on);
            }
        }
    }
}

fn write(output: &mut Output, on: bool) {
    let high = on == (output.active == Level::High);
    match output.pin.set(high) {
        Ok(()) => output.on = Some(on),
        // Keep going: the next frame tries again, other outputs still work.
        Err(err) => log::error!("gpio {}: cannot set: {err}", output.number),
    }
}

/// Opens a pin of the configured driver at its safe level.
fn open_pin(config: &GpioConfig, number: u32, safe: PinState) -> Result<Box<dyn Pin>> {
    match config.driver {
        GpioDriver::Log => {
            let mut pin = LogPin(number);
            let _ = pin.set_state(safe);
            Ok(Box::new(Hal(pin)))
        }
        GpioDriver::Cdev => {
            let pin = gpiocdev_embedded_hal::OutputPin::new(&config.chip, number, safe)
                .map_err(|e| anyhow::anyhow!("{}: line {number}: {e}", config.chip.display()))?;
            Ok(Box::new(Hal(pin)))
        }
        GpioDriver::Rppal => open_rppal(number, safe),
    }
}

#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
fn open_rppal(number: u32, safe: PinState) -> Result<Box<dyn Pin>> {
    let gpio = rppal::gpio::Gpio::new().context("rppal (is this a Raspberry Pi?)")?;
    let bcm = u8::try_from(number).map_err(|_| anyhow::anyhow!("no GPIO {number} on a Pi"))?;
    let pin = gpio.get(bcm).with_context(|| {
        format!("GPIO {number} (BCM numbering, 0–{PI_HEADER_LAST_GPIO} on the header)")
    })?;
    let pin = match safe {
        PinState::High => pin.into_output_high(),
        PinState::Low => pin.into_output_low(),
    };
    Ok(Box::new(Hal(pin)))
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
fn open_rppal(_number: u32, _safe: PinState) -> Result<Box<dyn Pin>> {
    anyhow::bail!(
        "driver \"rppal\" is the Raspberry Pi's GPIO, only in ARM builds; use \"cdev\" or \"log\""
    )
}

/// The rules on their own thread, so hold and pulse ends happen on time even
/// between frames.
pub struct Gpio {
    tx: Sender<(Instant, Vec<(String, f32)>)>,
    thread: JoinHandle<()>,
}

impl Gpio {
    pub fn start(config: &GpioConfig) -> Result<Gpio> {
        let rules = Rules::new(&config.rules, |n, safe| open_pin(config, n, safe))?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("gpio".into())
            .spawn(move || run(rules, rx))
            .context("spawning the gpio thread")?;
        Ok(Gpio { tx, thread })
    }

    pub fn send(&self, hits: Vec<(String, f32)>) {
        let _ = self.tx.send((Instant::now(), hits));
    }

    /// Pins to their safe levels; waits for the thread until `deadline`.
    pub fn finish(self, deadline: Instant) {
        drop(self.tx);
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            log::warn!("gpio: pins not confirmed safe at exit");
        }
    }
}

fn run(mut rules: Rules, rx: Receiver<(Instant, Vec<(String, f32)>)>) {
    loop {
        let now = Instant::now();
        let wait = rules
            .next_change(now)
            .map_or(Duration::from_secs(3600), |t| t - now);
        match rx.recv_timeout(wait) {
            Ok((at, hits)) => rules.on_results(at, &hits),
            Err(RecvTimeoutError::Timeout) => rules.tick(Instant::now()),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    rules.rest();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Timeline = Arc<Mutex<Vec<(u32, u64, bool)>>>;

    /// Records (pin, ms since t0, level) through the embedded-hal trait.
    struct RecordingPin {
        number: u32,
        t0: Instant,
        now: Arc<Mutex<Instant>>,
        timeline: Timeline,
    }

    impl ErrorType for RecordingPin {
        type Error = Infallible;
    }

    impl OutputPin for RecordingPin {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.record(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            self.record(true);
            Ok(())
        }
    }

    impl RecordingPin {
        fn record(&self, high: bool) {
            let ms = (*self.now.lock().unwrap() - self.t0).as_millis() as u64;
            self.timeline.lock().unwrap().push((self.number, ms, high));
        }
    }

    fn rule(class: Option<&str>, pin: u32, action: Action, ms: u64) -> RuleConfig {
        RuleConfig {
            class: class.map(Into::into),
            min_score: 0.6,
            pin,
            action,
            ms,
            active: Level::High,
        }
    }

    #[test]
    fn hold_and_pulse_follow_the_expected_timeline() {
        let t0 = Instant::now();
        let now = Arc::new(Mutex::new(t0));
        let timeline = Timeline::default();
        let configs = [
            rule(Some("person"), 17, Action::Hold, 500),
            rule(None, 27, Action::Pulse, 50),
        ];
        let mut rules = Rules::new(&configs, |number, _| {
            Ok(Box::new(Hal(RecordingPin {
                number,
                t0,
                now: now.clone(),
                timeline: timeline.clone(),
            })))
        })
        .unwrap();
        let person = |score: f32| vec![("person".to_string(), score)];
        let mut step = |ms: u64, hits: Option<Vec<(String, f32)>>| {
            let t = t0 + Duration::from_millis(ms);
            *now.lock().unwrap() = t;
            match hits {
                Some(hits) => rules.on_results(t, &hits),
                None => rules.tick(t),
            }
        };
        step(0, Some(vec![])); // nothing: pins stay low
        step(100, Some(person(0.9))); // 17 held, 27 pulses
        step(120, Some(person(0.5))); // too weak to match
        step(130, Some(person(0.7))); // extends the hold; 27 is mid-pulse
        step(150, None); // 27's pulse ends
        step(300, Some(vec![("dog".into(), 0.8)])); // 27 pulses again
        step(350, None);
        step(629, None); // 17 still held (until 630)
        step(630, None); // released
        rules.rest();
        let got = timeline.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (17, 0, false), // safe level at start
                (27, 0, false),
                (17, 100, true),
                (27, 100, true),
                (27, 150, false),
                (27, 300, true),
                (27, 350, false),
                (17, 630, false),
                (17, 630, false), // safe level at exit
                (27, 630, false),
            ]
        );
    }

    #[test]
    fn an_active_low_pin_rests_high() {
        let timeline = Timeline::default();
        let t0 = Instant::now();
        let now = Arc::new(Mutex::new(t0));
        let mut config = rule(None, 4, Action::Hold, 10);
        config.active = Level::Low;
        let mut rules = Rules::new(&[config], |number, _| {
            Ok(Box::new(Hal(RecordingPin {
                number,
                t0,
                now: now.clone(),
                timeline: timeline.clone(),
            })))
        })
        .unwrap();
        rules.on_results(t0, &[("cat".into(), 0.9)]);
        assert_eq!(rules.next_change(t0), Some(t0 + Duration::from_millis(10)));
        rules.tick(t0 + Duration::from_millis(10));
        let levels: Vec<bool> = timeline.lock().unwrap().iter().map(|e| e.2).collect();
        assert_eq!(levels, vec![true, false, true]);
    }

    fn gpio(text: &str) -> GpioConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn an_absent_section_has_the_documented_defaults() {
        let config = gpio("");
        assert_eq!(config.driver, GpioDriver::Log);
        assert_eq!(config.chip, PathBuf::from("/dev/gpiochip0"));
        assert!(config.rules.is_empty());
        let rule: RuleConfig = toml::from_str("pin = 4\naction = \"hold\"\nms = 5").unwrap();
        assert_eq!((rule.active, rule.min_score), (Level::High, 0.0));
    }

    #[test]
    fn rules_are_checked_with_their_index() {
        let hold = |pin: u32, active: &str| {
            format!("[[rules]]\npin = {pin}\naction = \"hold\"\nms = 5\nactive = \"{active}\"\n")
        };
        let error = |text: &str| gpio(text).validate().unwrap_err().to_string();
        let pi = "driver = \"rppal\"\n";
        gpio(&format!("{pi}{}", hold(27, "high")))
            .validate()
            .unwrap();
        assert_eq!(
            error(&format!("{pi}{}{}", hold(4, "high"), hold(28, "high"))),
            "gpio.rules[1].pin: the Raspberry Pi's header has GPIO 0 to 27 (BCM numbering), not 28"
        );
        // A chip's line offsets go past the Pi's header.
        gpio(&format!("driver = \"cdev\"\n{}", hold(40, "high")))
            .validate()
            .unwrap();
        assert_eq!(
            error(&format!(
                "{}{}{}",
                hold(5, "high"),
                hold(6, "low"),
                hold(5, "low")
            )),
            "gpio.rules[2]: pin 5 has rules with different active levels"
        );
        gpio(&format!("{}{}", hold(5, "low"), hold(5, "low")))
            .validate()
            .unwrap();
        assert_eq!(
            error(&format!("{}min_score = 1.5\n", hold(5, "high"))),
            "gpio.rules[0].min_score: expected a number from 0 to 1"
        );
        assert_eq!(
            error(&hold(5, "high").replace("ms = 5", "ms = 0")),
            "gpio.rules[0].ms: expected a positive number of milliseconds"
        );
    }

    #[test]
    fn a_pin_that_does_not_open_is_named() {
        let config = GpioConfig {
            driver: GpioDriver::Cdev,
            chip: "/dev/gpiochip-missing".into(),
            rules: vec![rule(None, 17, Action::Hold, 10)],
        };
        let err = Gpio::start(&config).err().unwrap();
        let text = format!("{err:#}");
        assert!(
            text.contains("pin 17") && text.contains("/dev/gpiochip-missing"),
            "{text}"
        );
    }
}
