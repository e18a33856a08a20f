//! Runs the float model over calibration images and observes every tensor that
//! will be quantized.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use edgebone::model::InputSpec;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::calibrate::{Method, Observer};
use crate::images;

/// The observers of `tensors` (graph input included) after the calibration images.
pub fn observe(
    proto: &ModelProto,
    spec: &InputSpec,
    files: &[PathBuf],
    tensors: &[String],
    method: Method,
) -> Result<(HashMap<String, Observer>, usize)> {
    let inner: Vec<&String> = tensors.iter().filter(|t| **t != spec.name).collect();
    let plan = activation_plan(proto, spec, &inner)
        .map_err(|e| anyhow!("the float model cannot be run for calibration: {e:#}"))?;
    let mut observers: Vec<Observer> = vec![Observer::default(); tensors.len()];
    let passes: &[&str] = if method == Method::MinMax {
        &["calibrating"]
    } else {
        &["ranges", "histograms"]
    };
    let mut used = 0;
    for (pass, message) in passes.iter().enumerate() {
        used = images::for_each(files, spec, message, |path, input| {
            let outputs = plan
                .run(tvec![input.clone()])
                .map_err(|e| anyhow!("{}: inference failed: {e:#}", path.display()))?;
            let mut outputs = outputs.iter();
            for (tensor, observer) in tensors.iter().zip(&mut observers) {
                let value = if *tensor == spec.name {
                    &input
                } else {
                    outputs.next().expect("one output per observed tensor")
                };
                let values = edgebone::decode::f32_values(value)?;
                if pass == 0 {
                    observer.observe_extremes(values);
                    observer.observe_channels(values, value.shape());
                } else {
                    observer.observe_histogram(values);
                }
            }
            Ok(())
        })?;
        if used == 0 {
            anyhow::bail!(
                "none of the {} calibration images could be read",
                files.len()
            );
        }
    }
    Ok((tensors.iter().cloned().zip(observers).collect(), used))
}

fn activation_plan(
    proto: &ModelProto,
    spec: &InputSpec,
    outputs: &[&String],
) -> TractResult<std::sync::Arc<TypedRunnableModel>> {
    let shape = [1, 3, spec.height as usize, spec.width as usize];
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(proto)?
        .with_input_fact(0, f32::fact(shape).into())?;
    if !outputs.is_empty() {
        model = model.with_outputs_by_name(outputs)?;
    }
    model.into_optimized()?.into_runnable()
}
