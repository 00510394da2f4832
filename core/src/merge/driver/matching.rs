//! Step 1: the neg-l2 similarity of every group from moment sums over the merge samples, one
//! auction per group, the top-k selection of the pairs to merge, and the layout
//! `[merged | A-only | B-only]` ([`GroupLayout`]) kept in the index scratch.

use super::{DeviceSource, DriverError, GroupInfo, SolveKnobs};
use crate::assign::auction_scratch_len;
use crate::linalg::MatRef;
use crate::merge::layout::GroupLayout;
use crate::merge::pairs::{PairsError, assign_pairs};
use crate::merge::pass::{GroupMoments, Moments, Pass};

/// f64 scratch the matching of a group of width `n` needs besides its source's: the
/// similarity, the auction's scratch and the four moment vectors.
pub fn matching_scratch_len(n: usize) -> usize {
    n.saturating_mul(n)
        .saturating_add(auction_scratch_len(n))
        .saturating_add(n.saturating_mul(4))
}

/// Matches every group of the source's schedule and writes its layout into `indices`, with
/// the moments from `source` (`weights`: the merged network, not read by matching passes).
/// The report holds the first `N` groups (the caller's capacity: a device keeps it small).
#[inline(never)]
pub fn match_groups<'a, S, const N: usize>(
    source: &mut S,
    knobs: &SolveKnobs,
    weights: &[f32],
    scratch: &mut [f64],
    indices: &mut [usize],
) -> Result<heapless::Vec<GroupInfo, N>, S::Error>
where
    S: DeviceSource<'a>,
    S::Error: From<DriverError>,
{
    let mut infos = heapless::Vec::new();
    for g in 0..source.schedule().groups.len() {
        let range = source.schedule().index_range(g);
        let info = match_group(source, knobs, weights, g, scratch, &mut indices[range])?;
        // Groups beyond the caller's capacity are not reported.
        let _ = infos.push(info);
    }
    Ok(infos)
}

/// Matches group `g`: moments, neg-l2 similarity, auction, selection, slots.
fn match_group<'a, S>(
    source: &mut S,
    knobs: &SolveKnobs,
    weights: &[f32],
    g: usize,
    scratch: &mut [f64],
    lists: &mut [usize],
) -> Result<GroupInfo, S::Error>
where
    S: DeviceSource<'a>,
    S::Error: From<DriverError>,
{
    let plan = source.schedule().groups[g];
    let n = plan.width;
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
            let v =
                crate::similarity::neg_l2(saa[i], sbb[j], c, sa[i] / count - sb[j] / count, count);
            if !v.is_finite() {
                return Err(DriverError::NonFiniteSimilarity {
                    group: g,
                    row: i,
                    col: j,
                }
                .into());
            }
            sim[i * n + j] = v;
        }
    }
    let (perm, rest) = lists.split_at_mut(n);
    let (order, _) = rest.split_at_mut(n);
    let scores = MatRef::new(&*sim, n, n).map_err(|_| DriverError::SizeOverflow)?;
    let k = plan.merged;
    let info = assign_pairs(scores, k, &knobs.auction, perm, order, auction_scratch).map_err(
        |e| match e {
            PairsError::Auction(error) => DriverError::Assignment { group: g, error },
            PairsError::Select(error) => DriverError::Selection { group: g, error },
        },
    )?;
    // Merged pairs sit at 0..k, A-only units at k..n, their B partners at n..2n - k.
    GroupLayout::from_assignment(k, lists)
        .map_err(|error| DriverError::Layout { group: g, error })?;
    Ok(GroupInfo {
        width: n,
        merged: k,
        merged_width: plan.merged_width(),
        total_score: info.total_score,
        mean_merged_score: info.mean_merged_score,
        auction: info.auction,
    })
}
