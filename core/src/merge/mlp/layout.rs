//! The layout `[merged | A-only | B-only]` of every hidden layer, kept in the caller's index
//! scratch (4 indices per unit: the assignment, the order, the slots of A's and of B's
//! units), read through the core's [`UnitLayout`].

use super::plan::MlpMergePlan;
use crate::merge::sources::{TargetRule, UnitLayout, row_source};

/// The layout of one hidden layer, read from the index scratch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout<'a> {
    /// Pairs merged.
    pub(super) k: usize,
    /// Units per model.
    pub(super) n: usize,
    /// `perm[i]`: the B unit matched to A unit `i`.
    perm: &'a [usize],
    /// The merged A units (increasing), then the A-only units (increasing).
    order: &'a [usize],
    /// Merged index of each A unit.
    slot_a: &'a [usize],
    /// Merged index of each B unit.
    slot_b: &'a [usize],
}

/// Where group `g`'s lists start in the index scratch, and their length (4 per unit).
pub(super) fn index_range(plan: &MlpMergePlan, g: usize) -> core::ops::Range<usize> {
    let start: usize = plan.hidden[..g].iter().map(|&n| 4 * n).sum();
    start..start + 4 * plan.hidden[g]
}

impl<'a> Layout<'a> {
    /// The layout of hidden layer `g` (after the matching).
    pub(super) fn of(plan: &MlpMergePlan, indices: &'a [usize], g: usize) -> Self {
        let n = plan.hidden[g];
        let all = &indices[index_range(plan, g)];
        let (perm, rest) = all.split_at(n);
        let (order, rest) = rest.split_at(n);
        let (slot_a, slot_b) = rest.split_at(n);
        Self {
            k: plan.merged_pairs[g],
            n,
            perm,
            order,
            slot_a,
            slot_b,
        }
    }
}

impl UnitLayout for Layout<'_> {
    fn original_width(&self) -> usize {
        self.n
    }
    fn merged_count(&self) -> usize {
        self.k
    }
    fn pair(&self, m: usize) -> (usize, usize) {
        let a = self.order[m];
        (a, self.perm[a])
    }
    fn a_only(&self, s: usize) -> usize {
        self.order[self.k + s]
    }
    fn b_only(&self, s: usize) -> usize {
        self.perm[self.order[self.k + s]]
    }
    fn slot_a(&self, i: usize) -> usize {
        self.slot_a[i]
    }
    fn slot_b(&self, j: usize) -> usize {
        self.slot_b[j]
    }
}

/// Which original units make up the merged units of one hidden layer, as a successful
/// [`mlp_merge`](super::mlp_merge) leaves them in the index scratch
/// ([`MlpMergePlan::merged_units`]).
#[derive(Debug, Clone, Copy)]
pub struct MergedUnits<'a> {
    layout: Layout<'a>,
}

impl<'a> MergedUnits<'a> {
    /// `perm[i]`: the B unit matched to A unit `i` by the assignment.
    pub fn perm(&self) -> &'a [usize] {
        self.layout.perm
    }

    /// The A units whose pairs are merged, increasing (merged units `0..k`).
    pub fn merged(&self) -> &'a [usize] {
        &self.layout.order[..self.layout.k]
    }

    /// The A units kept separate, increasing (merged units `k..n`; their B partners follow at
    /// `n..2n - k` in the same order).
    pub fn a_only(&self) -> &'a [usize] {
        &self.layout.order[self.layout.k..]
    }

    /// The A unit and the B unit behind merged unit `r` (`None` for the side it does not
    /// come from; both `None` out of range, or when `indices` do not hold a merge's result).
    pub fn sources(&self, r: usize) -> (Option<usize>, Option<usize>) {
        let (n, k) = (self.layout.n, self.layout.k);
        let valid = |&i: &usize| i < n;
        if r >= 2 * n - k
            || !self.layout.order.iter().all(valid)
            || !self.layout.perm.iter().all(valid)
        {
            return (None, None);
        }
        let source = row_source(TargetRule::Layout(0), |_| self.layout, r);
        (source.a.map(|(u, _)| u), source.b.map(|(u, _)| u))
    }
}

impl MlpMergePlan {
    /// The merged units of hidden layer `g` in the index scratch of a successful merge with
    /// this plan (`None` if `g` is out of range or `indices` is too short).
    pub fn merged_units<'a>(&self, indices: &'a [usize], g: usize) -> Option<MergedUnits<'a>> {
        if g >= self.hidden.len() || indices.len() < self.index_len {
            return None;
        }
        Some(MergedUnits {
            layout: Layout::of(self, indices, g),
        })
    }
}
