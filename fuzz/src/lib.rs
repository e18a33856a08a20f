//! What the fuzz targets share: the checkpoint reader compiled in from the
//! `quantize` tool, a small model input spec, and the structure-aware mutator of
//! the committed model bundles.

pub mod bundle;

/// `tools/src/torch` as `quantize` compiles it: the tool is a binary crate, and
/// the reader is self-contained (std, anyhow, half, zip), so it is built here
/// from the same files rather than moved into a library for the fuzzer's sake.
#[allow(dead_code)]
#[path = "../../tools/src/torch/mod.rs"]
pub mod torch;

/// The test writer of `torch.save` files, for the seed corpus.
#[allow(dead_code)]
#[path = "../../tools/src/torch/write.rs"]
pub mod torch_write;

use edgebone::model::{Fit, InputSpec, Interpolation, manifest::ChannelOrder};

/// The repository's root, where `models/` and `tests/data/` are.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An input spec for preprocessing fuzzed frames: every fit and interpolation,
/// at a small model size so that one run stays quick.
pub fn input_spec(choice: u8, width: u32, height: u32) -> InputSpec {
    let fit = match choice % 3 {
        0 => Fit::CenterCrop,
        1 => Fit::Letterbox,
        _ => Fit::Stretch,
    };
    InputSpec {
        name: "input".into(),
        width,
        height,
        channels: if choice & 4 == 0 {
            ChannelOrder::Rgb
        } else {
            ChannelOrder::Bgr
        },
        scale: 1.0 / 255.0,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        fit,
        resize_shorter: (fit == Fit::CenterCrop).then_some(width.max(height) + 3),
        interpolation: if choice & 8 == 0 {
            Interpolation::BilinearAntialias
        } else {
            Interpolation::Bilinear
        },
        pad_value: 114,
    }
}
