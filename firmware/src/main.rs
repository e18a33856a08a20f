//! `edgebone`: the program for the board.
//!
//! One-shot commands (`classify`, `detect`, `features`) run the given images
//! through the device loop of `run`: one JSON report per image on stdout, going
//! on past a bad image; logs go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgebone::Task;
use edgebone_firmware::{bench, inspect, oneshot, run};

#[derive(Parser)]
#[command(
    name = "edgebone",
    version,
    about = "Vision backbones on single-board computers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Top-k ImageNet-style classes for each image.
    Classify {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[command(flatten)]
        run: oneshot::FilesArgs,
    },
    /// YOLOv5 detections for each image, boxes in image pixels.
    Detect {
        #[arg(long)]
        model: PathBuf,
        /// Minimum score (objectness × class); the manifest's value by default.
        #[arg(long)]
        conf: Option<f32>,
        /// NMS IoU threshold; the manifest's value by default.
        #[arg(long)]
        iou: Option<f32>,
        #[command(flatten)]
        run: oneshot::FilesArgs,
    },
    /// Multi-scale feature maps and the pooled embedding for each image.
    Features {
        #[arg(long)]
        model: PathBuf,
        /// Input size WxH (multiples of 32); the manifest's size by default.
        #[arg(long, value_parser = oneshot::parse_size)]
        size: Option<(u32, u32)>,
        /// Write every map and the embedding as .npy files into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        run: oneshot::FilesArgs,
    },
    /// Named parameters with shapes, then inputs, outputs and feature taps.
    Inspect {
        /// A model bundle folder or an ONNX file.
        #[arg(long)]
        model: PathBuf,
    },
    /// The device program: frames from a camera, pipe, folder or video, in real
    /// time, reported on stdout, serial and GPIO as the config file says.
    Run(run::RunArgs),
    /// Times inference alone (median of many runs) and prints one JSON line.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify { model, top, run } => {
            oneshot::run(&model, Task::Classify { top_k: top }, None, None, &run)
        }
        Command::Detect {
            model,
            conf,
            iou,
            run,
        } => oneshot::run(&model, Task::Detect { conf, iou }, None, None, &run),
        Command::Features {
            model,
            size,
            out,
            run,
        } => oneshot::run(&model, Task::Features, size, out.as_deref(), &run),
        Command::Inspect { model } => inspect::run(&model),
        Command::Bench(args) => bench::run(&args),
        Command::Run(args) => run::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            log::error!("{err:#}");
            ExitCode::from(2)
        }
    }
}
