//! Linear assignment for matching units: the auction matcher and partial (top-k) selection.
//!
//! PLeaS solves one maximum-weight assignment per permutation group (docs/ALGORITHM.md section 2):
//! given an `n x n` similarity `S` between A's units (rows) and B's units (columns), find the
//! permutation `P` maximising `sum_i S[i, P(i)]`; then keep the `k` best pairs (section 3).
//!
//! - [`auction`]: forward auction with epsilon scaling, Gauss-Seidel bidding, warm starts
//!   between phases and a certified stopping rule, over a dense `k x n` score matrix
//!   (`k <= n`, f32 or f64, maximise). Caller scratch sized by [`auction_scratch_len`]; no
//!   allocation; deterministic.
//! - [`auction_warm`]: the same, started from given column prices (e.g. the final prices of a
//!   previous solve of a similar matrix), returning the final prices: a dual certificate.
//! - [`select_top`]: the `k` best pairs of an assignment, with deterministic tie-breaking.
//! - [`scan`]: the vectorised best/second-best bidding scan and its scalar twin.
//!
//! # Exactness contract
//!
//! Let `n` be the number of columns, `range = max S - min S`, and `opt` the optimal total.
//!
//! - **Integer scores** (every score an integer and `(n + 1) * max|S| <= 2^40`): the returned
//!   assignment is optimal. The auction runs on `(n + 1) * S` in f64, where every price, bid
//!   and bound is an exactly represented integer, down to `epsilon = 1` if needed; a final
//!   duality gap below `n + 1` in those units (below 1 in score units) proves optimality, since
//!   two totals that differ differ by at least 1.
//! - **Real scores**: the total is at least `opt - rel_tol * n * range`, with
//!   [`AuctionParams::rel_tol`] set by the caller (default `1e-9`, floored at `2^-40`; the
//!   guarantee is up to f64 rounding of the price updates, a relative `~1e-16` per update). So
//!   the result is exactly optimal whenever the optimal assignment beats every other by more
//!   than that.
//! - Either way [`AuctionInfo::optimality_bound`] is a certified bound on `opt - total`,
//!   computed from the final prices (at most `n * epsilon` for the last phase's epsilon, and
//!   often 0 on matrices with a clear structure).
//! - Any finite scores work, from subnormal to the largest f64 (near those limits the auction
//!   runs on the scores scaled by a power of two, `2^100` or `2^-40`).
//! - NaN or infinite scores are rejected with [`AuctionError::NonFinite`] naming the first bad
//!   position; `n = 0` and `n = 1` work; constant and heavily tied matrices terminate (every
//!   bid raises a price by at least epsilon).
//!
//! A `k x n` problem with `k < n` is solved as the `n x n` problem padded with constant rows,
//! which has the same optimal assignments of the real rows.
//!
//! # Algorithm (details in the source of `assign/auction.rs`)
//!
//! Forward auction, Gauss-Seidel (one bid at a time, FIFO queue of free rows), epsilon scaling
//! by [`AuctionParams::scaling`] from [`AuctionParams::initial_epsilon`] times the range:
//!
//! - bid increment `max(eps, w1 - w2)`: a valid auction step (within `[eps, w1 - w2 + eps]`)
//!   that leaves the bidder exactly at its best when its best is unique by `eps`;
//! - every row keeps a bound on its distance from its best, and their sum bounds the duality
//!   gap: the run stops at the first phase where that certified gap meets the tolerance;
//! - between phases prices are kept, and so are the assignments that still satisfy the next
//!   phase's eps-complementary slackness (checked from the bound, else by one rescan);
//! - initial prices are the column maxima (the analogue of Jonker-Volgenant's column
//!   reduction), found in the pass that validates the scores;
//! - each full row scan ([`scan::best_two_candidates`], `wide::f64x4`, 8 columns per step)
//!   leaves a list of ~23 candidate columns and a bound on all others; later bids of that row
//!   are answered from the list (prices only rise, so the bound stays valid) until it is
//!   inconclusive.
//!
//! # Example
//!
//! ```
//! use pleas_core::assign::{AuctionParams, auction, auction_scratch_len, select_top};
//! use pleas_core::linalg::MatRef;
//!
//! // Similarity of A's units (rows) to B's units (columns).
//! let s = [0.9f32, 0.1, 0.3, /**/ 0.2, 0.8, 0.1, /**/ 0.4, 0.7, 0.6];
//! let m = MatRef::new(&s, 3, 3)?;
//! let mut perm = [0usize; 3];
//! let mut scratch = vec![0.0f64; auction_scratch_len(3)];
//! let info = auction(m, &AuctionParams::default(), &mut perm, &mut scratch)?;
//! assert_eq!(perm, [0, 1, 2]);
//! assert!(info.optimality_bound < 1e-9);
//!
//! // Merge the 2 best pairs: rows 0 (0.9) and 1 (0.8); row 2 stays separate.
//! let mut rows = [0usize; 3];
//! select_top(m, &perm, 2, &mut rows)?;
//! assert_eq!(rows, [0, 1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auction;
mod error;
pub mod scan;
mod select;

pub use auction::{AuctionInfo, AuctionParams, auction, auction_scratch_len, auction_warm};
pub use error::{AuctionError, SelectError};
pub use scan::Score;
pub use select::select_top;
