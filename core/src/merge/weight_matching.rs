//! Data-free matching from the weights alone (Git Re-Basin's weight matching, docs/ALGORITHM.md
//! section 2).
//!
//! Starting from identity permutations, the groups are swept in a seeded random order; for
//! group `g` the score matrix is `C_g = sum over g's tensor axes of W_A (axis first, flattened)
//! times W_B' (same)^T`, where `B'` is B with every *other* group permuted by its current
//! permutation (g's own axis stays in B's original order, so `C_g` scores pairs in B's
//! original frame). BN running statistics are skipped. The assignment on `C_g` replaces `P_g`
//! when it raises the score; the sweeps stop after one with no change, or after
//! [`WeightMatchParams::max_sweeps`].

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::assign::{AuctionError, AuctionParams, auction, auction_scratch_len};
use crate::graph::{Groups, Tensor, Weights};
use crate::linalg::{MatMut, MatRef, Transpose, gemm, gemm_scratch_len};

/// Knobs of [`weight_matching`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct WeightMatchParams {
    /// Most sweeps over all groups (default 100).
    pub max_sweeps: usize,
    /// Seed of the sweep order (default 0).
    pub seed: u64,
    /// Assignment parameters.
    pub auction: AuctionParams,
}

impl Default for WeightMatchParams {
    fn default() -> Self {
        Self {
            max_sweeps: 100,
            seed: 0,
            auction: AuctionParams::default(),
        }
    }
}

/// The result of [`weight_matching`].
#[derive(Debug, Clone)]
pub struct WeightMatching {
    /// Per group, `perm[i]`: the B unit matched to A unit `i`.
    pub perms: Vec<Vec<usize>>,
    /// Per group, the final `n x n` score matrix `C_g` (row-major, A units as rows, B units
    /// in B's original order as columns), for selecting the pairs to merge.
    pub scores: Vec<Vec<f64>>,
    /// Sweeps run.
    pub sweeps: usize,
}

/// Why weight matching failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WeightMatchError {
    /// A group member tensor is missing from A or B, or its axis does not have the group's
    /// width.
    Tensor {
        /// The tensor's name.
        tensor: String,
        /// The axis.
        axis: usize,
    },
    /// A and B disagree on a tensor's shape.
    ShapeMismatch {
        /// The tensor's name.
        tensor: String,
    },
    /// The assignment failed (e.g. a non-finite weight product).
    Auction {
        /// The group.
        group: usize,
        /// The error.
        error: AuctionError,
    },
}

impl fmt::Display for WeightMatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightMatchError::Tensor { tensor, axis } => {
                write!(
                    f,
                    "tensor `{tensor}` is missing or its axis {axis} has the wrong size"
                )
            }
            WeightMatchError::ShapeMismatch { tensor } => {
                write!(f, "tensor `{tensor}` has different shapes in A and B")
            }
            WeightMatchError::Auction { group, error } => {
                write!(f, "assignment of group {group}: {error}")
            }
        }
    }
}

impl core::error::Error for WeightMatchError {}

/// Whether a tensor takes part in weight matching (BN running statistics do not).
fn matched_tensor(name: &str) -> bool {
    !(name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked"))
}

/// `c += sum over the outer index of W_A[o, :, j] W_B[o, :, j]^T` for the `n` units of `axis`.
fn add_axis_products(
    a: &Tensor,
    b: &Tensor,
    axis: usize,
    n: usize,
    c: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let shape = a.shape();
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    if inner == 0 || outer == 0 {
        return;
    }
    scratch.resize(gemm_scratch_len(n, n, inner), 0.0);
    for o in 0..outer {
        let base = o * n * inner;
        let av = MatRef::new(&a.data()[base..base + n * inner], n, inner).expect("in bounds");
        let bv = MatRef::new(&b.data()[base..base + n * inner], n, inner).expect("in bounds");
        let cv = MatMut::new(c, n, n).expect("n x n");
        gemm(1.0, av, Transpose::No, bv, Transpose::Yes, 1.0, cv, scratch).expect("shapes agree");
    }
}

/// A small deterministic generator for the sweep order.
fn shuffled(n: usize, seed: u64, sweep: usize) -> Vec<usize> {
    let mut state = seed ^ (sweep as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

/// Weight matching of B to A over all `groups`.
pub fn weight_matching(
    groups: &Groups,
    a: &Weights,
    b: &Weights,
    params: &WeightMatchParams,
) -> Result<WeightMatching, WeightMatchError> {
    let gs = groups.groups();
    // Every (axis, group) of every matched tensor, to permute a tensor by the other groups.
    let mut tensor_axes: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for (g, group) in gs.iter().enumerate() {
        for m in group.members.iter().filter(|m| matched_tensor(&m.tensor)) {
            let bad = || WeightMatchError::Tensor {
                tensor: m.tensor.clone(),
                axis: m.axis,
            };
            let (ta, tb) = (
                a.get(&m.tensor).ok_or_else(bad)?,
                b.get(&m.tensor).ok_or_else(bad)?,
            );
            if ta.shape() != tb.shape() {
                return Err(WeightMatchError::ShapeMismatch {
                    tensor: m.tensor.clone(),
                });
            }
            if ta.shape().get(m.axis) != Some(&group.width) {
                return Err(bad());
            }
            tensor_axes.entry(&m.tensor).or_default().push((m.axis, g));
        }
    }
    let mut perms: Vec<Vec<usize>> = gs.iter().map(|g| (0..g.width).collect()).collect();
    let mut scores: Vec<Vec<f64>> = gs.iter().map(|g| vec![0.0; g.width * g.width]).collect();
    let mut gemm_scratch = Vec::new();
    let mut sweeps = 0;
    while sweeps < params.max_sweeps {
        sweeps += 1;
        let mut changed = false;
        for g in shuffled(gs.len(), params.seed, sweeps) {
            let n = gs[g].width;
            let mut c = vec![0.0f32; n * n];
            for m in gs[g].members.iter().filter(|m| matched_tensor(&m.tensor)) {
                let ta = &a[&m.tensor];
                // B's tensor with every other group's axis permuted.
                let mut tb = b[&m.tensor].clone();
                for &(axis, h) in &tensor_axes[m.tensor.as_str()] {
                    if h != g {
                        tb = tb.permute_axis(axis, &perms[h]).expect("a permutation");
                    }
                }
                add_axis_products(ta, &tb, m.axis, n, &mut c, &mut gemm_scratch);
            }
            let s: Vec<f64> = c.iter().map(|&v| f64::from(v)).collect();
            let sm = MatRef::new(&s, n, n).expect("n x n");
            let mut perm = vec![0usize; n];
            let mut scratch = vec![0.0f64; auction_scratch_len(n)];
            auction(sm, &params.auction, &mut perm, &mut scratch)
                .map_err(|error| WeightMatchError::Auction { group: g, error })?;
            let total = |p: &[usize]| -> f64 { (0..n).map(|i| s[i * n + p[i]]).sum() };
            let (new, old) = (total(&perm), total(&perms[g]));
            // Replace only on a real gain, so ties cannot cycle.
            if new > old + 1e-12 * (new.abs() + old.abs()) {
                perms[g] = perm;
                changed = true;
            }
            scores[g] = s;
        }
        if !changed {
            break;
        }
    }
    Ok(WeightMatching {
        perms,
        scores,
        sweeps,
    })
}
