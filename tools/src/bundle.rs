//! Writes the quantized model as a bundle beside its float original's manifest.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgebone::Bundle;
use edgebone::model::{MANIFEST_FILE, sha256_hex};
use edgebone::onnx::{self, qdq::QParams};
use serde::Serialize;
use tract_onnx::pb::ModelProto;

use crate::calibrate::Range;

/// What `quantization.json` records: enough to see and reproduce every choice.
#[derive(Debug, Serialize)]
pub struct Record {
    pub source_network: String,
    pub source_sha256: String,
    pub method: String,
    pub percentile: Option<f64>,
    pub bias_correction: bool,
    pub calibration_images: usize,
    pub float_layers: Vec<String>,
    pub int8_layers: usize,
    /// Clamp outputs the layer now writes unclamped (see `qdq::Clamp`).
    pub folded_clamps: Vec<String>,
    pub activations: Vec<Activation>,
    /// With `--method auto`: every candidate's scores and the choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<crate::auto::Choice>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Activation {
    pub tensor: String,
    pub min: f32,
    pub max: f32,
    pub range: Range,
    pub qparams: QParams,
}

/// Writes network, manifest, labels and record into `out`; returns the bundle folder.
pub fn write(source: &Bundle, proto: &ModelProto, out: &Path, record: &Record) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("output folder {}", out.display()))?;
    let stem = Path::new(&source.manifest.network)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("network");
    let network = format!("{stem}_int8.onnx");
    let network_path = out.join(&network);
    onnx::save(proto, &network_path)?;
    let sha256 = sha256_hex(&network_path)?;
    if let Some(labels) = &source.manifest.labels {
        // Read and write rather than fs::copy: a read-only source file must not
        // make the copy read-only, or quantizing again into `out` fails.
        let from = source.dir.join(labels);
        let text = std::fs::read(&from).with_context(|| from.display().to_string())?;
        let to = out.join(labels);
        std::fs::write(&to, text).with_context(|| to.display().to_string())?;
    }
    let manifest_path = source.dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| manifest_path.display().to_string())?;
    let mut manifest: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| manifest_path.display().to_string())?;
    manifest["name"] = toml_edit::value(format!("{}_int8", source.manifest.name));
    manifest["network"] = toml_edit::value(network);
    manifest["sha256"] = toml_edit::value(sha256);
    retarget_taps(&mut manifest, &record.folded_clamps);
    let how = match &record.auto {
        Some(choice) => format!("auto: {}", choice.chosen),
        None => record.method.clone(),
    };
    let header = format!(
        "# int8 (QDQ) made by `quantize int8` from {} ({how} calibration, {} images);\n\
         # every activation range and scale is in quantization.json.\n",
        source.manifest.network, record.calibration_images
    );
    let manifest_out = out.join(MANIFEST_FILE);
    std::fs::write(&manifest_out, header + &manifest.to_string())
        .with_context(|| manifest_out.display().to_string())?;
    let record_path = out.join("quantization.json");
    std::fs::write(&record_path, serde_json::to_string_pretty(record)? + "\n")
        .with_context(|| record_path.display().to_string())?;
    Ok(out.to_path_buf())
}

/// A tap on a folded clamp's output must read the clamped values, which are now
/// the output of its dequantize step.
fn retarget_taps(manifest: &mut toml_edit::DocumentMut, folded: &[String]) {
    let Some(taps) = manifest
        .get_mut("taps")
        .and_then(|t| t.as_array_of_tables_mut())
    else {
        return;
    };
    for tap in taps.iter_mut() {
        let tensor = tap
            .get("tensor")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        if let Some(tensor) = tensor.filter(|t| folded.contains(t)) {
            tap["tensor"] = toml_edit::value(format!("{tensor}_dequantized"));
        }
    }
}
