//! One bundle's whole path from a decoded frame to results.

use std::time::Instant;

use serde::Serialize;
use tract_onnx::prelude::{TValue, TVec};

use crate::decode::{self, Class, Detection, FeatureMap};
use crate::error::{Error, Result};
use crate::frame::{FrameRef, Geometry};
use crate::model::{Bundle, Decoding, Model, ModelOptions, Outputs};
use crate::preprocess::Preprocessor;

/// Milliseconds spent in each stage for one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub preprocess: f64,
    pub infer: f64,
    pub postprocess: f64,
}

pub struct Pipeline {
    bundle: Bundle,
    model: Model,
    preprocessor: Preprocessor,
    outputs: Outputs,
}

impl Pipeline {
    pub fn load(bundle: Bundle, options: &ModelOptions) -> Result<Pipeline> {
        if options.outputs == Outputs::Taps && bundle.manifest.taps.is_empty() {
            return Err(Error::Manifest {
                path: bundle.dir.join("manifest.toml"),
                message: "no [[taps]] are declared, so there are no feature maps".into(),
            });
        }
        let model = Model::load(&bundle, options)?;
        let [_, _, h, w] = model.input_shape();
        let preprocessor = Preprocessor::new(&bundle.manifest.input, w as u32, h as u32);
        Ok(Pipeline {
            bundle,
            model,
            preprocessor,
            outputs: options.outputs.clone(),
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// `[1, 3, height, width]`
    pub fn input_shape(&self) -> [usize; 4] {
        self.model.input_shape()
    }

    /// The `k` most probable classes.
    pub fn classify<'f>(
        &mut self,
        frame: impl Into<FrameRef<'f>>,
        k: usize,
    ) -> Result<(Vec<Class>, Latency)> {
        self.expect(Decoding::Classifier, Outputs::Head)?;
        let (outputs, _, mut latency) = self.forward(frame.into())?;
        let start = Instant::now();
        let logits = decode::f32_values(&outputs[0])?;
        let top = decode::top_k(logits, k, |c| self.bundle.label(c));
        latency.postprocess = ms(start);
        Ok((top, latency))
    }

    /// Detections in frame pixels, with the given score and NMS thresholds.
    pub fn detect<'f>(
        &mut self,
        frame: impl Into<FrameRef<'f>>,
        conf: f32,
        iou: f32,
    ) -> Result<(Vec<Detection>, Latency)> {
        self.expect(Decoding::Yolov5, Outputs::Head)?;
        let (outputs, geometry, mut latency) = self.forward(frame.into())?;
        let start = Instant::now();
        let shape = outputs[0].shape();
        if shape.len() != 3 || shape[2] <= 5 {
            return Err(Error::Inference(format!(
                "YOLOv5 output must be [1, N, 5 + classes], got {shape:?}"
            )));
        }
        let classes = shape[2] - 5;
        let rows = decode::f32_values(&outputs[0])?;
        let dets = decode::yolov5::decode(rows, classes, conf, iou, &geometry, |c| {
            self.bundle.label(c)
        });
        latency.postprocess = ms(start);
        Ok((dets, latency))
    }

    /// The manifest's feature maps, and the embedding: the deepest map averaged
    /// over space.
    pub fn features<'f>(
        &mut self,
        frame: impl Into<FrameRef<'f>>,
    ) -> Result<(Vec<FeatureMap>, Vec<f32>, Latency)> {
        if self.outputs != Outputs::Taps {
            return Err(Error::Inference(
                "the pipeline was loaded for the model's head, not its feature taps".into(),
            ));
        }
        let (outputs, _, mut latency) = self.forward(frame.into())?;
        let start = Instant::now();
        let maps = self
            .bundle
            .manifest
            .taps
            .iter()
            .zip(outputs)
            .map(|(tap, value)| FeatureMap::new(&tap.name, tap.stride, value))
            .collect::<Result<Vec<_>>>()?;
        let deepest = maps.iter().max_by_key(|m| m.stride);
        let embedding = deepest.map(FeatureMap::pooled).unwrap_or_default();
        latency.postprocess = ms(start);
        Ok((maps, embedding, latency))
    }

    /// Runs the network on an already-made input tensor (golden tensors, benchmarks).
    pub fn infer(&mut self, input: TValue) -> Result<TVec<TValue>> {
        self.model.run(input)
    }

    fn forward(&mut self, frame: FrameRef) -> Result<(TVec<TValue>, Geometry, Latency)> {
        let start = Instant::now();
        let (input, geometry) = self.preprocessor.run(frame)?;
        let preprocess = ms(start);
        let start = Instant::now();
        let outputs = self.model.run(input)?;
        let latency = Latency {
            preprocess,
            infer: ms(start),
            postprocess: 0.0,
        };
        Ok((outputs, geometry, latency))
    }

    fn expect(&self, decoding: Decoding, outputs: Outputs) -> Result<()> {
        let actual = self.bundle.manifest.output.decoding;
        if actual != decoding || self.outputs != outputs {
            return Err(Error::Inference(format!(
                "{}: the model decodes as {actual:?} with {:?} outputs, not as {decoding:?}",
                self.bundle.dir.display(),
                self.outputs
            )));
        }
        Ok(())
    }
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
