//! From output tensors to results: classes, feature maps, detections.

pub mod classify;
pub mod features;
pub mod yolov5;

pub use classify::{Class, top_k};
pub use features::FeatureMap;
pub use yolov5::{Box2, Detection};

use serde::ser::{Serialize, SerializeMap, Serializer};
use tract_onnx::prelude::Tensor;

use crate::error::{Error, Result};

/// What a caller wants from a bundle; [`crate::Pipeline::load`] checks it against
/// the manifest once, so a frame can never be asked for the wrong thing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Task {
    /// The `top_k` most probable classes (a classifier's head).
    Classify { top_k: usize },
    /// YOLOv5 detections; a threshold left out is the manifest's.
    Detect { conf: Option<f32>, iou: Option<f32> },
    /// The manifest's feature taps and the pooled embedding.
    Features,
}

impl Task {
    /// What the bundle's own head is for, with the usual defaults (top 5 classes,
    /// the manifest's thresholds).
    pub fn head(manifest: &crate::Manifest) -> Task {
        match manifest.output.decoding {
            crate::model::Decoding::Classifier => Task::Classify { top_k: 5 },
            crate::model::Decoding::Yolov5 => Task::Detect {
                conf: None,
                iou: None,
            },
        }
    }
}

/// One frame's results, of the kind the pipeline's [`Task`] asked for.
#[derive(Debug, Clone)]
pub enum Results {
    Top(Vec<Class>),
    Detections(Vec<Detection>),
    Features {
        maps: Vec<FeatureMap>,
        embedding: Vec<f32>,
    },
}

/// As report fields: `"top"`, `"detections"`, or `"features"` (each map's
/// summary; the values go to .npy files) and `"embedding"`.
impl Serialize for Results {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            Results::Top(top) => map.serialize_entry("top", top)?,
            Results::Detections(dets) => map.serialize_entry("detections", dets)?,
            Results::Features { maps, embedding } => {
                let summaries: Vec<_> = maps.iter().map(FeatureMap::summary).collect();
                map.serialize_entry("features", &summaries)?;
                map.serialize_entry("embedding", embedding)?;
            }
        }
        map.end()
    }
}

/// A tensor's values as f32, or an error naming what it holds instead.
pub fn f32_values(tensor: &Tensor) -> Result<&[f32]> {
    tensor
        .try_as_plain_ram()
        .and_then(|view| view.as_slice::<f32>())
        .map_err(|_| {
            Error::Inference(format!(
                "expected an f32 tensor, got {:?} {:?}",
                tensor.datum_type(),
                tensor.shape()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::IntoTValue;

    #[test]
    fn results_serialize_as_report_fields() {
        let top = Results::Top(vec![Class {
            class: 15,
            label: "robin".into(),
            score: 0.5,
        }]);
        assert_eq!(
            serde_json::to_string(&top).unwrap(),
            r#"{"top":[{"class":15,"label":"robin","score":0.5}]}"#
        );
        let t = Tensor::from_shape(&[1, 2, 1, 1], &[1f32, 3.0]).unwrap();
        let features = Results::Features {
            maps: vec![FeatureMap::new("layer4", 32, t.into_tvalue()).unwrap()],
            embedding: vec![1.0, 3.0],
        };
        assert_eq!(
            serde_json::to_string(&features).unwrap(),
            r#"{"features":[{"name":"layer4","stride":32,"shape":[1,2,1,1],"mean":2.0,"l2":3.1622776601683795}],"embedding":[1.0,3.0]}"#
        );
    }
}
