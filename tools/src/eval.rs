//! Float against int8 on a folder of photos: what quantization cost.

use std::path::Path;

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
}

/// IoU from which two detections are the same object.
const SAME_OBJECT_IOU: f32 = 0.5;

pub fn compare(float: &Bundle, int8: &Bundle, dir: &Path, threads: usize) -> Result<Report> {
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
    let files = images::list(dir, "evaluation")?;
    let labels = images::labels(dir)?;
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
            tally.detections.add(f, q);
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let label = labels.as_ref().and_then(|l| l.get(name)).copied();
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
}

impl DetectionTally {
    fn add(&mut self, float: &[Detection], int8: &[Detection]) {
        self.float += float.len();
        self.int8 += int8.len();
        let mut taken = vec![false; int8.len()];
        // Decoding returns detections by falling score.
        for f in float {
            let best = int8
                .iter()
                .enumerate()
                .filter(|(i, q)| !taken[*i] && q.class == f.class)
                .map(|(i, q)| (i, iou(&f.bbox, &q.bbox)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, overlap)) = best.filter(|b| b.1 >= SAME_OBJECT_IOU) {
                taken[i] = true;
                self.ious.push(overlap as f64);
            }
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
        let labelled = (self.labelled > 0).then_some(self.labelled);
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
        t.add(&float, &int8);
        let r = t.report();
        assert_eq!((r.float, r.int8, r.matched), (3, 2, 1));
        assert!((r.agreement - 0.4).abs() < 1e-12, "{}", r.agreement);
        assert!((r.iou_min - 81.0 / 119.0).abs() < 1e-6, "{}", r.iou_min);
    }
}
