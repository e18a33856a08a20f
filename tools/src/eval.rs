//! Float against int8 on a folder of photos: what quantization cost.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use edgebone::Bundle;
use edgebone::model::{Model, ModelOptions};
use serde::Serialize;

use crate::images;

#[derive(Debug, Serialize)]
pub struct Report {
    pub images: usize,
    /// Images with a label (the folder's labels.tsv).
    pub labelled: usize,
    pub float_top1: Option<f64>,
    pub int8_top1: Option<f64>,
    /// Share of images where both models give the same top-1 class.
    pub agreement: f64,
    /// Cosine similarity of the two models' outputs: mean and worst.
    pub cosine_mean: f64,
    pub cosine_min: f64,
}

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
    let options = ModelOptions {
        threads,
        ..Default::default()
    };
    let mut float_model = Model::load(float, &options)?;
    let mut int8_model = Model::load(int8, &options)?;
    let mut tally = Tally::default();
    images::for_each(&files, a, "evaluating", |path, input| {
        let f = float_model.run(input.clone())?;
        let q = int8_model.run(input)?;
        let (f, q) = (
            edgebone::decode::f32_values(&f[0])?,
            edgebone::decode::f32_values(&q[0])?,
        );
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let label = labels.as_ref().and_then(|l| l.get(name)).copied();
        tally.add(f, q, label);
        Ok(())
    })
    .map_err(|e| anyhow!("{e:#}"))?;
    tally.report()
}

#[derive(Default)]
struct Tally {
    images: usize,
    labelled: usize,
    float_right: usize,
    int8_right: usize,
    agree: usize,
    cosines: Vec<f64>,
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

    fn report(self) -> Result<Report> {
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
            agreement: share(self.agree, self.images),
            cosine_mean: self.cosines.iter().sum::<f64>() / self.images as f64,
            cosine_min: self.cosines.iter().copied().fold(f64::INFINITY, f64::min),
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
        writeln!(f, "top-1 agreement     {}", percent(Some(self.agreement)))?;
        write!(
            f,
            "output cosine       mean {:.4}, worst {:.4}",
            self.cosine_mean, self.cosine_min
        )
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
        let r = t.report().unwrap();
        assert_eq!((r.images, r.labelled), (3, 2));
        assert_eq!(r.float_top1, Some(1.0));
        assert_eq!(r.int8_top1, Some(0.5));
        assert!((r.agreement - 2.0 / 3.0).abs() < 1e-12);
        assert!(
            r.cosine_min.abs() < 1e-12,
            "orthogonal outputs: {}",
            r.cosine_min
        );
    }
}
