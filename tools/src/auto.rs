//! `--method auto`: the quantization setting chosen by k-fold cross-validation
//! on the calibration photos alone.
//!
//! Every candidate (a range method, with or without bias correction, with the
//! first and last layers int8 or float) is calibrated on k − 1 folds and run on
//! the integer path over the held-out fold; its outputs are compared with
//! float's. No label is needed: a classifier is scored by top-1 agreement with
//! float, a detector by the share of float's detections it keeps (IoU ≥ 0.85,
//! score within 0.05), both with output cosine to break ties. The photos are
//! preprocessed and run in float once ([`Observed`]); each candidate only
//! recomputes ranges from the folds' histograms and runs int8.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::{Context, Result};
use edgebone::decode::yolov5::{self, Detection};
use edgebone::decode::{Task, f32_values};
use edgebone::frame::Geometry;
use edgebone::model::Decoding;
use edgebone::onnx::{self, qdq::QParams};
use edgebone::{Bundle, ModelOptions, Pipeline};
use serde::Serialize;
use tract_onnx::pb::ModelProto;

use crate::activations::Observed;
use crate::bundle::{self, Activation, Record};
use crate::calibrate::{Method, Observer};
use crate::eval::{is_kept, match_detections};
use crate::images;
use crate::qdq::{self, Plan};

/// How one int8 model is made from the observations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub method: Method,
    /// For [`Method::Percentile`].
    pub percentile: f64,
    pub bias_correction: bool,
    /// The first and last weighted layers kept float ([`qdq::end_layers`]).
    pub wide_ends: bool,
}

impl Setting {
    pub fn name(&self) -> String {
        let mut name = match self.method {
            Method::Percentile => format!("percentile {}", self.percentile),
            method => format!("{method:?}")
                .to_lowercase()
                .replace("minmax", "min-max"),
        };
        if self.bias_correction {
            name += " + bias correction";
        }
        if self.wide_ends {
            name += " + ends float";
        }
        name
    }
}

/// The candidates, the settings that keep every layer int8 first: on a tie the
/// earlier (faster, simpler) one wins.
pub fn candidates(percentile: f64) -> Vec<Setting> {
    let mut all = Vec::new();
    for wide_ends in [false, true] {
        for bias_correction in [false, true] {
            for method in [Method::MinMax, Method::Percentile, Method::Entropy] {
                all.push(Setting {
                    method,
                    percentile,
                    bias_correction,
                    wide_ends,
                });
            }
        }
    }
    all
}

/// The two plans a setting picks from: every layer int8, or the ends float.
pub struct Plans {
    pub all_int8: Plan,
    pub wide_ends: Plan,
}

impl Plans {
    pub fn get(&self, setting: &Setting) -> &Plan {
        if setting.wide_ends {
            &self.wide_ends
        } else {
            &self.all_int8
        }
    }

    /// Every tensor either plan quantizes, in graph order.
    pub fn activations(&self) -> Vec<String> {
        let int8: HashSet<&String> = self.all_int8.activations.iter().collect();
        let mut all = self.all_int8.activations.clone();
        let more = self.wide_ends.activations.iter();
        all.extend(more.filter(|t| !int8.contains(t)).cloned());
        all
    }
}

/// An int8 model and what made it.
pub struct Quantized {
    pub proto: ModelProto,
    pub activations: Vec<Activation>,
    /// Clamps folded into their layer's quantize step.
    pub folded: Vec<String>,
}

/// Quantizes `proto` (BatchNorm folded) along `plan` with the ranges `setting`
/// draws from `observers`.
pub fn apply(
    proto: &ModelProto,
    plan: &Plan,
    observers: &HashMap<String, Observer>,
    setting: &Setting,
) -> Result<Quantized> {
    let mut qparams = HashMap::new();
    let mut activations = Vec::new();
    for tensor in &plan.activations {
        let observer = &observers[tensor];
        let range = observer.range(setting.method, setting.percentile);
        let q = QParams::spanning(range.lo, range.hi);
        qparams.insert(tensor.clone(), q);
        activations.push(Activation {
            tensor: tensor.clone(),
            min: observer.min,
            max: observer.max,
            range,
            qparams: q,
        });
    }
    let means: HashMap<String, Vec<f32>> = if setting.bias_correction {
        plan.activations
            .iter()
            .map(|t| (t.clone(), observers[t].channel_means()))
            .collect()
    } else {
        HashMap::new()
    };
    let mut proto = proto.clone();
    let folded = qdq::rewrite(onnx::graph_mut(&mut proto), plan, &qparams, &means)?;
    Ok(Quantized {
        proto,
        activations,
        folded,
    })
}

/// One candidate on one held-out fold.
#[derive(Debug, Clone, Serialize)]
pub struct FoldScore {
    pub images: usize,
    /// Classifier: share of the fold's photos with float's top-1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// Detector: float's detections on the fold, and how many int8 kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<usize>,
    pub cosine_mean: f64,
}

impl FoldScore {
    /// The score candidates are ranked by first.
    fn primary(&self) -> f64 {
        match (self.agreement, self.detections, self.kept) {
            (Some(agreement), _, _) => agreement,
            (None, Some(0), _) => 1.0,
            (None, Some(found), Some(kept)) => kept as f64 / found as f64,
            _ => 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub setting: String,
    pub method: String,
    pub percentile: Option<f64>,
    pub bias_correction: bool,
    pub ends_float: bool,
    /// The per-fold mean of the primary score (agreement, or detections kept)
    /// and of output cosine.
    pub score: f64,
    pub cosine: f64,
    pub folds: Vec<FoldScore>,
}

/// What auto tried, and what it chose: written to quantization.json and printed.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub folds: usize,
    pub photos: usize,
    /// What `score` measures.
    pub score: String,
    pub seconds: f64,
    pub chosen: String,
    pub why: String,
    pub ends: Vec<String>,
    pub candidates: Vec<Candidate>,
    #[serde(skip)]
    pub setting: Option<Setting>,
}

/// What the search needs besides the observations.
pub struct Search<'a> {
    pub source: &'a Bundle,
    /// The float graph, BatchNorm folded.
    pub proto: &'a ModelProto,
    pub plans: &'a Plans,
    pub ends: Vec<String>,
    pub percentile: f64,
    pub threads: usize,
}

impl Search<'_> {
    /// Scores every candidate on every fold of `observed` (made with `keep`)
    /// and picks the best.
    pub fn run(&self, observed: &Observed) -> Result<Choice> {
        let start = Instant::now();
        let folds = observed.folds.len();
        let settings = candidates(self.percentile);
        let bar = images::progress(settings.len() * observed.used, "auto");
        let scratch = tempfile::tempdir().context("a temporary folder for auto's candidates")?;
        let mut scores: Vec<Vec<FoldScore>> = vec![Vec::new(); settings.len()];
        for fold in 0..folds {
            let observers = observed.merged(Some(fold));
            for (setting, scores) in settings.iter().zip(&mut scores) {
                bar.set_message(format!("fold {}/{folds}", fold + 1));
                let model = apply(self.proto, self.plans.get(setting), &observers, setting)?;
                let dir = scratch.path().join("candidate");
                let record = self.record(&model, setting, observed.used, None);
                bundle::write(self.source, &model.proto, &dir, &record)?;
                scores.push(self.score(&dir, observed, fold, &bar)?);
            }
        }
        bar.finish_and_clear();
        let candidates: Vec<Candidate> = settings
            .iter()
            .zip(scores)
            .map(|(s, folds)| candidate(s, folds))
            .collect();
        let best = (0..candidates.len())
            .reduce(|best, i| {
                let (a, b) = (&candidates[best], &candidates[i]);
                let better = (b.score, b.cosine) > (a.score, a.cosine);
                if better { i } else { best }
            })
            .expect("at least one candidate");
        let detector = self.source.manifest.output.decoding == Decoding::Yolov5;
        let score = if detector {
            "share of float's detections int8 keeps (same class, IoU >= 0.85, score within 0.05)"
        } else {
            "top-1 agreement with float"
        };
        let chosen = &candidates[best];
        Ok(Choice {
            folds,
            photos: observed.used,
            score: score.to_string(),
            seconds: start.elapsed().as_secs_f64(),
            chosen: chosen.setting.clone(),
            why: format!(
                "highest mean {} over the {folds} held-out folds ({:.4}), then output cosine ({:.4}); ties go to the candidate listed first",
                if detector {
                    "detections kept"
                } else {
                    "agreement"
                },
                chosen.score,
                chosen.cosine
            ),
            ends: self.ends.clone(),
            candidates,
            setting: Some(settings[best]),
        })
    }

    /// The record of an int8 model made with `setting`.
    pub fn record(
        &self,
        model: &Quantized,
        setting: &Setting,
        images: usize,
        auto: Option<Choice>,
    ) -> Record {
        let plan = self.plans.get(setting);
        Record {
            source_network: self.source.manifest.network.clone(),
            source_sha256: self.source.manifest.sha256.clone(),
            method: format!("{:?}", setting.method)
                .to_lowercase()
                .replace("minmax", "min-max"),
            percentile: (setting.method == Method::Percentile).then_some(setting.percentile),
            bias_correction: setting.bias_correction,
            calibration_images: images,
            float_layers: plan.float_layers.clone(),
            int8_layers: plan.layers.len(),
            folded_clamps: model.folded.clone(),
            activations: model.activations.clone(),
            auto,
        }
    }

    /// Runs the int8 bundle in `dir` on fold `fold`'s photos against float's
    /// outputs.
    fn score(
        &self,
        dir: &std::path::Path,
        observed: &Observed,
        fold: usize,
        bar: &indicatif::ProgressBar,
    ) -> Result<FoldScore> {
        let bundle = Bundle::open(dir)?;
        let manifest = bundle.manifest.clone();
        let options = ModelOptions {
            threads: self.threads,
            ..Default::default()
        };
        let mut pipeline = Pipeline::load(bundle, Task::head(&manifest), &options)?;
        let detector = manifest.output.decoding == Decoding::Yolov5;
        let [_, _, h, w] = pipeline.input_shape();
        // IoU does not change under the letterbox's scale and shift, so boxes
        // are compared in model-input pixels.
        let geometry = Geometry {
            scale_x: 1.0,
            scale_y: 1.0,
            offset_x: 0.0,
            offset_y: 0.0,
            frame_width: w as u32,
            frame_height: h as u32,
        };
        let decode = |rows: &[f32], width: usize| -> Vec<Detection> {
            let (conf, iou) = (manifest.output.conf, manifest.output.iou);
            yolov5::decode(rows, width - 5, conf, iou, &geometry, |c| c.to_string())
        };
        let (mut images, mut agree, mut found, mut kept) = (0, 0, 0, 0);
        let mut cosines = 0.0;
        for i in observed.fold_members(fold) {
            bar.inc(1);
            let outputs = pipeline.infer(observed.inputs[i].clone())?;
            let (q, f) = (f32_values(&outputs[0])?, &observed.outputs[i]);
            images += 1;
            cosines += cosine(f, q);
            if detector {
                let width = *outputs[0].shape().last().unwrap_or(&6);
                let (f, q) = (decode(f, width), decode(q, width));
                found += f.len();
                let matches = match_detections(&f, &q);
                kept += f
                    .iter()
                    .zip(matches)
                    .filter(|(d, m)| is_kept(d, *m, &q))
                    .count();
            } else {
                agree += usize::from(argmax(f) == argmax(q));
            }
        }
        let images_f = images.max(1) as f64;
        Ok(FoldScore {
            images,
            agreement: (!detector).then(|| agree as f64 / images_f),
            detections: detector.then_some(found),
            kept: detector.then_some(kept),
            cosine_mean: cosines / images_f,
        })
    }
}

fn candidate(setting: &Setting, folds: Vec<FoldScore>) -> Candidate {
    let n = folds.len().max(1) as f64;
    Candidate {
        setting: setting.name(),
        method: format!("{:?}", setting.method).to_lowercase(),
        percentile: (setting.method == Method::Percentile).then_some(setting.percentile),
        bias_correction: setting.bias_correction,
        ends_float: setting.wide_ends,
        score: folds.iter().map(FoldScore::primary).sum::<f64>() / n,
        cosine: folds.iter().map(|f| f.cosine_mean).sum::<f64>() / n,
        folds,
    }
}

fn argmax(values: &[f32]) -> usize {
    (0..values.len())
        .max_by(|&i, &j| values[i].total_cmp(&values[j]).then(j.cmp(&i)))
        .unwrap_or(0)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        writeln!(
            f,
            "auto: {} candidates, {}-fold on {} calibration photos ({:.0} s); score: {}",
            self.candidates.len(),
            self.folds,
            self.photos,
            self.seconds,
            self.score
        )?;
        writeln!(
            f,
            "  ends (float in \"ends float\"): {}",
            self.ends.join(", ")
        )?;
        writeln!(
            f,
            "  {:<44} {:>7} {:>8}  per fold",
            "candidate", "score", "cosine"
        )?;
        for c in &self.candidates {
            let folds: Vec<String> = c
                .folds
                .iter()
                .map(|s| format!("{:.3}", s.primary()))
                .collect();
            let mark = if c.setting == self.chosen { "*" } else { " " };
            writeln!(
                f,
                "{mark} {:<44} {:>7.4} {:>8.4}  {}",
                c.setting,
                c.score,
                c.cosine,
                folds.join(" ")
            )?;
        }
        write!(f, "chosen: {} ({})", self.chosen, self.why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_candidates_all_int8_first() {
        let all = candidates(99.99);
        assert_eq!(all.len(), 12);
        assert!(all[..4].iter().all(|s| !s.wide_ends));
        assert_eq!(all[0].name(), "min-max");
        assert_eq!(all[1].name(), "percentile 99.99");
        assert_eq!(all[11].name(), "entropy + bias correction + ends float");
    }

    #[test]
    fn a_detector_fold_without_detections_scores_one() {
        let fold = |detections, kept| FoldScore {
            images: 3,
            agreement: None,
            detections: Some(detections),
            kept: Some(kept),
            cosine_mean: 0.9,
        };
        assert_eq!(fold(0, 0).primary(), 1.0);
        assert_eq!(fold(4, 3).primary(), 0.75);
        let folds = vec![fold(4, 3), fold(0, 0)];
        let c = candidate(&candidates(99.99)[0], folds);
        assert!((c.score - 0.875).abs() < 1e-12);
    }
}
