//! `quantize convert`: a torchvision state_dict to an edgebone bundle. The graph
//! is built here, layer by layer, from the architecture's definition; the
//! checkpoint only supplies weights, each checked by name and shape.

mod arch;
mod formula;
mod graph;
#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgebone::model::{MANIFEST_FILE, sha256_hex};
use edgebone::onnx;
use tract_onnx::pb::ModelProto;

use crate::torch::StateDict;
pub use graph::Weights;

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
        }
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
    };
    let (model, classes) = g.finish(&logits)?;
    Ok(Converted {
        model,
        taps,
        classes,
    })
}

/// The ImageNet class names of the shipped MobileNetV2 bundle (torchvision's
/// index order), for any 1000-class head.
const IMAGENET_LABELS: &str = include_str!("../../../models/mobilenet_v2/labels.txt");

/// Writes `DIR/{arch}.onnx`, `manifest.toml` (torchvision's eval preprocessing,
/// the taps, the sha256) and, for a 1000-class head, the ImageNet labels.
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
    let labels = if converted.classes == 1000 {
        let path = out.join("labels.txt");
        std::fs::write(&path, IMAGENET_LABELS).with_context(|| path.display().to_string())?;
        "labels = \"labels.txt\"\n"
    } else {
        ""
    };
    let mut text = format!(
        "# torchvision {arch} converted by `quantize convert` from {origin}.\n\
         name = {name:?}\n\
         network = {network:?}\n\
         sha256 = {sha256:?}\n\
         {labels}\n\
         # torchvision's eval transform: Resize(256) antialiased, CenterCrop(224), ImageNet mean/std.\n\
         [input]\n\
         name = \"input\"\n\
         width = 224\n\
         height = 224\n\
         channels = \"rgb\"\n\
         scale = 0.00392156862745098\n\
         mean = [0.485, 0.456, 0.406]\n\
         std = [0.229, 0.224, 0.225]\n\
         fit = \"center-crop\"\n\
         resize_shorter = 256\n\
         interpolation = \"bilinear-antialias\"\n\
         \n\
         [output]\n\
         name = \"logits\"\n\
         decoding = \"classifier\"\n",
        arch = arch.name(),
    );
    text += "\n# The last block at each stride, named as torchvision's modules.\n";
    for tap in &converted.taps {
        text += &format!(
            "\n[[taps]]\nname = {:?}\ntensor = {:?}\nstride = {}\n",
            tap.name, tap.tensor, tap.stride
        );
    }
    let manifest = out.join(MANIFEST_FILE);
    std::fs::write(&manifest, text).with_context(|| manifest.display().to_string())?;
    Ok(out.to_path_buf())
}
