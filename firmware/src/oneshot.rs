//! classify, detect, features: image files in, one JSON line per image out.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use edgebone::decode::features::FeatureSummary;
use edgebone::decode::{Class, Detection, FeatureMap};
use edgebone::model::Outputs;
use edgebone::{Bundle, Latency, ModelOptions, Pipeline, RgbFrame};
use serde::Serialize;

#[derive(Args)]
pub struct RunArgs {
    /// Threads for inference.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Image files (JPEG or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Classified<'a> {
    image: &'a Path,
    top: Vec<Class>,
    latency_ms: Latency,
}

#[derive(Serialize)]
struct Detected<'a> {
    image: &'a Path,
    detections: Vec<Detection>,
    latency_ms: Latency,
}

#[derive(Serialize)]
struct Features<'a> {
    image: &'a Path,
    features: Vec<FeatureSummary>,
    embedding_dim: usize,
    latency_ms: Latency,
}

pub fn classify(model: &Path, top: usize, args: &RunArgs) -> Result<ExitCode> {
    let mut pipeline = load(model, args, None, Outputs::Head)?;
    for_each_image(&args.images, |image, frame| {
        let (top, latency_ms) = pipeline.classify(frame, top)?;
        print_json(&Classified {
            image,
            top,
            latency_ms,
        })
    })
}

pub fn detect(
    model: &Path,
    conf: Option<f32>,
    iou: Option<f32>,
    args: &RunArgs,
) -> Result<ExitCode> {
    let mut pipeline = load(model, args, None, Outputs::Head)?;
    let defaults = &pipeline.bundle().manifest.output;
    let (conf, iou) = (conf.unwrap_or(defaults.conf), iou.unwrap_or(defaults.iou));
    for_each_image(&args.images, |image, frame| {
        let (detections, latency_ms) = pipeline.detect(frame, conf, iou)?;
        print_json(&Detected {
            image,
            detections,
            latency_ms,
        })
    })
}

pub fn features(
    model: &Path,
    size: Option<(u32, u32)>,
    out: Option<&Path>,
    args: &RunArgs,
) -> Result<ExitCode> {
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let mut pipeline = load(model, args, size, Outputs::Taps)?;
    for_each_image(&args.images, |image, frame| {
        let (maps, embedding, latency_ms) = pipeline.features(frame)?;
        if let Some(dir) = out {
            write_npy(dir, image, &maps, &embedding)?;
        }
        print_json(&Features {
            image,
            features: maps.iter().map(FeatureMap::summary).collect(),
            embedding_dim: embedding.len(),
            latency_ms,
        })
    })
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
            .filter(|n| *n > 0 && n % 32 == 0)
            .ok_or_else(|| format!("{v:?} in {text:?} is not a positive multiple of 32"))
    };
    Ok((parse(w)?, parse(h)?))
}

fn load(
    model: &Path,
    args: &RunArgs,
    size: Option<(u32, u32)>,
    outputs: Outputs,
) -> Result<Pipeline> {
    let bundle = Bundle::open(model)?;
    let options = ModelOptions {
        threads: args.threads.into(),
        input_size: size,
        outputs,
        integer: true,
    };
    Ok(Pipeline::load(bundle, &options)?)
}

/// Runs `job` on every image; a bad image is reported and skipped, and the exit
/// code says whether any failed.
fn for_each_image(
    images: &[PathBuf],
    mut job: impl FnMut(&Path, &RgbFrame) -> Result<()>,
) -> Result<ExitCode> {
    let mut failed = 0;
    for image in images {
        let result = RgbFrame::open(image)
            .map_err(anyhow::Error::from)
            .and_then(|frame| job(image, &frame).with_context(|| image.display().to_string()));
        if let Err(err) = result {
            log::error!("{err:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        log::error!("{failed} of {} image(s) failed", images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &impl Serialize) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(stdout.flush()?)
}

/// `<out>/<image stem>.<tap>.npy` for each map and `<image stem>.embedding.npy`.
fn write_npy(dir: &Path, image: &Path, maps: &[FeatureMap], embedding: &[f32]) -> Result<()> {
    let Some(stem) = image.file_stem().and_then(|s| s.to_str()) else {
        bail!(
            "{}: no file name to name the .npy files after",
            image.display()
        );
    };
    for map in maps {
        write_npy_map(&dir.join(format!("{stem}.{}.npy", map.name)), map)?;
    }
    write_array(
        &dir.join(format!("{stem}.embedding.npy")),
        &[embedding.len() as u64],
        embedding,
    )
}

pub fn write_npy_map(path: &Path, map: &FeatureMap) -> Result<()> {
    let shape: Vec<u64> = map.tensor.shape().iter().map(|d| *d as u64).collect();
    write_array(path, &shape, map.values())
}

fn write_array(path: &Path, shape: &[u64], values: &[f32]) -> Result<()> {
    use npyz::WriterBuilder;
    let file = std::fs::File::create(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    writer.extend(values.iter().copied())?;
    writer
        .finish()
        .with_context(|| format!("{}: write failed", path.display()))
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
    }
}
