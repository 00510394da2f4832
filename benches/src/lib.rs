//! Helpers shared by the `pleas` benches: deterministic input generation.

/// A deterministic pseudo-random f32 matrix (row-major `rows x cols`) in `[-1, 1)`, from a
/// 64-bit linear congruential generator (so benches need no RNG dependency).
pub fn random_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..rows * cols)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
