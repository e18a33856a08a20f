//! The manifest (`manifest.toml`) that sits beside a network file in a bundle.

use serde::Deserialize;

use crate::frame::MAX_SIDE;

/// What a bundle's `manifest.toml` says about its network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// The network file, relative to the bundle folder.
    pub network: String,
    /// Hex sha256 of the network file; checked at load.
    pub sha256: String,
    /// One label per line, relative to the bundle folder.
    #[serde(default)]
    pub labels: Option<String>,
    pub input: InputSpec,
    pub output: OutputSpec,
    #[serde(default)]
    pub taps: Vec<Tap>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The graph input's name.
    #[serde(default = "default_input_name")]
    pub name: String,
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub channels: ChannelOrder,
    /// Pixel values are multiplied by this before mean/std (1/255 maps to 0..1).
    pub scale: f32,
    #[serde(default = "zeros")]
    pub mean: [f32; 3],
    #[serde(default = "ones")]
    pub std: [f32; 3],
    pub fit: Fit,
    /// For `center-crop`: the shorter side is resized to this many pixels (at the
    /// manifest's input size) before cropping, as torchvision's `Resize(256)`.
    #[serde(default)]
    pub resize_shorter: Option<u32>,
    #[serde(default)]
    pub interpolation: Interpolation,
    /// For `letterbox`: the grey level of the padding.
    #[serde(default = "default_pad")]
    pub pad_value: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// How a frame of any size is fitted to the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Resize the shorter side, then crop the centre (torchvision's eval transform).
    CenterCrop,
    /// Resize keeping the aspect ratio, pad the rest (YOLOv5).
    Letterbox,
    /// Resize both sides to the input size, ignoring the aspect ratio.
    Stretch,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    /// Bilinear with an antialiasing filter when shrinking: PIL's and torchvision's
    /// `Resize(antialias=True)`.
    #[default]
    BilinearAntialias,
    /// Plain bilinear sampling: OpenCV's `INTER_LINEAR`, as YOLOv5's letterbox.
    Bilinear,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub decoding: Decoding,
    /// The graph output's name; defaults to the graph's first output.
    #[serde(default)]
    pub name: Option<String>,
    /// YOLOv5: minimum score (objectness × class score).
    #[serde(default = "default_conf")]
    pub conf: f32,
    /// YOLOv5: IoU above which NMS drops the weaker box of the same class.
    #[serde(default = "default_iou")]
    pub iou: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoding {
    /// Logits over the labels: softmax and top-k.
    Classifier,
    /// `[1, N, 5 + classes]` rows of cx, cy, w, h, objectness, class scores.
    Yolov5,
}

/// A named intermediate tensor exposed as a feature map.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    /// The name users see, as torchvision names modules (`layer1`, `features.3`).
    pub name: String,
    /// The graph tensor (ONNX value name) to read.
    pub tensor: String,
    /// Input pixels per feature-map cell.
    pub stride: u32,
}

fn default_input_name() -> String {
    "input".into()
}
fn zeros() -> [f32; 3] {
    [0.0; 3]
}
fn ones() -> [f32; 3] {
    [1.0; 3]
}
fn default_pad() -> u8 {
    114
}
fn default_conf() -> f32 {
    0.25
}
fn default_iou() -> f32 {
    0.45
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        let input = &self.input;
        if input.width == 0 || input.height == 0 {
            return Err("input.width and input.height must be positive".into());
        }
        if input.width > MAX_SIDE || input.height > MAX_SIDE {
            return Err(format!(
                "input.width and input.height must be at most {MAX_SIDE}"
            ));
        }
        if input.std.contains(&0.0) {
            return Err("input.std must not contain 0".into());
        }
        let numbers = [input.scale].into_iter().chain(input.mean).chain(input.std);
        if numbers.into_iter().any(|v| !v.is_finite()) {
            return Err("input.scale, mean and std must be finite numbers".into());
        }
        if input.fit == Fit::CenterCrop && input.resize_shorter.is_none() {
            return Err("input.fit = \"center-crop\" needs input.resize_shorter".into());
        }
        if let Some(shorter) = input.resize_shorter
            && shorter < input.width.min(input.height)
        {
            return Err(format!(
                "input.resize_shorter = {shorter} is smaller than the {}x{} crop",
                input.width, input.height
            ));
        }
        if let Some(tap) = self.taps.iter().find(|t| t.stride == 0) {
            return Err(format!("taps: {} has stride 0", tap.name));
        }
        Ok(())
    }
}

/// toml's messages span several lines with a source excerpt; errors here are one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^'))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "m"
network = "m.onnx"
sha256 = "00"
[input]
width = 224
height = 224
scale = 0.00392156862745098
fit = "center-crop"
resize_shorter = 256
[output]
decoding = "classifier"
"#;

    #[test]
    fn parses_with_defaults() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.input.interpolation, Interpolation::BilinearAntialias);
        assert_eq!(m.input.std, [1.0; 3]);
        assert_eq!(m.output.conf, 0.25);
    }

    #[test]
    fn a_typo_names_the_key() {
        let err = Manifest::parse(&GOOD.replace("resize_shorter", "resize_shortr")).unwrap_err();
        assert!(err.contains("resize_shortr"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_bad_value_names_what_was_expected() {
        let err = Manifest::parse(&GOOD.replace("center-crop", "centre-crop")).unwrap_err();
        assert!(
            err.contains("centre-crop") && err.contains("center-crop"),
            "{err}"
        );
    }

    /// Audit (issue 16): a 100000-pixel side made the preprocessor's u32 buffer
    /// sizes overflow; a NaN scale ran and gave garbage.
    #[test]
    fn sizes_and_numbers_out_of_range_are_refused() {
        let big = GOOD.replace("width = 224", "width = 100000");
        assert!(Manifest::parse(&big).unwrap_err().contains("at most 8192"));
        for (from, to) in [
            ("scale = 0.00392156862745098", "scale = nan"),
            ("[output]", "std = [1, inf, 1]\n[output]"),
        ] {
            let err = Manifest::parse(&GOOD.replace(from, to)).unwrap_err();
            assert!(err.contains("must be finite"), "{err}");
        }
    }

    #[test]
    fn center_crop_needs_a_resize() {
        let err = Manifest::parse(&GOOD.replace("resize_shorter = 256", "")).unwrap_err();
        assert!(err.contains("resize_shorter"), "{err}");
    }
}
