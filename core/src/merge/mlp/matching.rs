//! Step 1: the neg-l2 similarity of every hidden layer from moment sums over the merge
//! samples, one auction per layer, the top-k selection of the pairs to merge, and the layout
//! `[merged | A-only | B-only]` kept in the index scratch.

use super::error::MlpMergeError;
use super::forward::{self, relu};
use super::plan::{Context, MlpMergePlan};
use super::{GroupInfo, MAX_HIDDEN};
use crate::assign::{auction, auction_scratch_len, select_top};
use crate::linalg::MatRef;

/// The A unit and the B unit behind a merged row, each with its weight in the row's target.
pub(super) type Sources = (Option<(usize, f32)>, Option<(usize, f32)>);

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
fn index_range(plan: &MlpMergePlan, g: usize) -> core::ops::Range<usize> {
    let start: usize = plan.hidden[..g].iter().map(|&n| 4 * n).sum();
    start..start + 4 * plan.hidden[g]
}

impl<'a> Layout<'a> {
    /// The layout of hidden layer `g` (after [`match_groups`]).
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

    /// The A unit and B unit behind merged row `r` with their weights in the target:
    /// `(a + b) / 2` for a merged pair, the unit itself for a private one.
    pub(super) fn sources(&self, r: usize) -> Sources {
        let (k, n) = (self.k, self.n);
        if r < k {
            let a = self.order[r];
            (Some((a, 0.5)), Some((self.perm[a], 0.5)))
        } else if r < n {
            (Some((self.order[r], 1.0)), None)
        } else {
            (None, Some((self.perm[self.order[r - n + k]], 1.0)))
        }
    }

    /// Merged index of A unit `i`.
    pub(super) fn slot_a(&self, i: usize) -> usize {
        self.slot_a[i]
    }

    /// Merged index of B unit `j`.
    pub(super) fn slot_b(&self, j: usize) -> usize {
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
        let (a, b) = self.layout.sources(r);
        (a.map(|(u, _)| u), b.map(|(u, _)| u))
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

/// Matches every hidden layer and writes its layout into `indices`.
pub(super) fn match_groups(
    ctx: &Context<'_>,
    scratch: &mut [f64],
    indices: &mut [usize],
) -> Result<heapless::Vec<GroupInfo, MAX_HIDDEN>, MlpMergeError> {
    let plan = ctx.plan;
    let mut infos = heapless::Vec::new();
    for g in 0..plan.hidden.len() {
        let info = match_group(ctx, g, scratch, &mut indices[index_range(plan, g)])?;
        // At most MAX_HIDDEN groups.
        let _ = infos.push(info);
    }
    Ok(infos)
}

/// Matches hidden layer `g`: moments, neg-l2 similarity, auction, selection, slots.
fn match_group(
    ctx: &Context<'_>,
    g: usize,
    scratch: &mut [f64],
    lists: &mut [usize],
) -> Result<GroupInfo, MlpMergeError> {
    let plan = ctx.plan;
    let n = plan.hidden[g];
    let (acts, work) = forward::split(plan, scratch);
    let (sim, rest) = work.split_at_mut(n * n);
    let (auction_scratch, rest) = rest.split_at_mut(auction_scratch_len(n));
    let (sa, rest) = rest.split_at_mut(n);
    let (sb, rest) = rest.split_at_mut(n);
    let (saa, rest) = rest.split_at_mut(n);
    let saa = &mut saa[..];
    let sbb = &mut rest[..n];
    for v in [&mut *sim, &mut *sa, &mut *sb, &mut *saa, &mut *sbb] {
        v.fill(0.0);
    }
    // Moments over both nodes of the group (the linear output and its ReLU), every sample.
    for s in 0..plan.samples {
        let x = ctx.sample(s);
        forward::original(plan, ctx.a, x, g, acts.a.0, acts.a.1);
        forward::original(plan, ctx.b, x, g, acts.b.0, acts.b.1);
        let za = &acts.a.0[..n];
        for after_relu in [false, true] {
            let value = |z: f64| {
                if after_relu {
                    f64::from(relu(z as f32))
                } else {
                    z
                }
            };
            // B's values of this node, in B's second buffer (free after the forward pass).
            let (zb, bv) = (&acts.b.0[..n], &mut acts.b.1[..n]);
            for ((v, &z), (s, q)) in bv.iter_mut().zip(zb).zip(sb.iter_mut().zip(sbb.iter_mut())) {
                *v = value(z);
                *s += *v;
                *q += *v * *v;
            }
            for i in 0..n {
                let a = value(za[i]);
                sa[i] += a;
                saa[i] += a * a;
                let row = &mut sim[i * n..(i + 1) * n];
                for (c, &b) in row.iter_mut().zip(bv.iter()) {
                    *c += a * b;
                }
            }
        }
    }
    // neg-l2 from the centred moments, as `similarity` computes it:
    // sum (a_i - b_j)^2 = Va_i + Vb_j - 2 C_ij + count (mean_a_i - mean_b_j)^2.
    let count = 2.0 * plan.samples as f64;
    for (s, q) in sa.iter().zip(saa.iter_mut()) {
        *q = (*q - s * s / count).max(0.0);
    }
    for (s, q) in sb.iter().zip(sbb.iter_mut()) {
        *q = (*q - s * s / count).max(0.0);
    }
    for i in 0..n {
        for j in 0..n {
            let c = sim[i * n + j] - sa[i] * sb[j] / count;
            let dm = sa[i] / count - sb[j] / count;
            let sq = saa[i] + sbb[j] - 2.0 * c + count * dm * dm;
            // Overflowed activations make the moments infinite and `sq` infinite or NaN (which
            // `max` would turn into 0).
            let v = -libm::sqrt(sq.max(0.0));
            if !sq.is_finite() || !v.is_finite() {
                return Err(MlpMergeError::NonFiniteSimilarity {
                    group: g,
                    row: i,
                    col: j,
                });
            }
            sim[i * n + j] = v;
        }
    }
    let (perm, rest) = lists.split_at_mut(n);
    let (order, rest) = rest.split_at_mut(n);
    let (slot_a, slot_b) = rest.split_at_mut(n);
    let scores = MatRef::new(&*sim, n, n).map_err(|_| MlpMergeError::SizeOverflow)?;
    let info = auction(scores, &ctx.params.auction, perm, auction_scratch)
        .map_err(|error| MlpMergeError::Assignment { group: g, error })?;
    let k = plan.merged_pairs[g];
    select_top(scores, perm, k, order)
        .map_err(|error| MlpMergeError::Selection { group: g, error })?;
    // Merged pairs sit at 0..k, A-only units at k..n, their B partners at n..2n - k.
    for (p, &a) in order.iter().enumerate() {
        slot_a[a] = p;
        slot_b[perm[a]] = if p < k { p } else { n + (p - k) };
    }
    let total_score = (0..n).map(|i| scores.at(i, perm[i])).sum();
    let mean_merged_score = if k == 0 {
        f64::NAN
    } else {
        order[..k]
            .iter()
            .map(|&i| scores.at(i, perm[i]))
            .sum::<f64>()
            / k as f64
    };
    Ok(GroupInfo {
        width: n,
        merged: k,
        merged_width: plan.merged_widths[g],
        total_score,
        mean_merged_score,
        auction: info,
    })
}
