//! One bundle's whole path from a decoded frame to results, for the one task
//! chosen at load.

use std::time::Instant;

use serde::Serialize;
use tract_onnx::prelude::{TValue, TVec};

use crate::decode::{self, FeatureMap, Results, Task};
use crate::error::{Error, Result};
use crate::frame::{FrameRef, Geometry};
use crate::model::{Bundle, Decoding, Model, ModelOptions, Outputs, Profile};
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
    decoder: Decoder,
}

/// A [`Task`] checked against the manifest, defaults filled in.
#[derive(Debug, Clone, Copy)]
enum Decoder {
    Classify {
        top_k: usize,
    },
    Detect {
        conf: f32,
        iou: f32,
        /// From the plan's output shape at load; `None` when tract leaves it open.
        classes: Option<usize>,
    },
    Features,
}

impl Pipeline {
    /// Loads `bundle` for `task`; a task the bundle cannot do is refused here,
    /// before the network is loaded.
    pub fn load(bundle: Bundle, task: Task, options: &ModelOptions) -> Result<Pipeline> {
        let mut decoder = Decoder::resolve(task, &bundle).map_err(|message| Error::Task {
            bundle: bundle.dir.clone(),
            message,
        })?;
        let model = Model::load(&bundle, options, decoder.outputs())?;
        // The output shapes each decoder reads, checked once here rather than
        // failing every frame.
        let shapes = (0..bundle.manifest.taps.len().max(1)).map(|i| model.output_shape(i));
        let checked = match &mut decoder {
            Decoder::Detect { classes, .. } => match model.output_shape(0) {
                Some(shape) => yolov5_classes(&shape).map(|c| *classes = Some(c)),
                None => Ok(()),
            },
            Decoder::Classify { .. } => match model.output_shape(0) {
                Some(shape) => classifier_classes(&shape).map(|_| ()).map_err(|e| {
                    let name = bundle.manifest.output.name.as_deref();
                    format!("output {}: {e}", name.unwrap_or("(the graph's first)"))
                }),
                None => Ok(()),
            },
            Decoder::Features => shapes
                .zip(&bundle.manifest.taps)
                .try_for_each(|(shape, tap)| match shape {
                    Some(shape) if shape.len() != 4 || shape[0] != 1 => Err(format!(
                        "tap {} ({}) must be [1, C, H, W], got {shape:?}",
                        tap.name, tap.tensor
                    )),
                    _ => Ok(()),
                }),
        };
        checked.map_err(|message| Error::Task {
            bundle: bundle.dir.clone(),
            message,
        })?;
        let [_, _, h, w] = model.input_shape();
        let preprocessor = Preprocessor::new(&bundle.manifest.input, w as u32, h as u32);
        Ok(Pipeline {
            bundle,
            model,
            preprocessor,
            decoder,
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// `[1, 3, height, width]`
    pub fn input_shape(&self) -> [usize; 4] {
        self.model.input_shape()
    }

    /// One frame through preprocessing, the network and decoding.
    pub fn run<'f>(&mut self, frame: impl Into<FrameRef<'f>>) -> Result<(Results, Latency)> {
        let (outputs, geometry, mut latency) = self.forward(frame.into())?;
        let start = Instant::now();
        let results = self.decode(outputs, &geometry)?;
        latency.postprocess = ms(start);
        Ok((results, latency))
    }

    /// [`Pipeline::run`], also handing back the network's first output as it
    /// came out (`quantize eval` measures quantization error on it).
    pub fn run_with_raw<'f>(
        &mut self,
        frame: impl Into<FrameRef<'f>>,
    ) -> Result<(Results, TValue)> {
        let (outputs, geometry, _) = self.forward(frame.into())?;
        let raw = outputs[0].clone();
        Ok((self.decode(outputs, &geometry)?, raw))
    }

    /// Runs the network on an already-made input tensor (golden tensors, benchmarks).
    pub fn infer(&mut self, input: TValue) -> Result<TVec<TValue>> {
        self.model.run(input)
    }

    /// [`Pipeline::infer`], timing every operator into `profile`.
    pub fn infer_profiled(&mut self, input: TValue, profile: &mut Profile) -> Result<TVec<TValue>> {
        self.model.run_profiled(input, profile)
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

    fn decode(&self, outputs: TVec<TValue>, geometry: &Geometry) -> Result<Results> {
        let label = |c| self.bundle.label(c);
        Ok(match self.decoder {
            Decoder::Classify { top_k } => Results::Top(decode::top_k(
                decode::f32_values(&outputs[0])?,
                top_k,
                label,
            )),
            Decoder::Detect { conf, iou, classes } => {
                let classes = match classes {
                    Some(classes) => classes,
                    None => yolov5_classes(outputs[0].shape()).map_err(Error::Inference)?,
                };
                let rows = decode::f32_values(&outputs[0])?;
                let dets = decode::yolov5::decode(rows, classes, conf, iou, geometry, label);
                Results::Detections(dets)
            }
            Decoder::Features => {
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
                Results::Features { maps, embedding }
            }
        })
    }
}

impl Decoder {
    /// `task` for this bundle, or why the bundle cannot do it.
    fn resolve(task: Task, bundle: &Bundle) -> std::result::Result<Decoder, String> {
        let output = &bundle.manifest.output;
        let decoding = match output.decoding {
            Decoding::Classifier => "classifier",
            Decoding::Yolov5 => "yolov5",
        };
        match task {
            Task::Classify { .. } if output.decoding != Decoding::Classifier => Err(format!(
                "classify needs a classifier, but the manifest's output decodes as {decoding} (use detect)"
            )),
            Task::Classify { top_k: 0 } => Err("classify: top_k must be at least 1".into()),
            Task::Classify { top_k } => Ok(Decoder::Classify { top_k }),
            Task::Detect { .. } if output.decoding != Decoding::Yolov5 => Err(format!(
                "detect needs a YOLOv5 model, but the manifest's output decodes as {decoding} (use classify)"
            )),
            Task::Detect { conf, iou } => Ok(Decoder::Detect {
                conf: threshold("conf", conf.unwrap_or(output.conf))?,
                iou: threshold("iou", iou.unwrap_or(output.iou))?,
                classes: None,
            }),
            Task::Features if bundle.manifest.taps.is_empty() => {
                Err("features needs feature taps, but the manifest declares no [[taps]]".into())
            }
            Task::Features => Ok(Decoder::Features),
        }
    }

    fn outputs(&self) -> Outputs {
        match self {
            Decoder::Features => Outputs::Taps,
            _ => Outputs::Head,
        }
    }
}

fn threshold(name: &str, value: f32) -> std::result::Result<f32, String> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "detect: {name} must be a number from 0 to 1, got {value}"
        ))
    }
}

/// The class count of a YOLOv5 output shape, `[1, N, 5 + classes]`.
fn yolov5_classes(shape: &[usize]) -> std::result::Result<usize, String> {
    match shape {
        [_, _, row] if *row > 5 => Ok(row - 5),
        _ => Err(format!(
            "YOLOv5 output must be [1, N, 5 + classes], got {shape:?}"
        )),
    }
}

/// The class count of a classifier's output: one row of logits, `[1, N]` (or
/// `[N]`, or with trailing 1s as a 1×1 convolution head leaves it).
fn classifier_classes(shape: &[usize]) -> std::result::Result<usize, String> {
    let classes = shape.iter().product::<usize>();
    let rows = shape.iter().filter(|&&d| d != 1).count();
    if classes >= 2 && rows == 1 {
        Ok(classes)
    } else {
        Err(format!(
            "classifier output must be [1, classes], got {shape:?}"
        ))
    }
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str) -> Bundle {
        Bundle::open(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models")
                .join(name),
        )
        .unwrap()
    }

    fn refusal(bundle: Bundle, task: Task) -> String {
        match Pipeline::load(bundle, task, &ModelOptions::default()) {
            Ok(_) => panic!("{task:?} was accepted"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn a_task_the_bundle_cannot_do_is_refused_at_load() {
        let detect = Task::Detect {
            conf: None,
            iou: None,
        };
        let err = refusal(bundle("mobilenet_v2"), detect);
        assert!(
            err.contains("mobilenet_v2: detect needs a YOLOv5 model"),
            "{err}"
        );
        assert!(err.contains("decodes as classifier"), "{err}");
        let err = refusal(bundle("yolov5n"), Task::Classify { top_k: 5 });
        assert!(
            err.contains("yolov5n: classify needs a classifier"),
            "{err}"
        );
        let mut no_taps = bundle("mobilenet_v2");
        no_taps.manifest.taps.clear();
        let err = refusal(no_taps, Task::Features);
        assert!(err.contains("declares no [[taps]]"), "{err}");
    }

    #[test]
    fn bad_task_settings_are_refused_at_load() {
        let err = refusal(bundle("mobilenet_v2"), Task::Classify { top_k: 0 });
        assert!(err.contains("top_k must be at least 1"), "{err}");
        let conf = Task::Detect {
            conf: Some(1.5),
            iou: None,
        };
        let err = refusal(bundle("yolov5n"), conf);
        assert!(
            err.contains("conf must be a number from 0 to 1, got 1.5"),
            "{err}"
        );
    }

    #[test]
    fn yolov5n_output_shape_is_checked_at_load() {
        let detect = Task::Detect {
            conf: None,
            iou: None,
        };
        let pipeline = Pipeline::load(bundle("yolov5n"), detect, &ModelOptions::default()).unwrap();
        assert!(
            matches!(
                pipeline.decoder,
                Decoder::Detect {
                    classes: Some(80),
                    ..
                }
            ),
            "{:?}",
            pipeline.decoder
        );
    }

    #[test]
    fn yolov5_shapes_give_the_class_count() {
        assert_eq!(yolov5_classes(&[1, 25200, 85]), Ok(80));
        assert!(
            yolov5_classes(&[1, 1000])
                .unwrap_err()
                .contains("[1, 1000]")
        );
        assert!(yolov5_classes(&[1, 10, 5]).is_err());
    }

    #[test]
    fn classifier_shapes_must_be_one_row_of_logits() {
        assert_eq!(classifier_classes(&[1, 1000]), Ok(1000));
        assert_eq!(classifier_classes(&[1, 1000, 1, 1]), Ok(1000));
        let err = classifier_classes(&[1, 24, 56, 56]).unwrap_err();
        assert!(err.contains("[1, 24, 56, 56]"), "{err}");
        assert!(classifier_classes(&[1, 1]).is_err());
    }
}
