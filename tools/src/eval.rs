//! Float against int8 on a folder of photos: what quantization cost.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use edgebone::decode::yolov5::{Detection, iou};
use edgebone::decode::{Results, Task, f32_values};
use edgebone::model::{Decoding, ModelOptions};
use edgebone::{Bundle, Pipeline, RgbFrame};
use serde::Serialize;

use crate::images;

#[derive(Debug, Serialize)]
pub struct Report {
    pub images: usize,
    /// Images with a label (the folder's labels.tsv).
    pub labelled: usize,
    pub float_top1: Option<f64>,
    pub int8_top1: Option<f64>,
    /// Share of images where both models give the same top-1 class
    /// (classifiers).
    pub agreement: Option<f64>,
    /// Cosine similarity of the two models' outputs: mean and worst.
    pub cosine_mean: f64,
    pub cosine_min: f64,
    /// The two models' detections after decoding (detectors).
    pub detections: Option<DetectionReport>,
}

/// Float's detections taken as the reference for int8's, in image pixels.
#[derive(Debug, Serialize)]
pub struct DetectionReport {
    pub float: usize,
    pub int8: usize,
    /// Pairs of the same class overlapping by IoU ≥ 0.5, matched greedily from
    /// float's highest score down.
    pub matched: usize,
    /// 2·matched / (float + int8): 1 when int8 finds exactly float's objects.
    pub agreement: f64,
    /// IoU of the matched pairs: mean and worst.
    pub iou_mean: f64,
    pub iou_min: f64,
    /// Float's detections that int8 keeps: matched with IoU ≥ 0.85 and a score
    /// within 0.05 of float's.
    pub kept: usize,
    /// kept / float (1 when float finds nothing).
    pub kept_share: f64,
    /// Float's detections that int8 does not keep, by image.
    pub lost: Vec<LostObject>,
}

/// One of float's detections that int8 lost or moved.
#[derive(Debug, Clone, Serialize)]
pub struct LostObject {
    pub image: String,
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// int8's best detection of the same class there, if any: its IoU with
    /// float's box and its score.
    pub int8_iou: Option<f32>,
    pub int8_score: Option<f32>,
}

/// IoU from which two detections are the same object.
const SAME_OBJECT_IOU: f32 = 0.5;
/// IoU and score difference within which int8 keeps one of float's detections
/// (issue 15's bar for a detector's calibration).
pub const KEPT_IOU: f32 = 0.85;
pub const KEPT_SCORE: f32 = 0.05;

/// For each of float's detections (by falling score, as decoding returns them),
/// int8's same-class detection that overlaps it most, if by IoU ≥ 0.5: its index
/// and the IoU. Greedy, each int8 detection used once.
pub fn match_detections(float: &[Detection], int8: &[Detection]) -> Vec<Option<(usize, f32)>> {
    let mut taken = vec![false; int8.len()];
    float
        .iter()
        .map(|f| {
            let best = int8
                .iter()
                .enumerate()
                .filter(|(i, q)| !taken[*i] && q.class == f.class)
                .map(|(i, q)| (i, iou(&f.bbox, &q.bbox)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .filter(|b| b.1 >= SAME_OBJECT_IOU);
            if let Some((i, _)) = best {
                taken[i] = true;
            }
            best
        })
        .collect()
}

/// Whether int8's match keeps float's detection `f`.
pub fn is_kept(f: &Detection, matched: Option<(usize, f32)>, int8: &[Detection]) -> bool {
    matched.is_some_and(|(i, overlap)| {
        overlap >= KEPT_IOU && (int8[i].score - f.score).abs() <= KEPT_SCORE
    })
}

/// Runs both bundles on every image of `sources` (folders, or single image
/// files); a folder's `labels.tsv` labels its photos.
pub fn compare(
    float: &Bundle,
    int8: &Bundle,
    sources: &[PathBuf],
    threads: usize,
) -> Result<Report> {
    let (a, b) = (&float.manifest.input, &int8.manifest.input);
    if (a.width, a.height) != (b.width, b.height) {
        bail!(
            "{} takes {}x{} input but {} takes {}x{}",
            float.dir.display(),
            a.width,
            a.height,
            int8.dir.display(),
            b.width,
            b.height
        );
    }
    let mut files = Vec::new();
    let mut labels: HashMap<PathBuf, usize> = HashMap::new();
    for source in sources {
        if source.is_file() {
            files.push(source.clone());
            continue;
        }
        let listed = images::list(source, "evaluation")?;
        if let Some(by_name) = images::labels(source)? {
            for path in &listed {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Some(&label) = by_name.get(name) {
                    labels.insert(path.clone(), label);
                }
            }
        }
        files.extend(listed);
    }
    let decoding = float.manifest.output.decoding;
    let mut float = pipeline(float, threads)?;
    let mut int8 = pipeline(int8, threads)?;
    let mut tally = Tally::default();
    let bar = images::progress(files.len(), "evaluating");
    for path in &files {
        bar.inc(1);
        // An image the float model cannot take (unreadable, too small) is skipped;
        // the int8 model takes the same input, so its failure is an error.
        let run = RgbFrame::open(path).and_then(|frame| Ok((float.run_with_raw(&frame)?, frame)));
        let ((f, f_raw), frame) = match run {
            Ok(run) => run,
            Err(err) => {
                bar.suspend(|| log::warn!("skipped: {err}"));
                continue;
            }
        };
        let (q, q_raw) = int8
            .run_with_raw(&frame)
            .with_context(|| path.display().to_string())?;
        if let (Results::Detections(f), Results::Detections(q)) = (&f, &q) {
            tally.detections.add(&path.display().to_string(), f, q);
        }
        let label = labels.get(path).copied();
        tally.add(f32_values(&f_raw)?, f32_values(&q_raw)?, label);
    }
    bar.finish_and_clear();
    tally.report(decoding)
}

/// The bundle's own head, decoded as the manifest says (detections with its
/// thresholds).
fn pipeline(bundle: &Bundle, threads: usize) -> Result<Pipeline> {
    let options = ModelOptions {
        threads,
        ..Default::default()
    };
    let task = Task::head(&bundle.manifest);
    Ok(Pipeline::load(bundle.clone(), task, &options)?)
}

#[derive(Default)]
struct DetectionTally {
    float: usize,
    int8: usize,
    ious: Vec<f64>,
    kept: usize,
    lost: Vec<LostObject>,
}

impl DetectionTally {
    fn add(&mut self, image: &str, float: &[Detection], int8: &[Detection]) {
        self.float += float.len();
        self.int8 += int8.len();
        for (f, matched) in float.iter().zip(match_detections(float, int8)) {
            if let Some((_, overlap)) = matched {
                self.ious.push(overlap as f64);
            }
            if is_kept(f, matched, int8) {
                self.kept += 1;
                continue;
            }
            // Where int8 has a same-class box on float's, even a poor one, say
            // how far off it is.
            let nearest = int8
                .iter()
                .filter(|q| q.class == f.class)
                .map(|q| (iou(&f.bbox, &q.bbox), q.score))
                .filter(|(overlap, _)| *overlap > 0.0)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            self.lost.push(LostObject {
                image: image.to_string(),
                label: f.label.clone(),
                score: f.score,
                bbox: f.bbox,
                int8_iou: nearest.map(|n| n.0),
                int8_score: nearest.map(|n| n.1),
            });
        }
    }

    fn report(&self) -> DetectionReport {
        let matched = self.ious.len();
        DetectionReport {
            float: self.float,
            int8: self.int8,
            matched,
            agreement: if self.float + self.int8 == 0 {
                1.0
            } else {
                2.0 * matched as f64 / (self.float + self.int8) as f64
            },
            iou_mean: self.ious.iter().sum::<f64>() / matched.max(1) as f64,
            iou_min: self.ious.iter().copied().fold(1.0, f64::min),
            kept: self.kept,
            kept_share: if self.float == 0 {
                1.0
            } else {
                self.kept as f64 / self.float as f64
            },
            lost: self.lost.clone(),
        }
    }
}

#[derive(Default)]
struct Tally {
    images: usize,
    labelled: usize,
    float_right: usize,
    int8_right: usize,
    agree: usize,
    cosines: Vec<f64>,
    detections: DetectionTally,
}

impl Tally {
    fn add(&mut self, float: &[f32], int8: &[f32], label: Option<usize>) {
        let (f, q) = (argmax(float), argmax(int8));
        self.images += 1;
        self.agree += usize::from(f == q);
        if let Some(label) = label {
            self.labelled += 1;
            self.float_right += usize::from(f == label);
            self.int8_right += usize::from(q == label);
        }
        self.cosines.push(cosine(float, int8));
    }

    fn report(self, decoding: Decoding) -> Result<Report> {
        if self.images == 0 {
            bail!("no evaluation image could be read");
        }
        let share = |n: usize, of: usize| n as f64 / of as f64;
        // ImageNet labels say nothing of a detector's COCO classes.
        let classifier = decoding == Decoding::Classifier;
        let labelled = (self.labelled > 0 && classifier).then_some(self.labelled);
        Ok(Report {
            images: self.images,
            labelled: self.labelled,
            float_top1: labelled.map(|l| share(self.float_right, l)),
            int8_top1: labelled.map(|l| share(self.int8_right, l)),
            agreement: (decoding == Decoding::Classifier).then(|| share(self.agree, self.images)),
            cosine_mean: self.cosines.iter().sum::<f64>() / self.images as f64,
            cosine_min: self.cosines.iter().copied().fold(f64::INFINITY, f64::min),
            detections: (decoding == Decoding::Yolov5).then(|| self.detections.report()),
        })
    }
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let percent = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
        writeln!(
            f,
            "images              {} ({} labelled)",
            self.images, self.labelled
        )?;
        writeln!(f, "top-1 float         {}", percent(self.float_top1))?;
        writeln!(f, "top-1 int8          {}", percent(self.int8_top1))?;
        writeln!(f, "top-1 agreement     {}", percent(self.agreement))?;
        write!(
            f,
            "output cosine       mean {:.4}, worst {:.4}",
            self.cosine_mean, self.cosine_min
        )?;
        if let Some(d) = &self.detections {
            write!(
                f,
                "\ndetections          float {}, int8 {}, matched {} (agreement {}), IoU mean {:.3}, worst {:.3}",
                d.float,
                d.int8,
                d.matched,
                percent(Some(d.agreement)),
                d.iou_mean,
                d.iou_min
            )?;
            write!(
                f,
                "\nkept                {} of {} float detections ({}) with IoU >= {KEPT_IOU} and score within {KEPT_SCORE}",
                d.kept,
                d.float,
                percent(Some(d.kept_share))
            )?;
            for lost in &d.lost {
                let int8 = match (lost.int8_iou, lost.int8_score) {
                    (Some(overlap), Some(score)) => {
                        format!("int8 IoU {overlap:.3}, score {score:.3}")
                    }
                    _ => "int8: none of that class there".to_string(),
                };
                let [x1, y1, x2, y2] = lost.bbox;
                write!(
                    f,
                    "\n  lost: {} {} {:.3} [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]; {int8}",
                    lost.image, lost.label, lost.score
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_accuracy_and_agreement() {
        let mut t = Tally::default();
        t.add(&[0.0, 1.0], &[0.0, 1.0], Some(1));
        t.add(&[1.0, 0.0], &[0.0, 1.0], Some(0));
        t.add(&[1.0, 0.0], &[1.0, 0.1], None);
        let r = t.report(Decoding::Classifier).unwrap();
        assert_eq!((r.images, r.labelled), (3, 2));
        assert_eq!(r.float_top1, Some(1.0));
        assert_eq!(r.int8_top1, Some(0.5));
        assert!((r.agreement.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!(
            r.cosine_min.abs() < 1e-12,
            "orthogonal outputs: {}",
            r.cosine_min
        );
    }

    fn det(class: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            class,
            label: class.to_string(),
            score,
            bbox,
        }
    }

    #[test]
    fn detections_match_by_class_and_overlap() {
        let mut t = DetectionTally::default();
        let float = [
            det(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
            det(5, 0.8, [20.0, 20.0, 40.0, 40.0]),
            det(0, 0.5, [50.0, 50.0, 60.0, 60.0]),
        ];
        let int8 = [
            // Same person, shifted by one pixel: IoU 81/119.
            det(0, 0.85, [1.0, 1.0, 11.0, 11.0]),
            // Right place, wrong class: no match.
            det(2, 0.7, [20.0, 20.0, 40.0, 40.0]),
        ];
        t.add("a.jpg", &float, &int8);
        let r = t.report();
        assert_eq!((r.float, r.int8, r.matched), (3, 2, 1));
        assert!((r.agreement - 0.4).abs() < 1e-12, "{}", r.agreement);
        assert!((r.iou_min - 81.0 / 119.0).abs() < 1e-6, "{}", r.iou_min);
        // IoU 0.68 is the same object but not kept; nothing is kept here.
        assert_eq!(r.kept, 0);
        assert_eq!(r.lost.len(), 3);
        assert_eq!(r.lost[0].int8_iou, Some(81.0 / 119.0));
        assert_eq!(r.lost[2].int8_iou, None);
    }

    #[test]
    fn kept_needs_close_boxes_and_close_scores() {
        let mut t = DetectionTally::default();
        let float = [
            det(0, 0.90, [0.0, 0.0, 100.0, 100.0]),
            det(1, 0.27, [200.0, 0.0, 300.0, 100.0]),
            det(2, 0.60, [0.0, 200.0, 100.0, 300.0]),
        ];
        let int8 = [
            // IoU 0.96, score 0.04 lower: kept.
            det(0, 0.86, [0.0, 0.0, 100.0, 96.0]),
            // Same box, but the score fell by 0.06: lost.
            det(1, 0.21, [200.0, 0.0, 300.0, 100.0]),
            // Score equal, box IoU 0.8: lost.
            det(2, 0.60, [0.0, 200.0, 100.0, 280.0]),
        ];
        t.add("b.jpg", &float, &int8);
        let r = t.report();
        assert_eq!((r.matched, r.kept), (3, 1));
        assert!((r.kept_share - 1.0 / 3.0).abs() < 1e-12);
        let lost: Vec<&str> = r.lost.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(lost, ["1", "2"]);
        assert_eq!(r.lost[0].int8_score, Some(0.21));
    }
}
