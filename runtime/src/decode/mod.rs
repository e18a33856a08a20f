//! From output tensors to results: classes, feature maps, detections.

pub mod classify;
pub mod features;
pub mod yolov5;

pub use classify::{Class, top_k};
pub use features::FeatureMap;
pub use yolov5::{Box2, Detection};

use tract_onnx::prelude::Tensor;

use crate::error::{Error, Result};

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
