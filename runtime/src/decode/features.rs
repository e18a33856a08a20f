use serde::Serialize;
use tract_onnx::prelude::{IntoArcTensor, TValue, Tensor};

use super::f32_values;
use crate::error::{Error, Result};

/// One feature map read from a tap.
#[derive(Debug, Clone)]
pub struct FeatureMap {
    pub name: String,
    pub stride: u32,
    pub tensor: Tensor,
}

/// What is printed about a feature map (the values themselves go to .npy files).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureSummary {
    pub name: String,
    pub stride: u32,
    pub shape: Vec<usize>,
    pub mean: f64,
    pub l2: f64,
}

impl FeatureMap {
    pub fn new(name: &str, stride: u32, value: TValue) -> Result<FeatureMap> {
        // Taps are the plan's outputs, so the Arc is normally ours alone: no copy.
        let tensor = std::sync::Arc::try_unwrap(value.into_arc_tensor())
            .unwrap_or_else(|shared| (*shared).clone());
        if tensor.rank() != 4 || f32_values(&tensor).is_err() {
            return Err(Error::Inference(format!(
                "tap {name}: expected an f32 [1, C, H, W] tensor, got {:?} {:?}",
                tensor.datum_type(),
                tensor.shape()
            )));
        }
        Ok(FeatureMap {
            name: name.to_string(),
            stride,
            tensor,
        })
    }

    pub fn values(&self) -> &[f32] {
        f32_values(&self.tensor).expect("checked as f32 at construction")
    }

    pub fn summary(&self) -> FeatureSummary {
        let values = self.values();
        let sum: f64 = values.iter().map(|v| *v as f64).sum();
        let sq: f64 = values.iter().map(|v| (*v as f64).powi(2)).sum();
        FeatureSummary {
            name: self.name.clone(),
            stride: self.stride,
            shape: self.tensor.shape().to_vec(),
            mean: sum / values.len().max(1) as f64,
            l2: sq.sqrt(),
        }
    }

    /// Global average over H and W: one value per channel.
    pub fn pooled(&self) -> Vec<f32> {
        let shape = self.tensor.shape();
        let plane = shape[2] * shape[3];
        self.values()
            .chunks_exact(plane.max(1))
            .map(|c| (c.iter().map(|v| *v as f64).sum::<f64>() / plane as f64) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::IntoTValue;

    #[test]
    fn pools_each_channel_and_summarizes() {
        let t = Tensor::from_shape(&[1, 2, 1, 2], &[1f32, 3.0, -2.0, 2.0]).unwrap();
        let map = FeatureMap::new("x", 8, t.into_tvalue()).unwrap();
        assert_eq!(map.pooled(), vec![2.0, 0.0]);
        let s = map.summary();
        assert_eq!((s.mean, s.shape), (1.0, vec![1, 2, 1, 2]));
        assert!((s.l2 - 18f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn refuses_a_tensor_that_is_not_a_map() {
        let t = Tensor::from_shape(&[1, 4], &[0f32; 4]).unwrap();
        let err = FeatureMap::new("flat", 8, t.into_tvalue()).unwrap_err();
        assert!(err.to_string().contains("tap flat"), "{err}");
    }
}
