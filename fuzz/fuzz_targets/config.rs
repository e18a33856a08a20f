//! `edgebone run`'s config file: parsed and checked; a config that passes
//! prints (`--print-config`) and parses back to the same text, and the times
//! `run` computes from it (a GPIO hold, the capture back-off, the taps period)
//! are ones the clock can hold, as `run` adds them to `Instant::now()`.
#![no_main]

use std::time::{Duration, Instant};

use edgebone_firmware::config::{Config, Task};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    let printed = config.to_toml();
    let again = Config::parse(&printed).expect("a printed config parses back");
    assert_eq!(again.to_toml(), printed);
    let now = Instant::now();
    for rule in &config.gpio.rules {
        let _ = now + Duration::from_millis(rule.ms);
    }
    let _ = now + Duration::from_millis(config.capture.retry_max_ms) * 2;
    if let Task::Features { taps_every_s, .. } = config.task {
        let _ = now + Duration::from_secs_f64(taps_every_s);
    }
});
