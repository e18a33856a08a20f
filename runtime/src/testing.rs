//! Test data shared by the unit tests: seeded pseudo-random values, the same on
//! every machine (a linear congruential generator: no crate needed for this).

/// `n` int8 values over the whole range.
pub fn int8(n: usize, seed: u32) -> Vec<i8> {
    states(seed)
        .take(n)
        .map(|s| (s >> 24) as u8 as i8)
        .collect()
}

/// `n` floats in −0.5..0.5.
pub fn float(n: usize, seed: u32) -> Vec<f32> {
    states(seed)
        .take(n)
        .map(|s| (s >> 8) as f32 / (1 << 24) as f32 - 0.5)
        .collect()
}

fn states(seed: u32) -> impl Iterator<Item = u32> {
    std::iter::successors(Some(seed), |s| {
        Some(s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223))
    })
    .skip(1)
}
