//! `quantize convert`: a torchvision state_dict, or an Ultralytics YOLOv5
//! model object, to an edgebone bundle. The graph is built here, layer by
//! layer, from the architecture's definition (YOLOv5's from the yaml its `.pt`
//! pickles); the checkpoint only supplies weights, each checked by name and
//! shape.

mod arch;
mod formula;
mod graph;
mod onnx_file;
#[cfg(test)]
pub(crate) mod tests;
mod yolov5;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgebone::model::{MANIFEST_FILE, sha256_hex};
use edgebone::onnx;
use tract_onnx::pb::ModelProto;

use crate::torch::{Checkpoint, StateDict};
pub use graph::Weights;
pub use onnx_file::wrap as from_onnx;

/// torchvision's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "resnet18")]
    Resnet18,
    #[value(name = "resnet34")]
    Resnet34,
    #[value(name = "resnet50")]
    Resnet50,
    #[value(name = "mobilenet_v2")]
    MobilenetV2,
    #[value(name = "mobilenet_v3_small")]
    MobilenetV3Small,
    #[value(name = "mobilenet_v3_large")]
    MobilenetV3Large,
    #[value(name = "efficientnet_b0")]
    EfficientnetB0,
    #[value(name = "densenet121")]
    Densenet121,
    #[value(name = "vgg16")]
    Vgg16,
    /// An Ultralytics YOLOv5 model of any size (depth and width from its yaml).
    #[value(name = "yolov5")]
    Yolov5,
    /// The same, checked to be the published size.
    #[value(name = "yolov5n")]
    Yolov5n,
    #[value(name = "yolov5s")]
    Yolov5s,
    #[value(name = "yolov5m")]
    Yolov5m,
    #[value(name = "yolov5l")]
    Yolov5l,
    #[value(name = "yolov5x")]
    Yolov5x,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
            Arch::MobilenetV2 => "mobilenet_v2",
            Arch::MobilenetV3Small => "mobilenet_v3_small",
            Arch::MobilenetV3Large => "mobilenet_v3_large",
            Arch::EfficientnetB0 => "efficientnet_b0",
            Arch::Densenet121 => "densenet121",
            Arch::Vgg16 => "vgg16",
            Arch::Yolov5 => "yolov5",
            Arch::Yolov5n => "yolov5n",
            Arch::Yolov5s => "yolov5s",
            Arch::Yolov5m => "yolov5m",
            Arch::Yolov5l => "yolov5l",
            Arch::Yolov5x => "yolov5x",
        }
    }

    pub fn is_yolov5(self) -> bool {
        matches!(
            self,
            Arch::Yolov5
                | Arch::Yolov5n
                | Arch::Yolov5s
                | Arch::Yolov5m
                | Arch::Yolov5l
                | Arch::Yolov5x
        )
    }
}

/// A feature map the manifest exposes: torchvision's module name, the tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tap {
    pub name: String,
    pub tensor: String,
    pub stride: u32,
}

#[derive(Debug)]
pub struct Converted {
    pub model: ModelProto,
    pub taps: Vec<Tap>,
    pub classes: usize,
    /// The class names the checkpoint carries (YOLOv5's `names`); `None` for a
    /// torchvision state_dict, which has none.
    pub labels: Option<Vec<String>>,
}

/// A checkpoint as `arch`: a state_dict for torchvision's architectures, the
/// pickled model object for YOLOv5.
pub fn from_checkpoint(arch: Arch, checkpoint: &Checkpoint) -> Result<Converted> {
    match (&checkpoint.model, arch.is_yolov5()) {
        (Some(model), true) => from_yolov5(arch, model, &checkpoint.state_dict),
        (None, true) => bail!(
            "--arch {}: the checkpoint is a bare state_dict, but YOLOv5 is built from the \
             model object an Ultralytics .pt pickles (its yaml, names and stride)",
            arch.name()
        ),
        (Some(model), false) if model.attributes.contains_key("yaml") => bail!(
            "the checkpoint pickles a {} with a yaml (an Ultralytics model), not a {} \
             state_dict: use --arch yolov5",
            model.class,
            arch.name()
        ),
        _ => from_state_dict(arch, &checkpoint.state_dict),
    }
}

fn from_yolov5(arch: Arch, model: &crate::torch::Module, sd: &StateDict) -> Result<Converted> {
    let yolo = yolov5::Yolo::read(model, arch)?;
    let mut g = graph::Graph::new(Weights::Checkpoint {
        arch: arch.name(),
        state_dict: sd,
        used: Default::default(),
    });
    let (output, rows, taps) = yolov5::build(&mut g, model, &yolo)?;
    let size = yolov5::INPUT as i64;
    let model = g.finish_as(
        &output,
        "output0",
        &[1, 3, size, size],
        &[1, rows as i64, yolo.classes as i64 + 5],
    )?;
    log::info!(
        "YOLOv5 from the pickled yaml: depth_multiple {}, width_multiple {}, {} classes, strides {:?}",
        yolo.depth,
        yolo.width,
        yolo.classes,
        yolo.strides
    );
    Ok(Converted {
        model,
        taps,
        classes: yolo.classes,
        labels: Some(yolo.names),
    })
}

pub fn from_state_dict(arch: Arch, state_dict: &StateDict) -> Result<Converted> {
    build(
        arch,
        Weights::Checkpoint {
            arch: arch.name(),
            state_dict,
            used: Default::default(),
        },
    )
}

/// The architecture with formula weights (`seed: None` is the shared golden
/// formula itself).
pub fn from_formula(arch: Arch, seed: Option<u64>) -> Result<Converted> {
    build(arch, Weights::Formula { seed })
}

fn build(arch: Arch, weights: Weights) -> Result<Converted> {
    if arch.is_yolov5() {
        bail!(
            "--arch {}: YOLOv5 is built from a .pt's pickled model (its yaml), so it needs \
             the checkpoint; seeded weights are for torchvision's architectures",
            arch.name()
        );
    }
    let mut g = graph::Graph::new(weights);
    let (logits, taps) = match arch {
        Arch::Resnet18 => arch::resnet(&mut g, [2, 2, 2, 2], false)?,
        Arch::Resnet34 => arch::resnet(&mut g, [3, 4, 6, 3], false)?,
        Arch::Resnet50 => arch::resnet(&mut g, [3, 4, 6, 3], true)?,
        Arch::MobilenetV2 => arch::mobilenet_v2(&mut g)?,
        Arch::MobilenetV3Small => arch::mobilenet_v3(&mut g, false)?,
        Arch::MobilenetV3Large => arch::mobilenet_v3(&mut g, true)?,
        Arch::EfficientnetB0 => arch::efficientnet_b0(&mut g)?,
        Arch::Densenet121 => arch::densenet121(&mut g)?,
        Arch::Vgg16 => arch::vgg16(&mut g)?,
        _ => unreachable!("YOLOv5 is refused above"),
    };
    let (model, classes) = g.finish(&logits)?;
    Ok(Converted {
        model,
        taps,
        classes,
        labels: None,
    })
}

/// The ImageNet class names of the shipped MobileNetV2 bundle (torchvision's
/// index order), for any 1000-class head.
const IMAGENET_LABELS: &str = include_str!("../../../models/mobilenet_v2/labels.txt");

/// The input and output a manifest names, and the input's size.
pub(crate) struct Ports<'a> {
    pub input: &'a str,
    pub output: &'a str,
    pub width: usize,
    pub height: usize,
}

/// Writes `DIR/{arch}.onnx`, `manifest.toml` (torchvision's eval preprocessing,
/// or Ultralytics' letterbox for YOLOv5; the taps, the sha256) and the labels:
/// the checkpoint's own, else ImageNet's for a 1000-class head.
pub fn write_bundle(
    arch: Arch,
    converted: &Converted,
    out: &Path,
    origin: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("output folder {}", out.display()))?;
    let network = format!("{}.onnx", arch.name());
    let network_path = out.join(&network);
    onnx::save(&converted.model, &network_path)?;
    let sha256 = sha256_hex(&network_path)?;
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(arch.name());
    if arch.is_yolov5() {
        let size = yolov5::INPUT;
        let ports = Ports {
            input: "input",
            output: "output0",
            width: size,
            height: size,
        };
        let header = format!(
            "# Ultralytics YOLOv5 converted by `quantize convert` from {origin}:\n\
             # the layers its pickled yaml lists, Detect decoded as Ultralytics' export does.\n"
        );
        let labels = converted.labels.as_deref().unwrap_or_default();
        let text = header + &yolov5_manifest(name, &network, &sha256, &ports, &converted.taps);
        return write_manifest(out, &text, Some(labels));
    }
    let ports = Ports {
        input: "input",
        output: "logits",
        width: 224,
        height: 224,
    };
    let header = format!(
        "# torchvision {} converted by `quantize convert` from {origin}.\n",
        arch.name()
    );
    let labels = imagenet_labels(converted.classes);
    let text = header
        + &classifier_manifest(
            name,
            &network,
            &sha256,
            labels.is_some(),
            &ports,
            &converted.taps,
        );
    write_manifest(out, &text, labels.as_deref())
}

/// ImageNet's names for a 1000-class head; none for another count.
pub(crate) fn imagenet_labels(classes: usize) -> Option<Vec<String>> {
    (classes == 1000).then(|| IMAGENET_LABELS.lines().map(str::to_string).collect())
}

/// torchvision's eval transform, the classifier output and the taps.
pub(crate) fn classifier_manifest(
    name: &str,
    network: &str,
    sha256: &str,
    labels: bool,
    ports: &Ports,
    taps: &[Tap],
) -> String {
    let labels = if labels {
        "labels = \"labels.txt\"\n"
    } else {
        ""
    };
    let mut text = format!(
        "name = {name:?}\n\
         network = {network:?}\n\
         sha256 = {sha256:?}\n\
         {labels}\n\
         # torchvision's eval transform: Resize(256) antialiased, CenterCrop(224), ImageNet mean/std.\n\
         [input]\n\
         name = {input:?}\n\
         width = {width}\n\
         height = {height}\n\
         channels = \"rgb\"\n\
         scale = 0.00392156862745098\n\
         mean = [0.485, 0.456, 0.406]\n\
         std = [0.229, 0.224, 0.225]\n\
         fit = \"center-crop\"\n\
         resize_shorter = 256\n\
         interpolation = \"bilinear-antialias\"\n\
         \n\
         [output]\n\
         name = {output:?}\n\
         decoding = \"classifier\"\n",
        input = ports.input,
        width = ports.width,
        height = ports.height,
        output = ports.output,
    );
    text += "\n# The last block at each stride, named as torchvision's modules.\n";
    text += &taps_text(taps);
    text
}

fn taps_text(taps: &[Tap]) -> String {
    taps.iter()
        .map(|tap| {
            format!(
                "\n[[taps]]\nname = {:?}\ntensor = {:?}\nstride = {}\n",
                tap.name, tap.tensor, tap.stride
            )
        })
        .collect()
}

/// The manifest of the shipped `models/yolov5n` bundle, with this network.
pub(crate) fn yolov5_manifest(
    name: &str,
    network: &str,
    sha256: &str,
    ports: &Ports,
    taps: &[Tap],
) -> String {
    let mut text = format!(
        "name = {name:?}\n\
         network = {network:?}\n\
         sha256 = {sha256:?}\n\
         labels = \"labels.txt\"\n\
         \n\
         # Ultralytics' letterbox: keep the aspect ratio, centre, pad with grey 114, /255.\n\
         [input]\n\
         name = {input:?}\n\
         width = {width}\n\
         height = {height}\n\
         channels = \"rgb\"\n\
         scale = 0.00392156862745098\n\
         fit = \"letterbox\"\n\
         pad_value = 114\n\
         interpolation = \"bilinear\"\n\
         \n\
         # Rows of cx, cy, w, h (input pixels), objectness, class scores, all sigmoid-decoded.\n\
         [output]\n\
         name = {output:?}\n\
         decoding = \"yolov5\"\n\
         conf = 0.25\n\
         iou = 0.45\n",
        input = ports.input,
        width = ports.width,
        height = ports.height,
        output = ports.output,
    );
    text += "\n# CSPDarknet backbone: its last layer at each stride.\n";
    text += &taps_text(taps);
    text
}

/// Writes `manifest.toml` and, when there are labels, `labels.txt` into `out`.
pub(crate) fn write_manifest(out: &Path, text: &str, labels: Option<&[String]>) -> Result<PathBuf> {
    if let Some(labels) = labels {
        let path = out.join("labels.txt");
        std::fs::write(&path, labels.join("\n") + "\n")
            .with_context(|| path.display().to_string())?;
    }
    let manifest = out.join(MANIFEST_FILE);
    std::fs::write(&manifest, text).with_context(|| manifest.display().to_string())?;
    Ok(out.to_path_buf())
}
