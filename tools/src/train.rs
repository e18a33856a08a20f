//! `quantize train-head`: a new classifier trained on a frozen backbone.
//!
//! Every photo goes once through the runtime's own path (`Pipeline` with the
//! features task: the manifest's preprocessing, the network up to its taps, the
//! deepest tap average-pooled), so the head learns on exactly the embeddings a
//! device computes. The head is softmax regression over those embeddings,
//! written here rather than taken from a crate: it is ~100 lines (forward,
//! gradient, Adam), the data fit in memory many times over, and the candidates
//! (linfa-logistic, smartcore) pull in ndarray/argmin stacks and fix their own
//! optimizer, stopping rule and progress reporting, which are what this command
//! is asked to control.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgebone::model::ModelOptions;
use edgebone::{Bundle, Pipeline, Results, RgbFrame, Task};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::head::{self, Rng};
use crate::images;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The bundle whose backbone is used, frozen; its head is replaced.
    bundle: PathBuf,
    /// One subfolder per class (ImageFolder layout); folder names become labels.
    #[arg(long)]
    data: PathBuf,
    /// Where to write the trained bundle.
    #[arg(long)]
    out: PathBuf,
    /// Evaluate the trained head on this folder (same layout and class names).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Embedding cache folder; default $XDG_CACHE_HOME/edgebone/embeddings or
    /// ~/.cache/edgebone/embeddings.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Compute every embedding again and do not store them.
    #[arg(long)]
    no_cache: bool,
    /// Seed of the validation split, the initial weights and the shuffles.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of each class's photos held out for validation and early stopping.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Do not also train on the embeddings of the horizontally flipped photos
    /// (by default they are added: on the animal-or-object set, test accuracy
    /// 0.95 with them, 0.93 without; docs/training.md).
    #[arg(long = "no-flip", action = clap::ArgAction::SetFalse)]
    flip: bool,
    /// Keep the head of the best epoch as it is, instead of training it again on
    /// the training and validation photos together for that many epochs.
    #[arg(long = "no-refit", action = clap::ArgAction::SetFalse)]
    refit: bool,
    /// At most this many passes over the training photos.
    #[arg(long, default_value_t = 200)]
    epochs: usize,
    /// Stop when the validation loss has not improved for this many epochs.
    #[arg(long, default_value_t = 15)]
    patience: usize,
    /// Adam's step size.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// L2 penalty on the (standardized) weights, not the bias: strong, because a
    /// few hundred photos in 1280 dimensions are fitted exactly without it.
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Threads for inference.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// One labelled photo's embedding(s).
struct Sample {
    file: PathBuf,
    class: usize,
    embedding: Vec<f32>,
    flipped: Option<Vec<f32>>,
}

#[derive(Debug, Serialize)]
struct Epoch {
    epoch: usize,
    train_loss: f64,
    train_accuracy: f64,
    val_loss: f64,
    val_accuracy: f64,
}

#[derive(Debug, Serialize)]
struct Prediction {
    file: String,
    label: String,
    predicted: String,
}

pub fn train_head(args: &TrainArgs) -> Result<()> {
    if !(0.0..1.0).contains(&args.val_fraction) || args.val_fraction == 0.0 {
        bail!(
            "--val-fraction {}: expected a share between 0 and 1",
            args.val_fraction
        );
    }
    let source = Bundle::open(&args.bundle)?;
    let classes = class_folders(&args.data)?;
    let names: Vec<String> = classes.iter().map(|(n, _)| n.clone()).collect();
    let mut proto = edgebone::onnx::load(&source.network_path())?;
    let graph = edgebone::onnx::graph_mut(&mut proto);
    let old = head::find(graph, source.manifest.output.name.as_deref())?;
    let mut embedder = Embedder::new(&source, args)?;
    embedder.check_head(&source, graph, &old, &classes[0].1)?;

    let mut samples = Vec::new();
    for (class, (_, files)) in classes.iter().enumerate() {
        for file in files {
            samples.push((file.clone(), class));
        }
    }
    let samples = embedder.embed_all(samples, args.flip, "embedding")?;
    let mut counts = vec![0usize; names.len()];
    samples.iter().for_each(|s| counts[s.class] += 1);
    if let Some((i, _)) = counts.iter().enumerate().find(|(_, n)| **n == 0) {
        bail!(
            "{}: no readable photo in class folder {:?}",
            args.data.display(),
            names[i]
        );
    }

    let (train, val) = split(&samples, names.len(), args.val_fraction, args.seed);
    if val.is_empty() {
        bail!(
            "{}: too few photos for a validation split ({} in all)",
            args.data.display(),
            samples.len()
        );
    }
    log::info!(
        "{} classes ({}), {} photos: {} to train on{}, {} to validate; head {} over {} features",
        names.len(),
        names
            .iter()
            .zip(&counts)
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        samples.len(),
        train.len(),
        if args.flip {
            " (and their mirror images)"
        } else {
            ""
        },
        val.len(),
        old.layer,
        old.features
    );
    let mut xs: Vec<&[f32]> = Vec::new();
    let mut ys = Vec::new();
    for &i in &train {
        xs.push(&samples[i].embedding);
        ys.push(samples[i].class);
        if let Some(f) = &samples[i].flipped {
            xs.push(f);
            ys.push(samples[i].class);
        }
    }
    let vx: Vec<&[f32]> = val
        .iter()
        .map(|&i| samples[i].embedding.as_slice())
        .collect();
    let vy: Vec<usize> = val.iter().map(|&i| samples[i].class).collect();
    let (model, history, best) = fit(&xs, &ys, &vx, &vy, names.len(), args, args.epochs, true);
    let best_epoch = &history[best];
    // The split has chosen how long to train; the head then learns from every
    // photo for that many epochs (on the full animal-or-object set this takes
    // test accuracy from 0.92 to 0.95, docs/training.md).
    let model = if args.refit {
        let all_x: Vec<&[f32]> = xs.iter().chain(&vx).copied().collect();
        let all_y: Vec<usize> = ys.iter().chain(&vy).copied().collect();
        println!(
            "refitting on all {} photos for {} epochs",
            samples.len(),
            best_epoch.epoch
        );
        fit(
            &all_x,
            &all_y,
            &vx,
            &vy,
            names.len(),
            args,
            best_epoch.epoch,
            false,
        )
        .0
    } else {
        model
    };
    let (w, b) = model.unstandardized();

    let test = match &args.test {
        Some(dir) => Some(evaluate(&mut embedder, dir, &names, &w, &b)?),
        None => None,
    };
    let new = head::replace(graph, &old, &w, &b)?;
    let mut sidecar = head::Sidecar::new(&source, &new, args.seed);
    sidecar.init = format!("trained by `quantize train-head` from {}", head::INIT);
    let training = serde_json::json!({
        "data": args.data.display().to_string(),
        "classes": names.iter().zip(&counts).map(|(n, c)| (n.clone(), *c)).collect::<BTreeMap<_, _>>(),
        "skipped": embedder.skipped.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "train_photos": train.len(),
        "val_photos": val.len(),
        "val_fraction": args.val_fraction,
        "flip": args.flip,
        "optimizer": format!("Adam (lr {}, betas 0.9/0.999), L2 {} on the weights, batch {}, inputs standardized then folded into the weights", args.lr, args.weight_decay, args.batch),
        "epochs_run": history.len(),
        "refit_on_all": args.refit,
        "best_epoch": best_epoch,
        "history": history,
        "test": test,
    });
    sidecar.training = Some(training);
    let out = head::write_bundle(
        &source,
        &proto,
        &new,
        &names,
        &args.out,
        &sidecar,
        "a head trained by `quantize train-head`",
    )?;
    // The bundle must load as `edgebone classify` loads it.
    let bundle = Bundle::open(&out)?;
    Pipeline::load(bundle, Task::Classify { top_k: 1 }, &Default::default())?;
    if !embedder.skipped.is_empty() {
        log::warn!(
            "skipped {} unreadable image(s): {}",
            embedder.skipped.len(),
            embedder
                .skipped
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "best epoch {} of {}: val loss {:.4}, val accuracy {:.4} ({} photos)",
        best_epoch.epoch,
        history.len(),
        best_epoch.val_loss,
        best_epoch.val_accuracy,
        val.len()
    );
    if let Some(t) = &sidecar.training.as_ref().and_then(|t| t.get("test")) {
        println!(
            "test accuracy {:.4} on {} photos ({})",
            t["accuracy"].as_f64().unwrap_or_default(),
            t["images"],
            args.test
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    println!("wrote {}", out.display());
    Ok(())
}

/// The class subfolders, sorted by name, each with its images.
fn class_folders(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("data folder {}", dir.display()))?;
    let mut folders = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| dir.display().to_string())?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() && !name.starts_with('.') {
            folders.push((name.to_string(), path.clone()));
        }
    }
    folders.sort();
    if folders.len() < 2 {
        bail!(
            "data folder {}: {} class folder(s){}; train-head needs at least two, one \
             subfolder of photos per class (the ImageFolder layout)",
            dir.display(),
            folders.len(),
            match folders.first() {
                Some((name, _)) => format!(" ({name})"),
                None => String::new(),
            }
        );
    }
    folders
        .into_iter()
        .map(|(name, path)| {
            Ok((
                name.clone(),
                images::list(&path, &format!("class {name:?}"))?,
            ))
        })
        .collect()
}

/// Embeddings through the runtime's features task, cached by bundle and content.
struct Embedder {
    pipeline: Pipeline,
    cache: Option<PathBuf>,
    skipped: Vec<PathBuf>,
}

impl Embedder {
    fn new(source: &Bundle, args: &TrainArgs) -> Result<Embedder> {
        let options = ModelOptions {
            threads: args.threads,
            ..Default::default()
        };
        let pipeline = Pipeline::load(source.clone(), Task::Features, &options)?;
        let cache = if args.no_cache {
            None
        } else {
            args.cache.clone().or_else(default_cache).map(|root| {
                // An embedding depends on the network and the preprocessing; both
                // are in the key, so a changed bundle never reads stale values.
                let mut h = Sha256::new();
                h.update(source.manifest.sha256.as_bytes());
                h.update(format!("{:?}", source.manifest.input).as_bytes());
                h.update(
                    format!(
                        "{:?}",
                        source
                            .manifest
                            .taps
                            .iter()
                            .map(|t| &t.tensor)
                            .collect::<Vec<_>>()
                    )
                    .as_bytes(),
                );
                root.join(hex(&h.finalize()[..16]))
            })
        };
        if let Some(dir) = &cache {
            log::info!("embedding cache: {}", dir.display());
        }
        Ok(Embedder {
            pipeline,
            cache,
            skipped: Vec::new(),
        })
    }

    /// The head must read the pooled embedding as it is (ResNet's fc, MobileNetV2's,
    /// EfficientNet's and DenseNet's last Linear): checked on one photo, the
    /// source head applied to its embedding against the bundle's own logits.
    fn check_head(
        &mut self,
        source: &Bundle,
        graph: &tract_onnx::pb::GraphProto,
        old: &head::Head,
        files: &[PathBuf],
    ) -> Result<()> {
        let (w, b) = head::read(graph, old)?;
        let mut classify = Pipeline::load(
            source.clone(),
            Task::Classify { top_k: 1 },
            &Default::default(),
        )?;
        for file in files {
            let Ok(frame) = RgbFrame::open(file) else {
                continue;
            };
            let embedding = self.embed_frame(&frame)?;
            if embedding.len() != old.features {
                bail!(
                    "{}: the pooled embedding has {} values but the head {} reads {}: \
                     train-head needs a head that reads the pooled deepest tap",
                    source.dir.display(),
                    embedding.len(),
                    old.layer,
                    old.features
                );
            }
            let (_, raw) = classify.run_with_raw(&frame)?;
            let logits = edgebone::decode::f32_values(&raw)?;
            let mine = affine(&w, &b, &embedding);
            let err = rel_l2(&mine, logits);
            if err > 1e-3 {
                bail!(
                    "{}: the head {} does not read the pooled embedding directly (relative \
                     error {err:.2e} on {}); train-head supports heads that do (ResNet, \
                     MobileNetV2, EfficientNet-B0, DenseNet-121; not VGG-16's or \
                     MobileNetV3's two-layer classifiers)",
                    source.dir.display(),
                    old.layer,
                    file.display()
                );
            }
            log::debug!("head reads the embedding: relative error {err:.2e}");
            return Ok(());
        }
        Ok(())
    }

    fn embed_frame(&mut self, frame: &RgbFrame) -> Result<Vec<f32>> {
        match self.pipeline.run(frame)?.0 {
            Results::Features { embedding, .. } => Ok(embedding),
            _ => bail!("the features task gave no embedding"),
        }
    }

    /// Embeddings of `files` (with their class); unreadable photos are skipped and
    /// remembered.
    fn embed_all(
        &mut self,
        files: Vec<(PathBuf, usize)>,
        flip: bool,
        message: &str,
    ) -> Result<Vec<Sample>> {
        let bar = images::progress(files.len(), message);
        let mut samples = Vec::new();
        let (mut hits, mut computed) = (0, 0);
        for (file, class) in files {
            bar.inc(1);
            match self.embed_file(&file, flip) {
                Ok((embedding, flipped, cached)) => {
                    if cached {
                        hits += 1;
                    } else {
                        computed += 1;
                    }
                    samples.push(Sample {
                        file,
                        class,
                        embedding,
                        flipped,
                    });
                }
                Err(err) => {
                    bar.suspend(|| log::warn!("skipped: {err:#}"));
                    self.skipped.push(file);
                }
            }
        }
        bar.finish_and_clear();
        log::info!("{message}: {computed} computed, {hits} from the cache");
        Ok(samples)
    }

    fn embed_file(
        &mut self,
        file: &Path,
        flip: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>, bool)> {
        let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
        // Keyed by content, not name or mtime: a copied or touched photo is the
        // same photo, an edited one is not.
        let key = hex(&Sha256::digest(&bytes)[..16]);
        let entry = |suffix: &str| {
            self.cache
                .as_ref()
                .map(|d| d.join(format!("{key}{suffix}.f32")))
        };
        let (plain, mirrored) = (entry(""), entry(".flip"));
        let cached = |p: &Option<PathBuf>| p.as_ref().and_then(|p| read_f32(p));
        if let Some(e) = cached(&plain) {
            if !flip {
                return Ok((e, None, true));
            }
            if let Some(f) = cached(&mirrored) {
                return Ok((e, Some(f), true));
            }
        }
        let frame =
            RgbFrame::decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let embedding = self
            .embed_frame(&frame)
            .with_context(|| file.display().to_string())?;
        write_f32(plain.as_deref(), &embedding);
        let flipped = if flip {
            let e = self.embed_frame(&mirror(&frame))?;
            write_f32(mirrored.as_deref(), &e);
            Some(e)
        } else {
            None
        };
        Ok((embedding, flipped, false))
    }
}

fn default_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("edgebone").join("embeddings"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_f32(path: &Path) -> Option<Vec<f32>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Best effort: a cache that cannot be written only costs time. Written beside
/// and renamed, so a reader never sees half a file.
fn write_f32(path: Option<&Path>, values: &[f32]) {
    let Some(path) = path else { return };
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(err) = written {
        log::debug!("embedding cache {}: {err}", path.display());
    }
}

fn mirror(frame: &RgbFrame) -> RgbFrame {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut data = Vec::with_capacity(frame.data.len());
    for row in frame.data.chunks_exact(w * 3).take(h) {
        for px in row.chunks_exact(3).rev() {
            data.extend_from_slice(px);
        }
    }
    RgbFrame {
        width: frame.width,
        height: frame.height,
        data,
    }
}

/// A seeded, stratified split: in each class, `fraction` of its photos (at least
/// one when it has two or more) go to validation.
fn split(samples: &[Sample], classes: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = Rng::new(seed ^ 0x5eed_5711);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for class in 0..classes {
        let mut members: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].class == class)
            .collect();
        rng.shuffle(&mut members);
        let n = members.len();
        let held = if n < 2 {
            0
        } else {
            ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
        };
        val.extend_from_slice(&members[..held]);
        train.extend_from_slice(&members[held..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Softmax regression on standardized inputs.
#[derive(Clone)]
struct Softmax {
    classes: usize,
    features: usize,
    /// `[classes][features]`
    w: Vec<f32>,
    b: Vec<f32>,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Softmax {
    fn standardize(&self, x: &[f32], out: &mut [f32]) {
        for j in 0..self.features {
            out[j] = (x[j] - self.mean[j]) / self.std[j];
        }
    }

    /// Probabilities of a standardized input.
    // Indexed loops: the rows of `w` and the entries of `p` go together by class.
    #[allow(clippy::needless_range_loop)]
    fn probabilities(&self, z: &[f32], p: &mut [f64]) {
        for c in 0..self.classes {
            let row = &self.w[c * self.features..(c + 1) * self.features];
            p[c] = self.b[c] as f64
                + row
                    .iter()
                    .zip(z)
                    .map(|(w, x)| (*w * *x) as f64)
                    .sum::<f64>();
        }
        let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = p
            .iter_mut()
            .map(|v| {
                *v = (*v - max).exp();
                *v
            })
            .sum();
        p.iter_mut().for_each(|v| *v /= sum);
    }

    /// Mean cross-entropy and accuracy.
    fn score(&self, xs: &[&[f32]], ys: &[usize]) -> (f64, f64) {
        let mut z = vec![0.0; self.features];
        let mut p = vec![0.0; self.classes];
        let (mut loss, mut right) = (0.0, 0);
        for (x, &y) in xs.iter().zip(ys) {
            self.standardize(x, &mut z);
            self.probabilities(&z, &mut p);
            loss -= p[y].max(1e-12).ln();
            right += usize::from(argmax(&p) == y);
        }
        let n = xs.len().max(1) as f64;
        (loss / n, right as f64 / n)
    }

    /// The same layer on raw embeddings: W' = W/σ, b' = b − W'·μ, which is what
    /// goes into the graph.
    #[allow(clippy::needless_range_loop)]
    fn unstandardized(&self) -> (Vec<f32>, Vec<f32>) {
        let mut w = self.w.clone();
        let mut b = self.b.clone();
        for c in 0..self.classes {
            let mut shift = 0.0f64;
            for j in 0..self.features {
                let k = c * self.features + j;
                w[k] = self.w[k] / self.std[j];
                shift += w[k] as f64 * self.mean[j] as f64;
            }
            b[c] = (self.b[c] as f64 - shift) as f32;
        }
        (w, b)
    }
}

/// Mini-batch Adam with L2 on the weights; the epoch with the lowest validation
/// loss is kept, and training stops `patience` epochs after it.
// Training and validation sets as parallel slices, and the two ways to run
// (search with early stopping, refit for a fixed count): clearer spelled out.
#[allow(clippy::too_many_arguments)]
fn fit(
    xs: &[&[f32]],
    ys: &[usize],
    vx: &[&[f32]],
    vy: &[usize],
    classes: usize,
    args: &TrainArgs,
    epochs: usize,
    stop_early: bool,
) -> (Softmax, Vec<Epoch>, usize) {
    let features = xs[0].len();
    let n = xs.len() as f64;
    let mut mean = vec![0.0f64; features];
    let mut var = vec![0.0f64; features];
    for x in xs {
        x.iter()
            .zip(&mut mean)
            .for_each(|(v, m)| *m += *v as f64 / n);
    }
    for x in xs {
        for j in 0..features {
            var[j] += (x[j] as f64 - mean[j]).powi(2) / n;
        }
    }
    let (w, b) = head::linear_init(classes, features, args.seed);
    let mut model = Softmax {
        classes,
        features,
        w,
        b,
        mean: mean.iter().map(|m| *m as f32).collect(),
        // A channel that never varies (dead after ReLU) gets unit scale, not 1/0.
        std: var
            .iter()
            .map(|v| if *v > 1e-12 { v.sqrt() as f32 } else { 1.0 })
            .collect(),
    };
    let standardized: Vec<Vec<f32>> = xs
        .iter()
        .map(|x| {
            let mut z = vec![0.0; features];
            model.standardize(x, &mut z);
            z
        })
        .collect();
    let params = classes * features + classes;
    let (mut m, mut v) = (vec![0.0f64; params], vec![0.0f64; params]);
    let (beta1, beta2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut step = 0i32;
    let mut rng = Rng::new(args.seed.wrapping_add(1));
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut history = Vec::new();
    let (mut best, mut best_model, mut best_loss) = (0, model.clone(), f64::INFINITY);
    let bar = images::progress(epochs, if stop_early { "training" } else { "refitting" });
    let mut p = vec![0.0f64; classes];
    for epoch in 1..=epochs {
        bar.inc(1);
        rng.shuffle(&mut order);
        for batch in order.chunks(args.batch.max(1)) {
            let mut grad = vec![0.0f64; params];
            for &i in batch {
                let z = &standardized[i];
                model.probabilities(z, &mut p);
                p[ys[i]] -= 1.0;
                for c in 0..classes {
                    let g = &mut grad[c * features..(c + 1) * features];
                    g.iter_mut()
                        .zip(z)
                        .for_each(|(g, x)| *g += p[c] * *x as f64);
                    grad[classes * features + c] += p[c];
                }
            }
            let scale = 1.0 / batch.len() as f64;
            step += 1;
            let (c1, c2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
            for k in 0..params {
                let (value, decay) = if k < classes * features {
                    (&mut model.w[k], args.weight_decay)
                } else {
                    (&mut model.b[k - classes * features], 0.0)
                };
                let g = grad[k] * scale + decay * *value as f64;
                m[k] = beta1 * m[k] + (1.0 - beta1) * g;
                v[k] = beta2 * v[k] + (1.0 - beta2) * g * g;
                *value -= (args.lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps)) as f32;
            }
        }
        let (train_loss, train_accuracy) = model.score(xs, ys);
        let (val_loss, val_accuracy) = model.score(vx, vy);
        // indicatif's own println is silent when stderr is not a terminal.
        bar.suspend(|| {
            println!(
                "epoch {epoch:>3}  train loss {train_loss:.4} acc {train_accuracy:.4}  val loss {val_loss:.4} acc {val_accuracy:.4}"
            )
        });
        history.push(Epoch {
            epoch,
            train_loss,
            train_accuracy,
            val_loss,
            val_accuracy,
        });
        if !stop_early {
            (best, best_model) = (history.len() - 1, model.clone());
        } else if val_loss < best_loss {
            (best, best_model, best_loss) = (history.len() - 1, model.clone(), val_loss);
        } else if history.len() - 1 - best >= args.patience {
            bar.suspend(|| {
                println!(
                    "early stop: no better validation loss for {} epochs",
                    args.patience
                )
            });
            break;
        }
    }
    bar.finish_and_clear();
    (best_model, history, best)
}

/// The trained layer on a held-out folder: accuracy and each photo's answer.
fn evaluate(
    embedder: &mut Embedder,
    dir: &Path,
    names: &[String],
    w: &[f32],
    b: &[f32],
) -> Result<serde_json::Value> {
    let folders = class_folders(dir)?;
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut files = Vec::new();
    for (name, list) in &folders {
        let class = *index.get(name.as_str()).with_context(|| {
            format!(
                "test folder {}: class {name:?} is not one of the training classes ({})",
                dir.display(),
                names.join(", ")
            )
        })?;
        files.extend(list.iter().map(|f| (f.clone(), class)));
    }
    let samples = embedder.embed_all(files, false, "testing")?;
    let mut right = 0;
    let mut predictions = Vec::new();
    for s in &samples {
        let predicted = argmax(&affine(w, b, &s.embedding));
        right += usize::from(predicted == s.class);
        predictions.push(Prediction {
            file: s.file.display().to_string(),
            label: names[s.class].clone(),
            predicted: names[predicted].clone(),
        });
    }
    if samples.is_empty() {
        bail!("test folder {}: no readable photo", dir.display());
    }
    Ok(serde_json::json!({
        "dir": dir.display().to_string(),
        "images": samples.len(),
        "accuracy": right as f64 / samples.len() as f64,
        "predictions": predictions,
    }))
}

/// `W·x + b` with `W` as `[classes][features]` rows.
fn affine(w: &[f32], b: &[f32], x: &[f32]) -> Vec<f32> {
    b.iter()
        .enumerate()
        .map(|(c, bias)| {
            let row = &w[c * x.len()..(c + 1) * x.len()];
            (*bias as f64
                + row
                    .iter()
                    .zip(x)
                    .map(|(w, x)| (*w * *x) as f64)
                    .sum::<f64>()) as f32
        })
        .collect()
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x - *y) as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

fn argmax<T: PartialOrd + Copy>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(class: usize, embedding: Vec<f32>) -> Sample {
        Sample {
            file: PathBuf::new(),
            class,
            embedding,
            flipped: None,
        }
    }

    #[test]
    fn split_is_stratified_seeded_and_disjoint() {
        let samples: Vec<Sample> = (0..30)
            .map(|i| sample(usize::from(i >= 20), vec![]))
            .collect();
        let (train, val) = split(&samples, 2, 0.2, 3);
        assert_eq!(train.len() + val.len(), 30);
        assert!(train.iter().all(|i| !val.contains(i)));
        let per_class = |c| val.iter().filter(|&&i| samples[i].class == c).count();
        assert_eq!((per_class(0), per_class(1)), (4, 2));
        assert_eq!(split(&samples, 2, 0.2, 3).1, val);
        assert_ne!(split(&samples, 2, 0.2, 4).1, val);
    }

    #[test]
    fn softmax_regression_separates_classes_and_folds_the_standardization() {
        // Two classes apart along feature 1, on an offset and scaled feature 0 of noise.
        let mut rng = Rng::new(1);
        let mut data = Vec::new();
        for i in 0..200 {
            let class = i % 2;
            let x = vec![
                100.0 + 50.0 * rng.uniform() as f32,
                (class as f32 * 2.0 - 1.0) * 0.3 + 0.4 * (rng.uniform() as f32 - 0.5),
            ];
            data.push((x, class));
        }
        let xs: Vec<&[f32]> = data[..160].iter().map(|(x, _)| x.as_slice()).collect();
        let ys: Vec<usize> = data[..160].iter().map(|(_, y)| *y).collect();
        let vx: Vec<&[f32]> = data[160..].iter().map(|(x, _)| x.as_slice()).collect();
        let vy: Vec<usize> = data[160..].iter().map(|(_, y)| *y).collect();
        let args = TrainArgs {
            bundle: PathBuf::new(),
            data: PathBuf::new(),
            out: PathBuf::new(),
            test: None,
            cache: None,
            no_cache: true,
            seed: 0,
            val_fraction: 0.2,
            flip: false,
            refit: true,
            epochs: 200,
            patience: 15,
            lr: 0.05,
            weight_decay: 1e-3,
            batch: 32,
            threads: 1,
        };
        let (model, history, best) = fit(&xs, &ys, &vx, &vy, 2, &args, 200, true);
        assert!(history[best].val_accuracy == 1.0, "{:?}", history[best]);
        assert!(history[best].val_loss < history[0].val_loss);
        // The folded layer gives the same answers on raw inputs.
        let (w, b) = model.unstandardized();
        let mut z = vec![0.0; 2];
        let mut p = vec![0.0; 2];
        for (x, _) in &data {
            model.standardize(x, &mut z);
            model.probabilities(&z, &mut p);
            let raw = affine(&w, &b, x);
            let diff = (raw[1] - raw[0]) as f64;
            assert!((diff - (p[1] / p[0]).ln()).abs() < 1e-3, "{diff}");
        }
    }

    #[test]
    fn mirror_reverses_each_row() {
        let f = RgbFrame::new(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(mirror(&f).data, [4, 5, 6, 1, 2, 3]);
    }
}
