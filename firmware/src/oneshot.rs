//! classify, detect, features: the given image files, in order, through the same
//! loop as `edgebone run`, one JSON report per image on stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use edgebone::frame::MAX_SIDE;
use edgebone::{Bundle, ModelOptions, Pipeline, Task};

use crate::report::Reporter;
use crate::report::taps::TapWriter;
use crate::run::Device;
use crate::source::{CaptureConfig, Mode};
use crate::source::{Folder, Input};
use crate::stats::StatsConfig;

#[derive(Args)]
pub struct FilesArgs {
    /// Threads for inference.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Float layers in half precision, on cores with fp16 arithmetic (Pi 5, Jetson Orin).
    #[arg(long)]
    pub fp16: bool,
    /// Image files (JPEG or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Runs `task` on the images at the model's input size or `size`, writing
/// feature maps into `out` if given. Exit code 1 when any image failed (each got
/// its own error line), 0 otherwise.
pub fn run(
    model: &Path,
    task: Task,
    size: Option<(u32, u32)>,
    out: Option<&Path>,
    args: &FilesArgs,
) -> Result<ExitCode> {
    let options = ModelOptions {
        threads: args.threads.into(),
        input_size: size,
        fp16: args.fp16,
        ..Default::default()
    };
    let pipeline = Pipeline::load(Bundle::open(model)?, task, &options)?;
    let taps = out
        .map(|dir| TapWriter::new(dir, Duration::ZERO))
        .transpose()?;
    let input = Input {
        opened: Some(Box::new(Folder::from_files(args.images.clone()))),
        reopen: None,
        capture: CaptureConfig {
            mode: Mode::EveryFrame,
            ..Default::default()
        },
    };
    let device = Device {
        pipeline,
        input,
        reporter: Reporter::stdout(),
        taps,
        stats_every: Duration::from_secs_f64(StatsConfig::default().interval_s),
        reload: None,
    };
    let failed = device.run()?;
    if failed > 0 {
        log::error!("{failed} of {} image(s) failed", args.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `WxH`, both multiples of 32 so every stride up to 32 divides the input.
pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT such as 640x640, got {text:?}"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0 && n % 32 == 0 && *n <= MAX_SIDE)
            .ok_or_else(|| {
                format!("{v:?} in {text:?} is not a positive multiple of 32 up to {MAX_SIDE}")
            })
    };
    Ok((parse(w)?, parse(h)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_multiples_of_32() {
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert!(
            parse_size("641x480")
                .unwrap_err()
                .contains("multiple of 32")
        );
        assert!(parse_size("640").unwrap_err().contains("WIDTHxHEIGHT"));
        // Audit (issue 16): the preprocessor's u32 buffer sizes overflowed.
        assert!(
            parse_size("4294967264x32")
                .unwrap_err()
                .contains("up to 8192")
        );
    }
}
