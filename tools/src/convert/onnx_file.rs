//! `quantize convert model.onnx --arch ARCH`: an ONNX file where a checkpoint
//! would be. The network is copied as it is (same bytes, same sha256); `--arch`
//! says which preprocessing and output decoding the manifest gets, the graph
//! gives the input and output names and the input size, and the taps are the
//! ones `convert` names for that architecture, kept where the file has them
//! (a `torch.onnx.export` of torchvision or Ultralytics code names its tensors
//! the same way).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgebone::inspect::Port;
use edgebone::model::sha256_hex;
use edgebone::onnx::{self, Index};

use super::{
    Arch, Ports, Tap, classifier_manifest, from_formula, imagenet_labels, write_manifest, yolov5,
    yolov5_manifest,
};

/// COCO's 80 names, as the shipped YOLOv5n bundle has them, for an 80-class
/// YOLOv5 file given without `--labels`.
const COCO_LABELS: &str = include_str!("../../../models/yolov5n/labels.txt");

/// The CSPDarknet taps of YOLOv5 v6.0+ (the shipped bundle's), by the
/// exporter's names.
const YOLOV5_TAPS: [(&str, &str, u32); 4] = [
    ("model.2", "/model.2/cv3/act/Mul_output_0", 4),
    ("model.4", "/model.4/cv3/act/Mul_output_0", 8),
    ("model.6", "/model.6/cv3/act/Mul_output_0", 16),
    ("model.9", "/model.9/cv2/act/Mul_output_0", 32),
];

/// A dimension of a port, when the file fixes it.
fn dim(port: &Port, i: usize) -> Option<usize> {
    port.shape.get(i).and_then(|d| d.parse().ok())
}

/// Writes a bundle around `file` into `out`; `labels` replaces the default
/// class names (ImageNet's for 1000 classes, COCO's for an 80-class YOLOv5).
pub fn wrap(file: &Path, arch: Arch, labels: Option<Vec<String>>, out: &Path) -> Result<PathBuf> {
    let info = edgebone::inspect::inspect(file)?;
    let proto = onnx::load(file)?;
    let graph = proto.graph.as_ref().expect("load checks for a graph");
    let index = Index::new(graph);
    let [input] = info.inputs.as_slice() else {
        bail!(
            "{}: {} graph inputs, one image input expected",
            file.display(),
            info.inputs.len()
        );
    };
    let output = info
        .outputs
        .first()
        .with_context(|| format!("{}: the graph has no output", file.display()))?;
    let (default_size, wanted_taps): (usize, Vec<Tap>) = if arch.is_yolov5() {
        let taps = YOLOV5_TAPS
            .iter()
            .map(|&(name, tensor, stride)| Tap {
                name: name.into(),
                tensor: tensor.into(),
                stride,
            })
            .collect();
        (yolov5::INPUT, taps)
    } else {
        (224, from_formula(arch, Some(0))?.taps)
    };
    let (height, width) = (
        dim(input, 2).unwrap_or(default_size),
        dim(input, 3).unwrap_or(default_size),
    );
    let mut taps = Vec::new();
    for tap in wanted_taps {
        if index.producer(&tap.tensor).is_some() {
            taps.push(tap);
        } else {
            log::warn!(
                "tap {} left out: {} has no tensor {}",
                tap.name,
                file.display(),
                tap.tensor
            );
        }
    }
    let ports = Ports {
        input: &input.name,
        output: &output.name,
        width,
        height,
    };
    let classes = if arch.is_yolov5() {
        // [1, rows, 5 + classes]
        dim(output, 2).and_then(|c| c.checked_sub(5))
    } else {
        dim(output, 1)
    }
    .with_context(|| {
        format!(
            "{}: output {} of shape [{}] does not fix the class count an --arch {} output has",
            file.display(),
            output.name,
            output.shape.join(", "),
            arch.name()
        )
    })?;
    let labels = match labels {
        Some(labels) if labels.len() != classes => bail!(
            "--labels has {} names but the network's output has {classes} classes",
            labels.len()
        ),
        Some(labels) => Some(labels),
        None if arch.is_yolov5() && classes == 80 => {
            Some(COCO_LABELS.lines().map(str::to_string).collect())
        }
        None if arch.is_yolov5() => Some((0..classes).map(|i| format!("class{i}")).collect()),
        None => imagenet_labels(classes),
    };

    std::fs::create_dir_all(out).with_context(|| format!("output folder {}", out.display()))?;
    let network = file
        .file_name()
        .and_then(|n| n.to_str())
        .context("the ONNX file has no name")?
        .to_string();
    let copy = out.join(&network);
    if copy.canonicalize().ok() != file.canonicalize().ok() {
        let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
        std::fs::write(&copy, bytes).with_context(|| copy.display().to_string())?;
    }
    let sha256 = sha256_hex(&copy)?;
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(arch.name());
    let header = format!(
        "# {network} wrapped by `quantize convert --arch {}` (the file as it is).\n",
        arch.name()
    );
    let text = if arch.is_yolov5() {
        yolov5_manifest(name, &network, &sha256, &ports, &taps)
    } else {
        classifier_manifest(name, &network, &sha256, labels.is_some(), &ports, &taps)
    };
    write_manifest(out, &(header + &text), labels.as_deref())
}
