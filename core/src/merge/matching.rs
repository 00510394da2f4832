//! Matching one permutation group: the assignment on its similarity matrix and the partial
//! selection of the pairs to merge (docs/ALGORITHM.md sections 2 and 3).

use alloc::vec;
use core::fmt;

use super::layout::{GroupLayout, LayoutError};
use super::pairs::{PairsError, assign_pairs};
use crate::assign::{AuctionError, AuctionInfo, AuctionParams, SelectError, auction_scratch_len};
use crate::linalg::MatRef;

/// The matching of one group.
#[derive(Debug, Clone)]
pub struct GroupMatch {
    /// The merged layout (the `k` best pairs merged; the assignment is its
    /// [`perm`](GroupLayout::perm)).
    pub layout: GroupLayout,
    /// What the auction reports (phases, bids, final epsilon, optimality bound).
    pub auction: AuctionInfo,
    /// Total similarity of the assignment.
    pub total_score: f64,
    /// Mean similarity of the merged pairs (NaN when none is merged).
    pub mean_merged_score: f64,
}

/// Why a group could not be matched.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum MatchError {
    /// The similarity matrix is not square.
    NotSquare {
        /// Rows (A units).
        rows: usize,
        /// Columns (B units).
        cols: usize,
    },
    /// The separate fraction is not in `[0, 1]`.
    BadRatio {
        /// The ratio given.
        ratio: f64,
    },
    /// The assignment failed (e.g. a non-finite similarity, with its position).
    Auction(AuctionError),
    /// The selection of the pairs to merge failed.
    Select(SelectError),
    /// The layout could not be built.
    Layout(LayoutError),
}

impl fmt::Display for MatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchError::NotSquare { rows, cols } => {
                write!(f, "similarity matrix is {rows}x{cols}, not square")
            }
            MatchError::BadRatio { ratio } => {
                write!(f, "separate fraction {ratio} is outside [0, 1]")
            }
            MatchError::Auction(e) => write!(f, "assignment: {e}"),
            MatchError::Select(e) => write!(f, "pair selection: {e}"),
            MatchError::Layout(e) => write!(f, "layout: {e}"),
        }
    }
}

impl core::error::Error for MatchError {}

pub use super::budget::merged_pairs;

/// Matches A's units to B's by maximising the total `similarity` (A units as rows) and merges
/// the best `merged_pairs(n, ratio)` pairs.
pub fn match_group(
    similarity: MatRef<'_, f64>,
    ratio: f64,
    params: &AuctionParams,
) -> Result<GroupMatch, MatchError> {
    let (rows, cols) = similarity.shape();
    if rows != cols {
        return Err(MatchError::NotSquare { rows, cols });
    }
    if !(0.0..=1.0).contains(&ratio) {
        return Err(MatchError::BadRatio { ratio });
    }
    let n = rows;
    let mut perm = vec![0usize; n];
    let mut scratch = vec![0.0f64; auction_scratch_len(n)];
    let k = merged_pairs(n, ratio);
    let mut order = vec![0usize; n];
    let info =
        assign_pairs(similarity, k, params, &mut perm, &mut order, &mut scratch).map_err(|e| {
            match e {
                PairsError::Auction(e) => MatchError::Auction(e),
                PairsError::Select(e) => MatchError::Select(e),
            }
        })?;
    let layout = GroupLayout::new(&perm, &order[..k]).map_err(MatchError::Layout)?;
    Ok(GroupMatch {
        layout,
        auction: info.auction,
        total_score: info.total_score,
        mean_merged_score: info.mean_merged_score,
    })
}
