//! Oracles and matrix families for the assignment tests: brute force over all permutations,
//! a Hungarian (Jonker-Volgenant shortest augmenting path) solver in f64, and generators of
//! the score matrices the issue names (uniform, integer, heavily tied, rank-1, planted).

use proptest::prelude::*;

/// Best total over all injective maps of the `rows` rows to the `cols` columns of a row-major
/// matrix (`rows <= cols <= 8`), by exhaustive search.
pub fn brute_force_max(s: &[f64], rows: usize, cols: usize) -> f64 {
    assert!(
        rows <= cols && cols <= 8,
        "brute force is for tiny problems"
    );
    fn go(s: &[f64], rows: usize, cols: usize, i: usize, used: u32) -> f64 {
        if i == rows {
            return 0.0;
        }
        let mut best = f64::NEG_INFINITY;
        for j in 0..cols {
            if used & (1 << j) == 0 {
                best = best.max(s[i * cols + j] + go(s, rows, cols, i + 1, used | (1 << j)));
            }
        }
        best
    }
    go(s, rows, cols, 0, 0)
}

/// Maximum-weight assignment of `rows <= cols` rows to distinct columns, by the Hungarian
/// method in its shortest-augmenting-path form (Jonker-Volgenant / Kuhn-Munkres with
/// potentials, O(rows^2 cols)), in f64. Returns `perm` with `perm[i]` the column of row `i`.
pub fn hungarian_max(s: &[f64], rows: usize, cols: usize) -> Vec<usize> {
    assert!(rows <= cols);
    // Minimise c = -s. 1-based arrays; column 0 is the virtual start of each augmentation.
    let cost = |i: usize, j: usize| -s[(i - 1) * cols + (j - 1)];
    let mut u = vec![0.0f64; rows + 1];
    let mut v = vec![0.0f64; cols + 1];
    let mut owner = vec![0usize; cols + 1];
    let mut way = vec![0usize; cols + 1];
    for i in 1..=rows {
        owner[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![f64::INFINITY; cols + 1];
        let mut used = vec![false; cols + 1];
        loop {
            used[j0] = true;
            let i0 = owner[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0usize;
            for j in 1..=cols {
                if !used[j] {
                    let cur = cost(i0, j) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=cols {
                if used[j] {
                    u[owner[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if owner[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            owner[j0] = owner[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut perm = vec![usize::MAX; rows];
    for j in 1..=cols {
        if owner[j] != 0 {
            perm[owner[j] - 1] = j - 1;
        }
    }
    perm
}

/// Total score of an assignment, summed in f64 in row order.
pub fn total(s: &[f64], cols: usize, perm: &[usize]) -> f64 {
    perm.iter().enumerate().map(|(i, &j)| s[i * cols + j]).sum()
}

/// Whether `perm` maps its rows to distinct columns below `cols`.
pub fn is_injective(perm: &[usize], cols: usize) -> bool {
    let mut seen = vec![false; cols];
    perm.iter()
        .all(|&j| j < cols && !std::mem::replace(&mut seen[j], true))
}

/// The families of score matrices the auction is tested on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Uniform in `[0, 1)`.
    Uniform,
    /// Integers in `[-50, 50]`.
    Integer,
    /// Values from `{0, 1, 2}`: huge numbers of optimal assignments.
    Tied,
    /// `s_ij = a_i * b_j` with `a, b` in `[-1, 1)`: rank one, degenerate.
    RankOne,
    /// A planted permutation scoring 1 plus Gaussian-like noise of amplitude 0.3.
    Planted,
}

/// All kinds, for tests that loop over them.
pub const KINDS: [Kind; 5] = [
    Kind::Uniform,
    Kind::Integer,
    Kind::Tied,
    Kind::RankOne,
    Kind::Planted,
];

/// A deterministic `rows x cols` row-major matrix of the given kind from a seed (SplitMix64).
pub fn matrix(kind: Kind, rows: usize, cols: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut unit = move || (next() >> 11) as f64 / (1u64 << 53) as f64;
    match kind {
        Kind::Uniform => (0..rows * cols).map(|_| unit()).collect(),
        Kind::Integer => (0..rows * cols)
            .map(|_| (unit() * 101.0).floor() - 50.0)
            .collect(),
        Kind::Tied => (0..rows * cols).map(|_| (unit() * 3.0).floor()).collect(),
        Kind::RankOne => {
            let a: Vec<f64> = (0..rows).map(|_| unit() * 2.0 - 1.0).collect();
            let b: Vec<f64> = (0..cols).map(|_| unit() * 2.0 - 1.0).collect();
            (0..rows * cols)
                .map(|x| a[x / cols] * b[x % cols])
                .collect()
        }
        Kind::Planted => {
            let mut target: Vec<usize> = (0..cols).collect();
            for i in (1..cols).rev() {
                let j = (unit() * (i + 1) as f64) as usize;
                target.swap(i, j.min(i));
            }
            let mut s: Vec<f64> = (0..rows * cols)
                .map(|_| 0.3 * (unit() + unit() + unit() - 1.5))
                .collect();
            for i in 0..rows {
                s[i * cols + target[i]] += 1.0;
            }
            s
        }
    }
}

/// Strategy: one of [`KINDS`].
pub fn kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(KINDS.to_vec())
}
