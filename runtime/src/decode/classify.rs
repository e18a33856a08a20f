use serde::Serialize;

/// One of the top-k classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Class {
    pub class: usize,
    pub label: String,
    pub score: f32,
}

/// Softmax over the logits, then the `k` most probable classes, best first.
pub fn top_k(logits: &[f32], k: usize, label: impl Fn(usize) -> String) -> Vec<Class> {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    order.select_nth_unstable_by(k - 1, |a, b| probs[*b].total_cmp(&probs[*a]));
    order.truncate(k);
    order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]).then(a.cmp(b)));
    order
        .into_iter()
        .map(|class| Class {
            class,
            label: label(class),
            score: probs[class],
        })
        .collect()
}

/// Numerically stable softmax (the max is subtracted before exponentiating).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_is_sorted_with_labels() {
        let top = top_k(&[0.1, 3.0, 2.0, -1.0], 2, |c| format!("c{c}"));
        assert_eq!(top.iter().map(|c| c.class).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(top[0].label, "c1");
        assert!(top[0].score > top[1].score);
        assert_eq!(top_k(&[1.0], 5, |c| c.to_string()).len(), 1);
    }
}
