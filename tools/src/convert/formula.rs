//! The shared assets' "formula" state_dict (`golden/formula/index.json`): every
//! tensor filled from its parameter name alone, so a converter can be checked
//! against PyTorch's outputs with no weights stored. `--random-seed` uses the same
//! fill with the seed mixed into each name's hash.

/// FNV-1a, 32 bits, continued over `more` (the seed's bytes, if any).
fn fnv1a(bytes: &[u8], more: &[u8]) -> u32 {
    let mut h: u32 = 2166136261;
    for &b in bytes.iter().chain(more) {
        h ^= b as u32;
        h = h.wrapping_mul(16777619);
    }
    h
}

/// The tensor `name` of `shape`, row-major. `seed: None` is the shared formula
/// exactly; `Some(n)` gives other weights of the same scale for each `n`.
pub fn fill(name: &str, shape: &[usize], seed: Option<u64>) -> Vec<f32> {
    let more = seed.map(u64::to_le_bytes);
    let mut x = fnv1a(name.as_bytes(), more.as_ref().map_or(&[], |b| &b[..]));
    if x == 0 {
        x = 1;
    }
    let numel: usize = shape.iter().product();
    let value: Box<dyn Fn(f64) -> f64> = if name.ends_with("running_var") {
        Box::new(|u| 0.5 + u)
    } else if name.ends_with("running_mean") {
        Box::new(|u| (u - 0.5) * 0.2)
    } else if name.ends_with("num_batches_tracked") {
        Box::new(|_| 0.0)
    } else if shape.len() == 1 && name.ends_with(".weight") {
        Box::new(|u| 0.5 + u)
    } else if name.ends_with("bias") {
        Box::new(|u| (u - 0.5) * 0.2)
    } else {
        let fan_in = numel as f64 / shape.first().copied().unwrap_or(1).max(1) as f64;
        let bound = 2.0 * (3.0 / fan_in).sqrt();
        Box::new(move |u| (u - 0.5) * bound)
    };
    (0..numel)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            value(x as f64 / 4294967296.0) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// index.json's self-test: the seed and first draws for `conv1.weight`.
    #[test]
    fn matches_the_shared_self_test() {
        let index: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(crate::convert::tests::formula_dir().join("index.json"))
                .unwrap(),
        )
        .unwrap();
        let selftest = &index["selftest"];
        let name = selftest["name"].as_str().unwrap();
        assert_eq!(
            fnv1a(name.as_bytes(), &[]) as u64,
            selftest["seed"].as_u64().unwrap()
        );
        // conv1.weight [64, 3, 7, 7]: fan_in 147, value = (u - 0.5) * 2 * sqrt(3/147).
        let values = fill(name, &[64, 3, 7, 7], None);
        let bound = 2.0 * (3.0f64 / 147.0).sqrt();
        for (i, u) in selftest["first4_u"].as_array().unwrap().iter().enumerate() {
            let want = ((u.as_f64().unwrap() - 0.5) * bound) as f32;
            assert_eq!(values[i], want, "element {i}");
        }
        assert_ne!(fill(name, &[4], Some(1)), fill(name, &[4], Some(2)));
    }
}
