//! Step 1: the neg-l2 similarity of every hidden layer from moment sums over the merge
//! samples, one auction per layer, the top-k selection of the pairs to merge, and the layout
//! `[merged | A-only | B-only]` kept in the index scratch.

use super::error::MlpMergeError;
use super::layout::index_range;
use super::source::InPlaceSource;
use super::{GroupInfo, MAX_HIDDEN};
use crate::assign::auction_scratch_len;
use crate::linalg::MatRef;
use crate::merge::pairs::{PairsError, assign_pairs};
use crate::merge::pass::{GroupMoments, Moments, Pass, PassSource};
use crate::similarity::neg_l2;

/// Matches every hidden layer and writes its layout into `indices`, with the moments from
/// `source` (`weights`: the merged network, not read by matching passes).
pub(super) fn match_groups(
    source: &mut InPlaceSource<'_>,
    weights: &[f32],
    scratch: &mut [f64],
    indices: &mut [usize],
) -> Result<heapless::Vec<GroupInfo, MAX_HIDDEN>, MlpMergeError> {
    let plan = source.plan;
    let mut infos = heapless::Vec::new();
    for g in 0..plan.hidden.len() {
        let info = match_group(
            source,
            weights,
            g,
            scratch,
            &mut indices[index_range(plan, g)],
        )?;
        // At most MAX_HIDDEN groups.
        let _ = infos.push(info);
    }
    Ok(infos)
}

/// Matches hidden layer `g`: moments, neg-l2 similarity, auction, selection, slots.
fn match_group(
    source: &mut InPlaceSource<'_>,
    weights: &[f32],
    g: usize,
    scratch: &mut [f64],
    lists: &mut [usize],
) -> Result<GroupInfo, MlpMergeError> {
    let plan = source.plan;
    let n = plan.hidden[g];
    let (sim, rest) = scratch.split_at_mut(n * n);
    let (auction_scratch, rest) = rest.split_at_mut(auction_scratch_len(n));
    let (sa, rest) = rest.split_at_mut(n);
    let (sb, rest) = rest.split_at_mut(n);
    let (saa, rest) = rest.split_at_mut(n);
    let (sbb, source_scratch) = rest.split_at_mut(n);
    for v in [&mut *sim, &mut *sa, &mut *sb, &mut *saa, &mut *sbb] {
        v.fill(0.0);
    }
    let mut count = 0.0;
    let mut moments = Moments::Group(GroupMoments {
        cross: &mut *sim,
        sum_a: &mut *sa,
        sum_b: &mut *sb,
        sq_a: &mut *saa,
        sq_b: &mut *sbb,
        count: &mut count,
    });
    source.run(
        &Pass::Matching { group: g },
        weights,
        &mut moments,
        source_scratch,
    )?;
    // neg-l2 from the centred moments, as the host computes it.
    for (s, q) in sa.iter().zip(saa.iter_mut()) {
        *q = (*q - s * s / count).max(0.0);
    }
    for (s, q) in sb.iter().zip(sbb.iter_mut()) {
        *q = (*q - s * s / count).max(0.0);
    }
    for i in 0..n {
        for j in 0..n {
            let c = sim[i * n + j] - sa[i] * sb[j] / count;
            let v = neg_l2(saa[i], sbb[j], c, sa[i] / count - sb[j] / count, count);
            if !v.is_finite() {
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
    let k = plan.merged_pairs[g];
    let info = assign_pairs(
        scores,
        k,
        &source.params.auction,
        perm,
        order,
        auction_scratch,
    )
    .map_err(|e| match e {
        PairsError::Auction(error) => MlpMergeError::Assignment { group: g, error },
        PairsError::Select(error) => MlpMergeError::Selection { group: g, error },
    })?;
    // Merged pairs sit at 0..k, A-only units at k..n, their B partners at n..2n - k.
    for (p, &a) in order.iter().enumerate() {
        slot_a[a] = p;
        slot_b[perm[a]] = if p < k { p } else { n + (p - k) };
    }
    Ok(GroupInfo {
        width: n,
        merged: k,
        merged_width: plan.merged_widths[g],
        total_score: info.total_score,
        mean_merged_score: info.mean_merged_score,
        auction: info.auction,
    })
}
