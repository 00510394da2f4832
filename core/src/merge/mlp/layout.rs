//! The layouts `[merged | A-only | B-only]` of a merge's hidden layers, as the driver leaves
//! them in the caller's index scratch ([`GroupLayout`]), read back by the caller.

use super::plan::MlpMergePlan;
use crate::merge::layout::GroupLayout;
use crate::merge::sources::{TargetRule, row_source};

/// Which original units make up the merged units of one hidden layer, as a successful
/// [`mlp_merge`](super::mlp_merge) leaves them in the index scratch
/// ([`MlpMergePlan::merged_units`]).
#[derive(Debug, Clone, Copy)]
pub struct MergedUnits<'a> {
    layout: GroupLayout<&'a [usize]>,
}

impl<'a> MergedUnits<'a> {
    /// The layout itself, read from the index scratch.
    pub fn layout(&self) -> GroupLayout<&'a [usize]> {
        self.layout
    }

    /// `perm[i]`: the B unit matched to A unit `i` by the assignment.
    pub fn perm(&self) -> &[usize] {
        self.layout.perm()
    }

    /// The A units whose pairs are merged, increasing (merged units `0..k`).
    pub fn merged(&self) -> &[usize] {
        self.layout.merged_a()
    }

    /// The A units kept separate, increasing (merged units `k..n`; their B partners follow at
    /// `n..2n - k` in the same order).
    pub fn a_only(&self) -> &[usize] {
        self.layout.a_only_units()
    }

    /// The A unit and the B unit behind merged unit `r` (`None` for the side it does not
    /// come from; both `None` out of range, or when `indices` do not hold a merge's result).
    pub fn sources(&self, r: usize) -> (Option<usize>, Option<usize>) {
        let n = self.layout.original_width();
        let valid = |&i: &usize| i < n;
        if r >= self.layout.merged_width()
            || !self.layout.merged_a().iter().all(valid)
            || !self.layout.a_only_units().iter().all(valid)
            || !self.layout.perm().iter().all(valid)
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
        let start: usize = self.hidden[..g]
            .iter()
            .map(|&n| GroupLayout::lists_len(n))
            .sum();
        let lists = &indices[start..start + GroupLayout::lists_len(self.hidden[g])];
        Some(MergedUnits {
            layout: GroupLayout::view(self.merged_pairs[g], lists),
        })
    }
}
