//! Runs the float model over calibration images and observes every tensor that
//! will be quantized.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use edgebone::model::InputSpec;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::calibrate::Observer;
use crate::images;

/// What the float model did on the calibration photos.
pub struct Observed {
    /// Per fold (photo `i` of the readable ones is in fold `i % folds`), the
    /// observer of each tensor. The histograms of every fold span the extremes
    /// of all photos, so folds merge.
    pub folds: Vec<HashMap<String, Observer>>,
    /// How many photos could be read.
    pub used: usize,
    /// With `keep`: each photo's preprocessed input and the float model's first
    /// output on it, in photo order.
    pub inputs: Vec<TValue>,
    pub outputs: Vec<Vec<f32>>,
}

impl Observed {
    /// The observers of every fold but `left_out` (`None`: every fold) added up.
    pub fn merged(&self, left_out: Option<usize>) -> HashMap<String, Observer> {
        let mut merged: HashMap<String, Observer> = HashMap::new();
        for (i, fold) in self.folds.iter().enumerate() {
            if Some(i) == left_out {
                continue;
            }
            for (tensor, observer) in fold {
                match merged.get_mut(tensor) {
                    Some(m) => m.merge(observer),
                    None => {
                        merged.insert(tensor.clone(), observer.clone());
                    }
                }
            }
        }
        merged
    }

    /// The photos of fold `fold`, by index.
    pub fn fold_members(&self, fold: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.used).filter(move |i| i % self.folds.len() == fold)
    }
}

/// Observes `tensors` (graph input included) over the calibration images, in
/// `folds` folds. `histograms`: a second pass for percentile and entropy ranges.
/// `keep`: also keep every input and the float output named `head` (the photos
/// are then decoded once, not once per pass).
pub fn observe(
    proto: &ModelProto,
    spec: &InputSpec,
    files: &[PathBuf],
    tensors: &[String],
    histograms: bool,
    folds: usize,
    keep: Option<&str>,
) -> Result<Observed> {
    let mut outputs: Vec<&String> = tensors.iter().filter(|t| **t != spec.name).collect();
    let head = keep.map(str::to_string);
    if let Some(head) = &head {
        outputs.push(head);
    }
    let plan = activation_plan(proto, spec, &outputs)
        .map_err(|e| anyhow!("the float model cannot be run for calibration: {e:#}"))?;
    let mut observed = Observed {
        folds: vec![fresh(tensors); folds.max(1)],
        used: 0,
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    let message = if histograms { "ranges" } else { "calibrating" };
    let mut image = 0;
    observed.used = images::for_each(files, spec, message, |path, input| {
        let values = plan
            .run(tvec![input.clone()])
            .map_err(|e| anyhow!("{}: inference failed: {e:#}", path.display()))?;
        let fold = &mut observed.folds[image % folds.max(1)];
        each_tensor(tensors, spec, &input, &values, |tensor, value| {
            let observer = fold.get_mut(tensor).expect("an observer per tensor");
            let values = edgebone::decode::f32_values(value)?;
            observer.observe_extremes(values);
            observer.observe_channels(values, value.shape());
            Ok(())
        })?;
        if keep.is_some() {
            let head = values.last().expect("the head output");
            observed
                .outputs
                .push(edgebone::decode::f32_values(head)?.to_vec());
            observed.inputs.push(input);
        }
        image += 1;
        Ok(())
    })?;
    if observed.used == 0 {
        anyhow::bail!(
            "none of the {} calibration images could be read",
            files.len()
        );
    }
    if !histograms {
        return Ok(observed);
    }
    // Every fold bins its histograms over the extremes of all photos.
    let all = observed.merged(None);
    for fold in &mut observed.folds {
        for (tensor, observer) in fold.iter_mut() {
            observer.bin_up_to(all[tensor].min, all[tensor].max);
        }
    }
    let mut histogram = |image: usize, path: &std::path::Path, input: &TValue| -> Result<()> {
        let values = plan
            .run(tvec![input.clone()])
            .map_err(|e| anyhow!("{}: inference failed: {e:#}", path.display()))?;
        let fold = &mut observed.folds[image % folds.max(1)];
        each_tensor(tensors, spec, input, &values, |tensor, value| {
            let observer = fold.get_mut(tensor).expect("an observer per tensor");
            observer.observe_histogram(edgebone::decode::f32_values(value)?);
            Ok(())
        })
    };
    if keep.is_some() {
        let inputs = std::mem::take(&mut observed.inputs);
        let bar = images::progress(inputs.len(), "histograms");
        for (image, input) in inputs.iter().enumerate() {
            bar.inc(1);
            histogram(image, std::path::Path::new("calibration photo"), input)?;
        }
        bar.finish_and_clear();
        observed.inputs = inputs;
    } else {
        let mut image = 0;
        images::for_each(files, spec, "histograms", |path, input| {
            histogram(image, path, &input)?;
            image += 1;
            Ok(())
        })?;
    }
    Ok(observed)
}

fn fresh(tensors: &[String]) -> HashMap<String, Observer> {
    tensors
        .iter()
        .map(|t| (t.clone(), Observer::default()))
        .collect()
}

/// Hands each observed tensor's value to `each`: the input itself for the graph
/// input, the plan's outputs (in order) for the others.
fn each_tensor(
    tensors: &[String],
    spec: &InputSpec,
    input: &TValue,
    outputs: &TVec<TValue>,
    mut each: impl FnMut(&str, &Tensor) -> Result<()>,
) -> Result<()> {
    let mut outputs = outputs.iter();
    for tensor in tensors {
        let value = if *tensor == spec.name {
            input
        } else {
            outputs.next().expect("one output per observed tensor")
        };
        each(tensor, value)?;
    }
    Ok(())
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
