//! Image folders for calibration and evaluation, preprocessed exactly as the
//! runtime preprocesses camera frames.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgebone::RgbFrame;
use edgebone::model::InputSpec;
use edgebone::preprocess::Preprocessor;
use indicatif::{ProgressBar, ProgressStyle};
use tract_onnx::prelude::TValue;

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// The images of a folder, sorted by name so that every run sees them in the
/// same order.
pub fn list(dir: &Path, purpose: &str) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{purpose} folder {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("{purpose} folder {}", dir.display()))?
            .path();
        let image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if image && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!(
            "{purpose} folder {}: no images in it (expected .jpg, .jpeg or .png files)",
            dir.display()
        );
    }
    files.sort();
    Ok(files)
}

/// Class index per file name, from the folder's `labels.tsv` (file, class index,
/// … as in the ImageNet folders); `None` when the folder has no labels.
pub fn labels(dir: &Path) -> Result<Option<HashMap<String, usize>>> {
    let path = dir.join("labels.tsv");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let mut labels = HashMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let mut fields = line.split('\t');
        let (Some(file), Some(class)) = (fields.next(), fields.next()) else {
            continue;
        };
        let class = class.trim().parse().with_context(|| {
            format!(
                "{}: line {}: expected a class index, found {class:?}",
                path.display(),
                n + 1
            )
        })?;
        labels.insert(file.to_string(), class);
    }
    Ok(Some(labels))
}

/// Preprocesses each image and hands the tensor to `each`; an image that cannot
/// be read is reported and skipped. Returns how many were used.
pub fn for_each(
    files: &[PathBuf],
    spec: &InputSpec,
    message: &str,
    mut each: impl FnMut(&Path, TValue) -> Result<()>,
) -> Result<usize> {
    let mut pre = Preprocessor::new(spec, spec.width, spec.height);
    let bar = progress(files.len(), message);
    let mut used = 0;
    for path in files {
        bar.inc(1);
        let tensor = RgbFrame::open(path).and_then(|frame| pre.run(&frame));
        match tensor {
            Ok((tensor, _)) => {
                each(path, tensor)?;
                used += 1;
            }
            Err(err) => bar.suspend(|| log::warn!("skipped: {err}")),
        }
    }
    bar.finish_and_clear();
    Ok(used)
}

/// A progress bar over `len` images, on stderr.
pub fn progress(len: usize, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_message(message.to_string());
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}
