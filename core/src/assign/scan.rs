//! The bidding scan: over one row, the best and second-best of `w_j = k * s_j + q_j`, where
//! `q_j = -p_j` are the negated column prices, and the column of the best.
//!
//! [`best_two`] is the `wide` kernel (two independent `f64x4` accumulator sets, 8 columns per
//! step); [`best_two_reference`] is its scalar twin with the same contract, used by the tests.
//!
//! Contract (both): for a non-empty row of non-NaN values, `best` is the maximum of `w`,
//! `col` the *lowest* column attaining it, and `second` the maximum of `w` over all columns
//! but `col` (so `second == best` on a tie; `-inf` for a one-column row). Infinite values are
//! ordered as usual. NaN values are outside the contract (the auction rejects them first).

use wide::f64x4;

mod sealed {
    /// Element types the scan can read; widened to f64 lane by lane.
    pub trait Sealed: Copy {
        fn widen(self) -> f64;
        fn load4(chunk: &[Self]) -> wide::f64x4;
    }
}

/// A score element type of the auction: `f32` or `f64`. Scores are widened to f64, where all
/// auction arithmetic happens.
pub trait Score: sealed::Sealed {
    /// The value as f64 (exact for both types).
    fn to_f64(self) -> f64;
}

impl sealed::Sealed for f32 {
    #[inline(always)]
    fn widen(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn load4(c: &[f32]) -> f64x4 {
        let c: [f32; 4] = c.try_into().expect("4 lanes");
        f64x4::new(c.map(f64::from))
    }
}

impl sealed::Sealed for f64 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }
    #[inline(always)]
    fn load4(c: &[f64]) -> f64x4 {
        f64x4::from(<[f64; 4]>::try_from(c).expect("4 lanes"))
    }
}

impl Score for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Score for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

/// Result of a bidding scan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestTwo {
    /// Largest value.
    pub best: f64,
    /// Lowest column attaining `best`.
    pub col: usize,
    /// Largest value over the other columns (`-inf` if there are none).
    pub second: f64,
}

/// Lane state of the vector scan, merged at the end.
#[derive(Clone, Copy)]
struct Lanes {
    best: f64x4,
    second: f64x4,
    col: f64x4,
}

impl Lanes {
    const EMPTY: Self = Self {
        best: f64x4::NEG_INFINITY,
        second: f64x4::NEG_INFINITY,
        col: f64x4::ZERO,
    };

    #[inline(always)]
    fn push(&mut self, w: f64x4, cols: f64x4) {
        let gt = w.simd_gt(self.best);
        self.second = self.second.fast_max(w.fast_min(self.best));
        self.best = self.best.fast_max(w);
        self.col = gt.select(cols, self.col);
    }
}

/// Folds one candidate `(value, col, runner_up)` into a scalar state, keeping the lowest
/// column on ties. `runner_up` is the best value of the candidate's own lane other than it.
#[inline(always)]
fn fold(acc: &mut BestTwo, value: f64, col: usize, runner_up: f64) {
    if value > acc.best || (value == acc.best && col < acc.col) {
        acc.second = acc.second.max(acc.best).max(runner_up);
        acc.best = value;
        acc.col = col;
    } else {
        acc.second = acc.second.max(value).max(runner_up);
    }
}

#[inline(always)]
fn lanes4(c: &[f64]) -> f64x4 {
    f64x4::from(<[f64; 4]>::try_from(c).expect("4 lanes"))
}

/// The scan over `row` (any element type, read through `load4` / `load1`) and `neg_prices`,
/// of the same length `n > 0`.
#[inline(always)]
fn scan_generic<E: Copy>(
    row: &[E],
    neg_prices: &[f64],
    load4: impl Fn(&[E]) -> f64x4,
    load1: impl Fn(E) -> f64,
) -> BestTwo {
    let n = row.len();
    let q = &neg_prices[..n];
    let step = f64x4::splat(8.0);
    let mut ca = f64x4::new([0.0, 1.0, 2.0, 3.0]);
    let mut cb = f64x4::new([4.0, 5.0, 6.0, 7.0]);
    // A lane whose values never beat -inf reports its first column, which attains -inf.
    let mut a = Lanes {
        col: ca,
        ..Lanes::EMPTY
    };
    let mut b = Lanes {
        col: cb,
        ..Lanes::EMPTY
    };
    let rows8 = row.chunks_exact(8);
    let q8 = q.chunks_exact(8);
    let full = n - rows8.remainder().len();
    for (r, p) in rows8.zip(q8) {
        a.push(load4(&r[..4]) + lanes4(&p[..4]), ca);
        b.push(load4(&r[4..]) + lanes4(&p[4..]), cb);
        ca += step;
        cb += step;
    }
    let mut acc = BestTwo {
        best: f64::NEG_INFINITY,
        col: usize::MAX,
        second: f64::NEG_INFINITY,
    };
    if full > 0 {
        for lanes in [a, b] {
            let (best, second, col) = (
                lanes.best.to_array(),
                lanes.second.to_array(),
                lanes.col.to_array(),
            );
            for l in 0..4 {
                fold(&mut acc, best[l], col[l] as usize, second[l]);
            }
        }
    }
    for j in full..n {
        fold(&mut acc, load1(row[j]) + q[j], j, f64::NEG_INFINITY);
    }
    acc
}

/// Best two of `k * row[j] - p_j` (given `neg_prices[j] = -p_j`), vectorised. `row` and
/// `neg_prices` must have the same non-zero length.
#[inline]
pub fn best_two<T: Score>(row: &[T], k: f64, neg_prices: &[f64]) -> BestTwo {
    let n = row.len();
    assert!(
        n > 0 && neg_prices.len() == n,
        "scan of an empty or mismatched row"
    );
    let kv = f64x4::splat(k);
    if k == 1.0 {
        scan_generic(row, neg_prices, T::load4, T::widen)
    } else {
        scan_generic(row, neg_prices, |c| T::load4(c) * kv, |x| x.widen() * k)
    }
}

/// Best two of `c - p_j` for a constant row value `c` (the padding rows of a rectangular
/// problem), vectorised.
#[inline]
pub fn best_two_const(c: f64, neg_prices: &[f64]) -> BestTwo {
    assert!(!neg_prices.is_empty(), "scan of an empty row");
    let cv = f64x4::splat(c);
    scan_generic(neg_prices, neg_prices, |_| cv, |_| c)
}

/// Slots of a row's candidate list: the top two columns of each of the 8 lanes of
/// [`best_two_candidates`] plus the up to 7 tail columns the lanes do not cover. A list is
/// `2 * CANDIDATE_SLOTS` f64: the columns (unused slots hold `-1`), then their scaled scores
/// `k * s` (so that a cached bid reads neither the matrix nor anything but the prices).
pub const CANDIDATE_SLOTS: usize = 23;

/// Per-lane top three values and top two columns.
#[derive(Clone, Copy)]
struct Lanes3 {
    b1: f64x4,
    b2: f64x4,
    b3: f64x4,
    c1: f64x4,
    c2: f64x4,
}

impl Lanes3 {
    /// Empty lanes: no columns yet (`-1`). With finite values every lane's first element
    /// replaces it, since each lane sees at least one element whenever the lanes are used.
    const EMPTY: Self = Self {
        b1: f64x4::NEG_INFINITY,
        b2: f64x4::NEG_INFINITY,
        b3: f64x4::NEG_INFINITY,
        c1: f64x4::splat(-1.0),
        c2: f64x4::splat(-1.0),
    };

    #[inline(always)]
    fn push(&mut self, w: f64x4, cols: f64x4) {
        let gt1 = w.simd_gt(self.b1);
        let gt2 = w.simd_gt(self.b2);
        self.b3 = self.b3.fast_max(w.fast_min(self.b2));
        self.b2 = self.b2.fast_max(w.fast_min(self.b1));
        self.c2 = gt1.select(self.c1, gt2.select(cols, self.c2));
        self.c1 = gt1.select(cols, self.c1);
        self.b1 = self.b1.fast_max(w);
    }
}

/// [`best_two`] that also leaves a candidate list behind: `cands` (at least
/// `2 * CANDIDATE_SLOTS` long) receives the top two columns of each lane and the tail columns
/// with their scaled scores,
/// and the returned bound is at least the value of every other column (the largest third
/// value of a lane). Since prices only rise, the bound stays valid; [`best_two_cached`] then
/// finds the best two among the candidates alone while they stay above it.
///
/// Values must be finite. The [`BestTwo`] part equals [`best_two`]'s.
#[inline]
pub fn best_two_candidates<T: Score>(
    row: &[T],
    k: f64,
    neg_prices: &[f64],
    cands: &mut [f64],
) -> (BestTwo, f64) {
    let n = row.len();
    assert!(
        n > 0 && neg_prices.len() == n,
        "scan of an empty or mismatched row"
    );
    let (cands, vals) = cands[..2 * CANDIDATE_SLOTS].split_at_mut(CANDIDATE_SLOTS);
    let q = neg_prices;
    let kv = f64x4::splat(k);
    let step = f64x4::splat(8.0);
    let mut ca = f64x4::new([0.0, 1.0, 2.0, 3.0]);
    let mut cb = f64x4::new([4.0, 5.0, 6.0, 7.0]);
    let mut a = Lanes3::EMPTY;
    let mut b = Lanes3::EMPTY;
    let rows8 = row.chunks_exact(8);
    let full = n - rows8.remainder().len();
    let unit = k == 1.0;
    for (r, p) in rows8.zip(q.chunks_exact(8)) {
        let (ra, rb) = if unit {
            (T::load4(&r[..4]), T::load4(&r[4..]))
        } else {
            (T::load4(&r[..4]) * kv, T::load4(&r[4..]) * kv)
        };
        a.push(ra + lanes4(&p[..4]), ca);
        b.push(rb + lanes4(&p[4..]), cb);
        ca += step;
        cb += step;
    }
    let mut acc = BestTwo {
        best: f64::NEG_INFINITY,
        col: usize::MAX,
        second: f64::NEG_INFINITY,
    };
    let mut bound = f64::NEG_INFINITY;
    cands.fill(-1.0);
    if full > 0 {
        for (h, lanes) in [a, b].into_iter().enumerate() {
            let (b1, b2, b3) = (
                lanes.b1.to_array(),
                lanes.b2.to_array(),
                lanes.b3.to_array(),
            );
            let (c1, c2) = (lanes.c1.to_array(), lanes.c2.to_array());
            for l in 0..4 {
                fold(&mut acc, b1[l], c1[l] as usize, b2[l]);
                bound = bound.max(b3[l]);
                cands[2 * (4 * h + l)] = c1[l];
                cands[2 * (4 * h + l) + 1] = c2[l];
            }
        }
    }
    for j in full..n {
        let x = row[j].widen();
        let w = if unit { x } else { x * k } + q[j];
        fold(&mut acc, w, j, f64::NEG_INFINITY);
        cands[16 + (j - full)] = j as f64;
    }
    // The row is in cache now: store the candidates' scaled scores, computed as in the scan.
    for (c, v) in cands.iter().zip(vals.iter_mut()) {
        *v = if *c < 0.0 {
            f64::NEG_INFINITY
        } else {
            let x = row[*c as usize].widen();
            if unit { x } else { x * k }
        };
    }
    (acc, bound)
}

/// The best two of a row among its candidate columns (see [`best_two_candidates`]), or `None`
/// when the second best of them has fallen below `bound`, so that a column outside the list
/// might now rank among the top two (then scan the whole row).
#[inline]
pub fn best_two_cached(neg_prices: &[f64], cands: &[f64], bound: f64) -> Option<BestTwo> {
    let mut acc = BestTwo {
        best: f64::NEG_INFINITY,
        col: usize::MAX,
        second: f64::NEG_INFINITY,
    };
    let (cols, vals) = cands[..2 * CANDIDATE_SLOTS].split_at(CANDIDATE_SLOTS);
    for (&c, &v) in cols.iter().zip(vals) {
        if c < 0.0 {
            continue;
        }
        let j = c as usize;
        fold(&mut acc, v + neg_prices[j], j, f64::NEG_INFINITY);
    }
    (acc.second >= bound && acc.col != usize::MAX).then_some(acc)
}

/// Scalar twin of [`best_two`]: one pass in increasing column order, strict `>` for the best
/// (so the lowest column wins ties).
pub fn best_two_reference<T: Score>(row: &[T], k: f64, neg_prices: &[f64]) -> BestTwo {
    let n = row.len();
    assert!(
        n > 0 && neg_prices.len() == n,
        "scan of an empty or mismatched row"
    );
    let mut acc = BestTwo {
        best: f64::NEG_INFINITY,
        col: usize::MAX,
        second: f64::NEG_INFINITY,
    };
    for j in 0..n {
        let w = if k == 1.0 {
            row[j].to_f64() + neg_prices[j]
        } else {
            row[j].to_f64() * k + neg_prices[j]
        };
        if w > acc.best || acc.col == usize::MAX {
            acc.second = acc.best;
            acc.best = w;
            acc.col = j;
        } else if w > acc.second {
            acc.second = w;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const EDGES: [f64; 9] = [
        0.0,
        -0.0,
        f64::MIN_POSITIVE,
        5e-324, // smallest denormal
        -5e-324,
        1.0,
        -1.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];

    // Under Miri (`scripts/miri.sh`, ~0.05 s per scan) the lane-by-lane tests keep a thin
    // slice: rows of 1, 2, 9 and 19 columns (no full step, one step and a tail, two steps and
    // a tail), the planted value first, in the middle and last, and two backgrounds.

    /// Row lengths: 1 to 19 (two 8-column steps and every tail); a few under Miri.
    fn lens(all: core::ops::Range<usize>) -> Vec<usize> {
        if cfg!(miri) {
            all.filter(|l| [1, 2, 9, 19].contains(l)).collect()
        } else {
            all.collect()
        }
    }

    /// Positions of the planted value in a row of `len`: all; under Miri first, middle, last.
    fn positions(len: usize) -> Vec<usize> {
        if cfg!(miri) {
            let mut p = vec![0, len / 2, len - 1];
            p.dedup();
            p
        } else {
            (0..len).collect()
        }
    }

    /// Backgrounds: every edge value; under Miri the first two.
    fn backgrounds(edges: &[f64]) -> &[f64] {
        if cfg!(miri) { &edges[..2] } else { edges }
    }

    fn same(a: BestTwo, b: BestTwo) -> bool {
        a.col == b.col && a.best == b.best && a.second == b.second
    }

    /// Every edge value in every lane position (both vector halves and the scalar tail),
    /// against a background of each other edge value, for rows of 1 to 19 columns.
    #[test]
    fn lane_by_lane_edge_values() {
        for len in lens(1..20) {
            let q = vec![0.0; len];
            for &bg in backgrounds(&EDGES) {
                for &x in &EDGES {
                    for pos in positions(len) {
                        let mut row = vec![bg; len];
                        row[pos] = x;
                        let v = best_two(&row, 1.0, &q);
                        let r = best_two_reference(&row, 1.0, &q);
                        assert!(
                            same(v, r),
                            "len {len} bg {bg} x {x} at {pos}: {v:?} vs {r:?}"
                        );
                        // The expected answer, written out.
                        let (best, col) = if len == 1 || x > bg || (x == bg && pos == 0) {
                            (x, pos)
                        } else {
                            (bg, if pos == 0 { 1 } else { 0 })
                        };
                        let second = if len == 1 {
                            f64::NEG_INFINITY
                        } else if col == pos {
                            bg
                        } else if len == 2 {
                            x
                        } else {
                            bg.max(x)
                        };
                        assert_eq!(
                            (r.best, r.col, r.second),
                            (best, col, second),
                            "{len} {bg} {x} {pos}"
                        );
                    }
                }
            }
        }
    }

    /// Ties of the best in two lanes: the lowest column wins and the second equals the best.
    #[test]
    fn ties_across_lanes_pick_the_lowest_column() {
        for len in lens(2..40) {
            for a in positions(len) {
                for b in a + 1..len {
                    let mut row = vec![0.25f32; len];
                    row[a] = 3.0;
                    row[b] = 3.0;
                    let q = vec![-0.5; len];
                    let v = best_two(&row, 1.0, &q);
                    assert_eq!((v.best, v.col, v.second), (2.5, a, 2.5));
                    assert!(same(v, best_two_reference(&row, 1.0, &q)));
                }
            }
        }
    }

    /// The candidate scan on finite edge values (denormals, signed zeros, extremes, ties) in
    /// every lane position: its best two equal the scalar twin's and its bound covers every
    /// column outside the list.
    #[test]
    fn candidate_scan_lane_by_lane() {
        let edges = [0.0, -0.0, 5e-324, -5e-324, 1.0, -1.0, 1e300, -1e300];
        for len in lens(1..20) {
            let q = vec![0.0; len];
            for &bg in backgrounds(&edges) {
                for &x in &edges {
                    for pos in positions(len) {
                        let mut row = vec![bg; len];
                        row[pos] = x;
                        let mut cands = vec![0.0; 2 * CANDIDATE_SLOTS];
                        let (bt, bound) = best_two_candidates(&row, 1.0, &q, &mut cands);
                        let r = best_two_reference(&row, 1.0, &q);
                        assert!(
                            same(bt, r),
                            "len {len} bg {bg} x {x} at {pos}: {bt:?} vs {r:?}"
                        );
                        let listed: Vec<usize> = cands[..CANDIDATE_SLOTS]
                            .iter()
                            .filter(|&&c| c >= 0.0)
                            .map(|&c| c as usize)
                            .collect();
                        for j in (0..len).filter(|j| !listed.contains(j)) {
                            assert!(row[j] <= bound, "len {len} bg {bg} x {x} at {pos}");
                        }
                        let cached = best_two_cached(&q, &cands, bound).expect("fresh list");
                        assert_eq!((cached.best, cached.second), (r.best, r.second));
                    }
                }
            }
        }
    }

    #[test]
    fn prices_and_factor_enter_like_the_twin() {
        let len = 37;
        let row: Vec<f64> = (0..len).map(|j| ((j * 7919) % 31) as f64).collect();
        let q: Vec<f64> = (0..len).map(|j| -(((j * 104729) % 17) as f64)).collect();
        for k in [1.0, 38.0] {
            let v = best_two(&row, k, &q);
            assert!(same(v, best_two_reference(&row, k, &q)));
            let w: Vec<f64> = (0..len).map(|j| row[j] * k + q[j]).collect();
            let best = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(v.best, best);
            assert_eq!(v.col, w.iter().position(|&x| x == best).unwrap());
        }
        let c = best_two_const(2.0, &q);
        assert!(same(c, best_two_reference(&vec![2.0; len], 1.0, &q)));
    }
}
