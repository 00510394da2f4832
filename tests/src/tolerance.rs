//! The one table of tolerances used by the tests, each with the reason for its value.
//!
//! Sections belong to the algorithm families; every constant says why it has its value.

// --- Matrix products (GEMM, SYRK) and the Gram accumulator ---

/// Per-term relative error of an f32 dot product of length `k`, to be multiplied by `k + 2` and
/// by `sum |a_p b_p|` (plus `|beta c|`). The classic bound is `gamma_k = k u / (1 - k u)` with
/// unit roundoff `u = 2^-24` for *one* computation; the blocked kernel and the scalar twin each
/// carry it, in different summation orders, so their difference is bounded by `2 gamma_k`, i.e.
/// `k * 2^-23`. The `+ 2` covers the final `alpha *` and `+ beta c` roundings.
pub const F32_DOT_PER_TERM: f64 = f32::EPSILON as f64;

/// Relative Frobenius error allowed for the covariance of 1,000,000 samples of dimension 64
/// around a mean of 10, against an f64 sum: the acceptance figure of the Gram accumulator
/// (centring on a shift removes the factor 100 of cancellation; f32 blocks of 4096 samples then
/// leave about `sqrt(4096) * 2^-24 / sqrt(blocks)`, well below it).
pub const COVARIANCE_REL_FROBENIUS: f64 = 1e-6;

/// Relative error of uncentred Gram and cross moments read from the accumulator against an
/// f64 sum, for unit-scale data and blocks of at most a few thousand samples: f32 block
/// products carry `~ sqrt(block) * 2^-24` relative error per entry of the centred sums, and the
/// re-centring in f64 adds nothing measurable. `1e-5` leaves a margin of ~10 over `64 * 6e-8`.
pub const GRAM_MOMENTS_REL: f64 = 1e-5;

/// Bound, as a multiple of the entries' scale, on how far an accumulator combined from shards
/// with different shifts may drift from one accumulator over the same samples: the move between
/// shifts is exact algebra done in f64 (`~1e-16` relative), and the two runs' f32 block sums
/// differ by the block rounding of `GRAM_MOMENTS_REL`.
pub const GRAM_COMBINE_REL: f64 = 1e-5;

/// Relative error of similarities computed from streamed f32-block moments against a direct
/// f64 computation over the activations: the moments carry `GRAM_MOMENTS_REL`; neg-l2 takes a
/// square root (halving relative error) and correlation divides by two such quantities, so
/// 1e-4 of the entry scale leaves a margin for units with small variance.
pub const SIMILARITY_REL: f64 = 1e-4;

// --- Auction ---

/// Relative tolerance of the auction's total on real scores, as a fraction of
/// `n * (max s - min s)`: the documented default contract (`AuctionParams::rel_tol`).
pub const AUCTION_REL_TOL: f64 = 1e-9;

/// Extra slack, relative to `n * max|s|`, for comparing two f64 totals of `n <= 300` terms
/// summed in different orders or by different solvers: each sum carries about `n * 2^-53` of
/// its terms' magnitude; `1e-12` covers that with a margin of ~30 at n = 300.
pub const AUCTION_SUM_REL: f64 = 1e-12;
