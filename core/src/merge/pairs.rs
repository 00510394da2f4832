//! The tail of matching one group, shared by the host and the device merge, without
//! allocation: the auction on the similarity matrix, the selection of the `k` best-scoring
//! pairs to merge (ties to the lower A unit), and the scores the report shows
//! (docs/ALGORITHM.md sections 2 and 3).

use crate::assign::{AuctionError, AuctionInfo, AuctionParams, SelectError, auction, select_top};
use crate::linalg::MatRef;

/// What [`assign_pairs`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairsInfo {
    /// What the auction reports (phases, bids, final epsilon, optimality bound).
    pub auction: AuctionInfo,
    /// Total similarity of the assignment.
    pub total_score: f64,
    /// Mean similarity of the merged pairs (NaN when none is merged).
    pub mean_merged_score: f64,
}

/// Why [`assign_pairs`] failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PairsError {
    /// The assignment failed (e.g. a non-finite similarity, with its position).
    Auction(AuctionError),
    /// The selection of the pairs to merge failed.
    Select(SelectError),
}

/// Matches A's units to B's by maximising the total of the square `scores` (A units as rows)
/// into `perm` (`perm[i]`: B's partner of A unit `i`), and writes the A units in decreasing
/// order of their pair's score into `order` (ties to the lower unit): the first `k` are
/// merged. `auction_scratch` holds [`auction_scratch_len`](crate::assign::auction_scratch_len)
/// values.
pub fn assign_pairs(
    scores: MatRef<'_, f64>,
    k: usize,
    params: &AuctionParams,
    perm: &mut [usize],
    order: &mut [usize],
    auction_scratch: &mut [f64],
) -> Result<PairsInfo, PairsError> {
    let info = auction(scores, params, perm, auction_scratch).map_err(PairsError::Auction)?;
    select_top(scores, perm, k, order).map_err(PairsError::Select)?;
    let n = perm.len();
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
    Ok(PairsInfo {
        auction: info,
        total_score,
        mean_merged_score,
    })
}
