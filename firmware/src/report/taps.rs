//! Feature maps and the embedding as .npy files: `<name>.<tap>.npy` per map and
//! `<name>.embedding.npy`, where the name is the image file's stem or
//! `frame<number>` for camera frames.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edgebone::Results;

use super::Report;

/// Writes the maps of a report at most once per `every` (`Duration::ZERO`: all).
pub struct TapWriter {
    dir: PathBuf,
    every: Duration,
    written: Option<Instant>,
}

impl TapWriter {
    /// Creates `dir` if it is missing.
    pub fn new(dir: &Path, every: Duration) -> Result<TapWriter> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        Ok(TapWriter {
            dir: dir.to_path_buf(),
            every,
            written: None,
        })
    }

    pub fn write(&mut self, report: &Report) -> Result<()> {
        let Results::Features { maps, embedding } = &report.results else {
            return Ok(());
        };
        if self.written.is_some_and(|t| t.elapsed() < self.every) {
            return Ok(());
        }
        self.written = Some(Instant::now());
        let name = file_name(report)?;
        for map in maps {
            let shape: Vec<u64> = map.tensor.shape().iter().map(|d| *d as u64).collect();
            let path = self.dir.join(format!("{name}.{}.npy", map.name));
            write_array(&path, &shape, map.values())?;
        }
        let path = self.dir.join(format!("{name}.embedding.npy"));
        write_array(&path, &[embedding.len() as u64], embedding)
    }
}

fn file_name(report: &Report) -> Result<String> {
    let Some(image) = &report.image else {
        return Ok(format!("frame{:08}", report.frame));
    };
    match image.file_stem().and_then(|s| s.to_str()) {
        Some(stem) => Ok(stem.to_string()),
        None => bail!(
            "{}: no file name to name the .npy files after",
            image.display()
        ),
    }
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
