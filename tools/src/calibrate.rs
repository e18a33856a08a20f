//! Activation ranges from calibration data: min-max, percentile and entropy (KL).

use serde::Serialize;

/// Histogram bins per sign of a tensor's values.
pub const BINS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Method {
    /// Tries the other methods, with and without bias correction and with the
    /// first and last layers kept float, on held-out folds of the calibration
    /// photos; keeps the one that agrees best with float.
    Auto,
    /// The whole observed range: no clipping, coarsest steps.
    MinMax,
    /// Clips each side at a percentile of its values (`--percentile`).
    Percentile,
    /// Picks each side's clipping threshold that loses the least information
    /// (KL divergence between the clipped and the quantized histograms, as
    /// TensorRT and ONNX Runtime do).
    Entropy,
}

/// What one activation tensor did over the calibration images.
///
/// Two passes: the first finds the extremes, the second fills histograms of the
/// positive and the negative values between 0 and the extremes given to
/// [`Observer::bin_up_to`]. Observers of parts of the photos (k-fold) share one
/// binning, so that any of them add up with [`Observer::merge`].
#[derive(Debug, Clone)]
pub struct Observer {
    pub min: f32,
    pub max: f32,
    positive: Vec<u64>,
    negative: Vec<u64>,
    /// What the histograms' last bins reach: the extremes over all photos.
    hist_min: f32,
    hist_max: f32,
    /// Per channel (axis 1): the sum of the values and how many were summed.
    channel_sums: Vec<f64>,
    channel_count: u64,
}

impl Default for Observer {
    fn default() -> Self {
        Observer {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            positive: vec![0; BINS],
            negative: vec![0; BINS],
            hist_min: 0.0,
            hist_max: 0.0,
            channel_sums: Vec::new(),
            channel_count: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Range {
    pub lo: f32,
    pub hi: f32,
}

impl Observer {
    pub fn observe_extremes(&mut self, values: &[f32]) {
        for &v in values {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }

    /// Accumulates per-channel sums of a `[N, C, ...]` tensor (bias correction
    /// needs each layer input's channel means).
    pub fn observe_channels(&mut self, values: &[f32], shape: &[usize]) {
        let channels = shape.get(1).copied().unwrap_or(1).max(1);
        let inner: usize = shape.iter().skip(2).product::<usize>().max(1);
        self.channel_sums.resize(channels, 0.0);
        for (i, v) in values.iter().enumerate() {
            self.channel_sums[(i / inner) % channels] += *v as f64;
        }
        self.channel_count += (values.len() / channels) as u64;
    }

    /// The mean of each channel over everything observed.
    pub fn channel_means(&self) -> Vec<f32> {
        let n = self.channel_count.max(1) as f64;
        self.channel_sums.iter().map(|s| (s / n) as f32).collect()
    }

    /// Sets the extremes the histograms span (this observer's own, or those of
    /// every fold); call between the two passes.
    pub fn bin_up_to(&mut self, min: f32, max: f32) {
        self.hist_min = min;
        self.hist_max = max;
    }

    /// Adds what `other` observed (binned the same way) to this observer.
    pub fn merge(&mut self, other: &Observer) {
        debug_assert_eq!(
            (self.hist_min, self.hist_max),
            (other.hist_min, other.hist_max)
        );
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        for (a, b) in self.positive.iter_mut().zip(&other.positive) {
            *a += b;
        }
        for (a, b) in self.negative.iter_mut().zip(&other.negative) {
            *a += b;
        }
        if self.channel_sums.len() < other.channel_sums.len() {
            self.channel_sums.resize(other.channel_sums.len(), 0.0);
        }
        for (a, b) in self.channel_sums.iter_mut().zip(&other.channel_sums) {
            *a += b;
        }
        self.channel_count += other.channel_count;
    }

    pub fn observe_histogram(&mut self, values: &[f32]) {
        let up = BINS as f32 / self.hist_max.max(f32::MIN_POSITIVE);
        let down = BINS as f32 / (-self.hist_min).max(f32::MIN_POSITIVE);
        for &v in values {
            if v > 0.0 {
                self.positive[((v * up) as usize).min(BINS - 1)] += 1;
            } else if v < 0.0 {
                self.negative[((-v * down) as usize).min(BINS - 1)] += 1;
            }
        }
    }

    /// The range to quantize to; it always contains 0 so that 0 (padding, ReLU's
    /// floor) is exact.
    pub fn range(&self, method: Method, percentile: f64) -> Range {
        let (lo, hi) = (self.min.min(0.0), self.max.max(0.0));
        if method == Method::MinMax || hi - lo <= 0.0 {
            return Range { lo, hi };
        }
        // Each side gets the share of the 255 steps its extreme asks for.
        let up_levels = (255.0 * hi / (hi - lo)).round() as usize;
        let side = |hist: &[u64], extreme: f32, binned: f32, levels: usize| -> f32 {
            let width = binned.max(extreme) / BINS as f32;
            let threshold = match method {
                Method::MinMax | Method::Auto => extreme,
                Method::Percentile => quantile_bin(hist, percentile / 100.0)
                    .map_or(0.0, |bin| (bin + 1) as f32 * width),
                // Too few steps on a side (SiLU's small negative tail) leave nothing
                // to trade: keep its extreme.
                Method::Entropy if levels < 16 => extreme,
                Method::Entropy => {
                    // Only the bins up to this observer's own extreme: past it the
                    // shared binning holds nothing of these photos.
                    let used = ((extreme / width).ceil() as usize).clamp(1, BINS);
                    kl_threshold_bins(&hist[..used], levels) as f32 * width
                }
            };
            threshold.min(extreme)
        };
        Range {
            lo: -side(&self.negative, -lo, -self.hist_min, 255 - up_levels),
            hi: side(&self.positive, hi, self.hist_max, up_levels),
        }
    }
}

/// The first bin at which the cumulative count reaches `fraction` of the total.
fn quantile_bin(hist: &[u64], fraction: f64) -> Option<usize> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let target = (fraction * total as f64).ceil() as u64;
    let mut seen = 0;
    hist.iter().position(|&count| {
        seen += count;
        seen >= target
    })
}

/// How many of the histogram's bins to keep so that quantizing them to `levels`
/// steps loses the least information (the outliers past the threshold fold into
/// the last kept bin). At least `levels` bins are kept.
pub fn kl_threshold_bins(hist: &[u64], levels: usize) -> usize {
    let levels = levels.clamp(1, hist.len());
    if hist.iter().all(|&c| c == 0) {
        return hist.len();
    }
    (levels..=hist.len())
        .map(|kept| (kept, kl_divergence(hist, kept, levels)))
        .fold((hist.len(), f64::INFINITY), |best, (kept, kl)| {
            if kl < best.1 { (kept, kl) } else { best }
        })
        .0
}

fn kl_divergence(hist: &[u64], kept: usize, levels: usize) -> f64 {
    let mut reference: Vec<f64> = hist[..kept].iter().map(|&c| c as f64).collect();
    reference[kept - 1] += hist[kept..].iter().sum::<u64>() as f64;
    // Merge the kept bins into `levels` steps, then spread each step's count back
    // over the bins that had values.
    let mut quantized = vec![0.0; kept];
    for level in 0..levels {
        let (start, end) = (level * kept / levels, (level + 1) * kept / levels);
        let bins = &hist[start..end];
        let filled = bins.iter().filter(|&&c| c > 0).count();
        if filled == 0 {
            continue;
        }
        let share = bins.iter().sum::<u64>() as f64 / filled as f64;
        for (q, &c) in quantized[start..end].iter_mut().zip(bins) {
            if c > 0 {
                *q = share;
            }
        }
    }
    let (p, q) = (smooth(&reference), smooth(&quantized));
    p.iter()
        .zip(&q)
        .filter(|(p, _)| **p > 0.0)
        .map(|(p, q)| p * (p / q).ln())
        .sum()
}

/// Normalizes to a distribution with no empty bin (so the divergence is finite),
/// moving a little mass from the filled bins to the empty ones.
fn smooth(counts: &[f64]) -> Vec<f64> {
    const EPS: f64 = 1e-4;
    let total: f64 = counts.iter().sum();
    let zeros = counts.iter().filter(|&&c| c == 0.0).count();
    let filled = counts.len() - zeros;
    if total == 0.0 || filled == 0 {
        return vec![1.0 / counts.len() as f64; counts.len()];
    }
    let take = EPS * zeros as f64 / filled as f64;
    counts
        .iter()
        .map(|&c| if c == 0.0 { EPS } else { c / total - take })
        .map(|v| v.max(EPS * 1e-3))
        .collect()
}

/// Bias correction: how much a layer's output shifts on average, per output
/// channel, because its weights were rounded to int8 (`E[(Ŵ - W) x]` =
/// `(Ŵ - W) E[x]`, ignoring zero padding at the borders). `dims` are Conv's
/// `[out, in / groups, kh, kw]` (or Gemm's `[out, in]`); `means` has one value
/// per input channel. Subtracting it from the bias removes the shift.
pub fn weight_error_shift(
    weights: &[f32],
    dequantized: &[f32],
    dims: &[i64],
    groups: usize,
    means: &[f32],
) -> Vec<f32> {
    let out = dims[0] as usize;
    let per_group_in = dims.get(1).copied().unwrap_or(1) as usize;
    let kernel: usize = dims.iter().skip(2).product::<i64>().max(1) as usize;
    let out_per_group = (out / groups.max(1)).max(1);
    let mut shift = vec![0f32; out];
    for (o, shift) in shift.iter_mut().enumerate() {
        let first_in = (o / out_per_group) * per_group_in;
        let mut sum = 0f64;
        for i in 0..per_group_in {
            let mean = means.get(first_in + i).copied().unwrap_or(0.0) as f64;
            let at = (o * per_group_in + i) * kernel;
            let error: f64 = (at..at + kernel)
                .map(|k| (dequantized[k] - weights[k]) as f64)
                .sum();
            sum += error * mean;
        }
        *shift = sum as f32;
    }
    shift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(values: &[f32]) -> Observer {
        let mut o = Observer::default();
        o.observe_extremes(values);
        o.bin_up_to(o.min, o.max);
        o.observe_histogram(values);
        o
    }

    #[test]
    fn merged_folds_give_the_ranges_of_all_the_photos() {
        let values = bell_with_outlier();
        let whole = observed(&values);
        let (a, b) = values.split_at(values.len() / 3);
        let mut folds = [Observer::default(), Observer::default()];
        for (fold, part) in folds.iter_mut().zip([a, b]) {
            fold.observe_extremes(part);
            fold.observe_channels(part, &[1, 1, part.len()]);
        }
        for fold in &mut folds {
            fold.bin_up_to(whole.min, whole.max);
        }
        for (fold, part) in folds.iter_mut().zip([a, b]) {
            fold.observe_histogram(part);
        }
        let mut merged = folds[0].clone();
        merged.merge(&folds[1]);
        for method in [Method::MinMax, Method::Percentile, Method::Entropy] {
            let (m, w) = (merged.range(method, 99.9), whole.range(method, 99.9));
            assert_eq!((m.lo, m.hi), (w.lo, w.hi), "{method:?}");
        }
        // The first fold alone never saw the outlier (the last value): its range
        // stops at its own extreme although its bins span the outlier's.
        let first = folds[0].range(Method::Entropy, 0.0);
        assert!(first.hi <= folds[0].max, "{first:?} vs {}", folds[0].max);
        assert!(folds[0].max < 2.0);
    }

    /// A deterministic bell curve on [-1, 1] and one far outlier.
    fn bell_with_outlier() -> Vec<f32> {
        let mut values: Vec<f32> = (0..20000)
            .map(|i| {
                let u = (i as f32 + 0.5) / 20000.0;
                // a sum of three uniforms: roughly normal, bounded by ±1.5
                let (a, b, c) = (u, (u * 7.31).fract(), (u * 13.7).fract());
                a + b + c - 1.5
            })
            .collect();
        values.push(40.0);
        values
    }

    #[test]
    fn minmax_keeps_everything() {
        let r = observed(&bell_with_outlier()).range(Method::MinMax, 0.0);
        assert_eq!(r.hi, 40.0);
        assert!(r.lo < -1.4 && r.lo >= -1.5, "{r:?}");
    }

    #[test]
    fn percentile_and_entropy_clip_the_outlier() {
        let o = observed(&bell_with_outlier());
        let p = o.range(Method::Percentile, 99.9);
        assert!(p.hi > 1.0 && p.hi < 1.6, "{p:?}");
        // Entropy keeps at least one histogram bin per int8 step (246 of 2048 on
        // this side), so it can cut the outlier's range to an eighth, not further.
        let e = o.range(Method::Entropy, 0.0);
        assert!(e.hi > 1.5 && e.hi <= 40.0 * 246.0 / 2048.0 + 0.1, "{e:?}");
    }

    #[test]
    fn entropy_keeps_a_range_without_outliers() {
        let values: Vec<f32> = (0..4096).map(|i| i as f32 / 4096.0).collect();
        let e = observed(&values).range(Method::Entropy, 0.0);
        assert!(e.hi > 0.9, "{e:?}");
        assert_eq!(e.lo, 0.0);
    }

    #[test]
    fn weight_error_shift_follows_groups_and_kernels() {
        // Two output channels, depthwise (groups 2), 1x2 kernels.
        let weights = [0.5, 0.5, 1.0, 1.0];
        let dequantized = [0.6, 0.5, 1.0, 0.9];
        let means = [2.0, 10.0];
        let shift = weight_error_shift(&weights, &dequantized, &[2, 1, 1, 2], 2, &means);
        // Channel 0 reads input 0: +0.1 · 2; channel 1 reads input 1: -0.1 · 10.
        assert!((shift[0] - 0.2).abs() < 1e-6, "{shift:?}");
        assert!((shift[1] + 1.0).abs() < 1e-6, "{shift:?}");
        // A dense layer (groups 1) sums over every input channel.
        let shift = weight_error_shift(&weights, &dequantized, &[2, 2], 1, &means);
        assert!((shift[0] - 0.2).abs() < 1e-6, "{shift:?}");
        assert!((shift[1] + 1.0).abs() < 1e-6, "{shift:?}");
    }

    #[test]
    fn channel_means_of_nchw() {
        let mut o = Observer::default();
        // [1, 2, 1, 2]: channel 0 = [1, 3], channel 1 = [10, 20].
        o.observe_channels(&[1.0, 3.0, 10.0, 20.0], &[1, 2, 1, 2]);
        o.observe_channels(&[3.0, 5.0, 0.0, 10.0], &[1, 2, 1, 2]);
        assert_eq!(o.channel_means(), vec![3.0, 10.0]);
    }
}
