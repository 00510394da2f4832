//! Forward auction with epsilon scaling (Bertsekas), Gauss-Seidel bidding, warm starts between
//! phases and a certified stopping rule. See the [module docs](super) for the contract.
//!
//! # Algorithm
//!
//! Rows are bidders, columns are objects with prices `p_j` (kept negated, `q_j = -p_j`, so the
//! scan is one add per element). Values are `w_ij = K * s_ij - p_j`, with `K = n + 1` for
//! integer scores (so a final `epsilon = 1` is below the `1/n` gap that makes the auction
//! exact) and `K = 1` otherwise. A rectangular `k x n` problem is padded to `n x n` with
//! constant rows (value `K * min s`), which never changes which real assignment is optimal.
//!
//! A phase with step `eps` runs until every row holds a column. A free row scans its values
//! ([`best_two`](super::scan::best_two): best `w1` at column `j1`, second best `w2`), raises `p_j1` by
//! `gamma = max(eps, w1 - w2)` and takes `j1`, evicting the previous holder, which goes to the
//! back of a FIFO queue (Gauss-Seidel: prices change after every bid). Any increment in
//! `[eps, w1 - w2 + eps]` keeps the bidder within `eps` of its best (eps-complementary
//! slackness) and guarantees termination. The increment used here, `max(eps, w1 - w2)` (the
//! Jonker-Volgenant "augmenting row reduction" step, floored at `eps`), is `eps` below the
//! classic `w1 - w2 + eps` whenever the best is unique by at least `eps`, and then leaves the
//! bidder *exactly* at its best.
//!
//! Each row records `b_i = w2 - (w1 - gamma) >= 0` when it wins a column. Prices never
//! decrease, so `b_i` stays an upper bound on how far row `i` is from its best, and
//! `sum_i b_i` bounds the duality gap of (prices, assignment): it is the certified
//! [`AuctionInfo::optimality_bound`]. The auction stops after a phase whose bound is within the
//! tolerance (often the first phases on structured matrices), or after the phase at the final
//! epsilon, where the bound is at most `n * eps` (Bertsekas' theorem).
//!
//! Between phases, prices are kept (warm start) and so are the assignments of rows with
//! `b_i <= eps'` for the next step `eps'`: they already satisfy eps'-complementary slackness.
//! The other rows are rescanned once: kept if their true slack is within `eps'`, else freed.
//!
//! Two more devices cut the cost of the scans, which is nearly all of the run time:
//!
//! - *Initial prices* are the column maxima (computed in the same pass that checks the scores
//!   are finite): the auction analogue of the Jonker-Volgenant column reduction. It absorbs
//!   column offsets (in neg-l2 similarities, units with large activation norms are far from
//!   everything) before the first bid; any initial prices are valid for the auction.
//! - *Candidate lists*: a full row scan also returns, per SIMD lane, the two best columns and
//!   the third-best value; the row keeps those 16 columns (plus the tail columns the lanes do
//!   not cover) with their scores and `bound = max` of the lanes' third values, an upper bound
//!   on the value of every other column. Prices only rise, so the bound stays valid: while the
//!   second best among the candidates is still `>= bound`, the best two among the candidates
//!   are the row's best two, found from ~23 prices without touching the matrix. Otherwise the
//!   row is scanned in full and its list refreshed. Late phases, where most bids happen, are
//!   answered mostly from the lists.

use super::error::AuctionError;
use super::scan::{
    BestTwo, CANDIDATE_SLOTS, Score, best_two_cached, best_two_candidates, best_two_const,
};
use crate::linalg::MatRef;
use wide::f64x4;

/// Tuning knobs of [`auction`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AuctionParams {
    /// Tolerance on the total score for real (non-integer) scores, relative to
    /// `n * (max s - min s)`: the result is within `rel_tol * n * (max s - min s)` of the
    /// optimum. Must be finite and positive; values below `2^-40` are raised to it (f64 prices
    /// cannot resolve finer steps), values above 1 lowered to 1 (every assignment is within
    /// `n` ranges of the optimum; a coarser epsilon only grows the prices). Integer scores are
    /// always solved exactly. Default `1e-9`.
    pub rel_tol: f64,
    /// First epsilon, as a fraction of the score range `max s - min s`. Must be finite and
    /// positive; values outside `[1e-5, 1]` act as the nearer bound (a smaller first epsilon
    /// makes the first phase a price war of up to about `1 / initial_epsilon` bids per row; a
    /// larger one is no coarser a start than the range). Default `0.003`
    /// (measured on uniform, planted and activation-similarity matrices of n = 512 to 2048:
    /// about the fewest full row scans in total; see BENCHMARKS.md).
    pub initial_epsilon: f64,
    /// Factor by which epsilon shrinks between phases. Must be finite and `> 1`; values outside
    /// `[1.1, 1000]` act as the nearer bound (so a solve takes at most about 300 phases, and a
    /// phase after the first at most about `n * scaling` bids per row). Default `5`.
    pub scaling: f64,
}

impl Default for AuctionParams {
    fn default() -> Self {
        Self {
            rel_tol: 1e-9,
            initial_epsilon: 0.003,
            scaling: 5.0,
        }
    }
}

/// What an [`auction`] did, for audit. Score units are those of the input.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct AuctionInfo {
    /// Epsilon-scaling phases run.
    pub phases: u32,
    /// Bids made (one row scan and one price rise each).
    pub bids: u64,
    /// Rows rescanned at phase starts to check whether their assignment can be kept.
    pub rescans: u64,
    /// Scans of a whole row (bids and rescans not answered by the row's candidate list).
    pub full_scans: u64,
    /// Epsilon of the last phase.
    pub epsilon: f64,
    /// Bertsekas' a-priori optimality bound `n * epsilon` for the last phase's epsilon.
    pub epsilon_bound: f64,
    /// Certified bound on `optimum - total` of the returned assignment, from the final prices
    /// and the rows' slack bounds; at most [`epsilon_bound`](Self::epsilon_bound), often far
    /// below it. Below 1 for integer scores, which makes the result optimal.
    pub optimality_bound: f64,
    /// Whether the scores were solved as integers (then the result is optimal).
    pub integer: bool,
}

/// Scratch elements (f64) [`auction`] needs for a problem with `n` columns (any rows `<= n`):
/// `52 n` (prices, slack bounds, owners, assignments, the queue, and per row a candidate list
/// of 23 columns with their scores and a bound).
pub fn auction_scratch_len(n: usize) -> usize {
    (5 + CACHE) * n
}

/// Per-row cache: the candidate list of the last full scan (columns and scaled scores), then
/// the bound on all other columns.
const CACHE: usize = 2 * CANDIDATE_SLOTS + 1;

/// Largest `K * max|s|` for integer mode: prices stay below about twice that, far from 2^53,
/// so every price, value and bound is an exactly represented integer.
const INTEGER_LIMIT: f64 = (1u64 << 40) as f64;
/// Finest epsilon relative to the largest score magnitude (keeps `p + eps > p` in f64).
const EPS_FLOOR: f64 = 1.0 / (1u64 << 40) as f64;
/// Marks "no row" / "no column" in the index arrays (stored as f64 in the scratch).
const NONE: f64 = -1.0;
/// Real scores of larger magnitude are solved scaled by [`HUGE_SCALE`]: `2^960`, so that scaled
/// scores stay below `2^985` and the range, prices (which stay within about twice the range
/// plus `n` epsilons), values and sums of up to `2^38` slacks are finite.
const HUGE_SCORE: f64 = f64::from_bits((1023 + 960) << 52);
/// `2^-40`: exact for every score above the smallest normal numbers times `2^40`; below that
/// the scaling rounds, far under the final epsilon (at least `2^-40` times the magnitude).
const HUGE_SCALE: f64 = 1.0 / (1u64 << 40) as f64;
/// Real scores of smaller magnitude (`2^-960`) are solved scaled by [`TINY_SCALE`]: otherwise
/// `2^-40` of the magnitude, the floor of the final epsilon, is below the subnormal spacing
/// (or rounds to 0), so bids may not raise any price and the auction never ends.
const TINY_SCORE: f64 = f64::from_bits((1023 - 960) << 52);
/// `2^100`: takes even the smallest subnormal (`2^-1074`) to `2^-974`, whose `2^-40` is a
/// normal number; exact (scaled scores stay below `2^-860`).
const TINY_SCALE: f64 = f64::from_bits((1023 + 100) << 52);
/// The speed knobs are clamped to where the run stays polynomial with small constants (they do
/// not change the result's guarantee). First epsilon, as a fraction of the range
/// ([`AuctionParams::initial_epsilon`]): at least `1e-5`, so that the first phase, a price war
/// of up to about `1 / initial_epsilon` bids per row, stays short; at most 1 (no coarser a
/// start than the whole range, and no overflow).
const INITIAL_EPSILON: (f64, f64) = (1e-5, 1.0);
/// [`AuctionParams::scaling`]: at least 1.1, since epsilon falls from at most the range to at
/// least `2^-40` of it, so at most `40 ln 2 / ln 1.1 ~ 291` phases (a factor barely above 1
/// meant billions); at most 1000, since a phase after the first takes up to about `n *
/// scaling` bids per row.
const SCALING: (f64, f64) = (1.1, 1000.0);

struct Survey {
    lo: f64,
    hi: f64,
    integral: bool,
}

/// One pass over the scores: rejects non-finite values (first position in row-major order),
/// finds the extremes and whether all scores are integers, and writes the column maxima.
fn survey<T: Score>(scores: MatRef<'_, T>, col_max: &mut [f64]) -> Result<Survey, AuctionError> {
    let (mut lo, mut hi, mut integral) = (f64::INFINITY, f64::NEG_INFINITY, true);
    col_max.fill(f64::NEG_INFINITY);
    for i in 0..scores.rows() {
        let row = scores
            .row(i)
            .expect("contiguous rows checked by the caller");
        let Some((rlo, rhi)) = survey_row(row, col_max) else {
            let col = row
                .iter()
                .position(|x| !x.to_f64().is_finite())
                .unwrap_or(0);
            return Err(AuctionError::NonFinite {
                row: i,
                col,
                value: row[col].to_f64(),
            });
        };
        lo = lo.min(rlo);
        hi = hi.max(rhi);
        // `as i64` saturates, so values beyond 2^63 compare unequal: not integral.
        integral = integral
            && row
                .iter()
                .all(|&x| (x.to_f64() as i64) as f64 == x.to_f64());
    }
    Ok(Survey { lo, hi, integral })
}

/// Folds one row into the column maxima and returns its (min, max), or `None` if it holds a
/// non-finite value (then the maxima are garbage, which does not matter: the solve fails).
fn survey_row<T: Score>(row: &[T], col_max: &mut [f64]) -> Option<(f64, f64)> {
    let mut lo4 = f64x4::INFINITY;
    let mut hi4 = f64x4::NEG_INFINITY;
    let mut bad4 = f64x4::ZERO;
    let r4 = row.chunks_exact(4);
    let tail = r4.remainder();
    let mut m4 = col_max.chunks_exact_mut(4);
    for (r, m) in r4.zip(&mut m4) {
        let v = T::load4(r);
        let mv = f64x4::from(<[f64; 4]>::try_from(&*m).expect("4 lanes"));
        m.copy_from_slice(&mv.fast_max(v).to_array());
        lo4 = lo4.fast_min(v);
        hi4 = hi4.fast_max(v);
        bad4 |= !v.is_finite();
    }
    if bad4.any() {
        return None;
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (l, h) in lo4.to_array().into_iter().zip(hi4.to_array()) {
        lo = lo.min(l);
        hi = hi.max(h);
    }
    for (&x, m) in tail.iter().zip(m4.into_remainder()) {
        let v = x.to_f64();
        if !v.is_finite() {
            return None;
        }
        *m = m.max(v);
        lo = lo.min(v);
        hi = hi.max(v);
    }
    Some((lo, hi))
}

/// Maximum-weight assignment of the rows of `scores` (`k x n`, `k <= n`) to distinct columns.
///
/// On success `perm[i]` is the column of row `i`. `scratch` must hold at least
/// [`auction_scratch_len`]`(n)` elements; its contents on entry do not matter. The score rows
/// must be contiguous (`col_stride == 1`, any row stride). The result is deterministic: the
/// same input and parameters give the same output on every run and target with the same
/// float semantics.
///
/// Integer-valued scores (with `(n + 1) * max|s| <= 2^40`) give an optimal assignment; other
/// scores give a total within `params.rel_tol * n * (max s - min s)` of the optimum (up to the
/// f64 rounding of the price updates). [`AuctionInfo::optimality_bound`] is the certified gap.
pub fn auction<T: Score>(
    scores: MatRef<'_, T>,
    params: &AuctionParams,
    perm: &mut [usize],
    scratch: &mut [f64],
) -> Result<AuctionInfo, AuctionError> {
    solve(scores, params, None, perm, scratch)
}

/// [`auction`] started from the caller's column prices, which it replaces by the final ones.
///
/// `prices` (one per column, score units, finite) seed the auction instead of the column
/// maxima: the final prices of an earlier solve of a similar matrix (the next sweep of weight
/// matching, the same group on more data) let most rows bid straight for their final columns.
/// Any finite prices are valid; the contract and the result's guarantees are those of
/// [`auction`]. Prices are shifted so that the lowest is 0 and clipped to the score range
/// above it (no column is worth more than that), and rounded to the `1 / (n + 1)` grid for
/// integer scores.
///
/// On success `prices` holds the final prices `p`, shifted so that the lowest is 0 (and at most
/// `f64::MAX`, which only binds when the scores' range exceeds it): with
/// `u_i = max_j (s_ij - p_j)`, the pair `(u, p)` is a feasible dual of the (padded, square)
/// problem whose objective exceeds the returned total by at most
/// [`AuctionInfo::optimality_bound`]. On error `prices` is unchanged.
pub fn auction_warm<T: Score>(
    scores: MatRef<'_, T>,
    params: &AuctionParams,
    prices: &mut [f64],
    perm: &mut [usize],
    scratch: &mut [f64],
) -> Result<AuctionInfo, AuctionError> {
    let n = scores.cols();
    if prices.len() != n {
        return Err(AuctionError::PriceLength {
            cols: n,
            len: prices.len(),
        });
    }
    if let Some(col) = prices.iter().position(|p| !p.is_finite()) {
        return Err(AuctionError::NonFinitePrice {
            col,
            value: prices[col],
        });
    }
    solve(scores, params, Some(prices), perm, scratch)
}

fn solve<T: Score>(
    scores: MatRef<'_, T>,
    params: &AuctionParams,
    mut warm: Option<&mut [f64]>,
    perm: &mut [usize],
    scratch: &mut [f64],
) -> Result<AuctionInfo, AuctionError> {
    check_params(params)?;
    let (k, n) = scores.shape();
    if k > n {
        return Err(AuctionError::TooManyRows { rows: k, cols: n });
    }
    if perm.len() != k {
        return Err(AuctionError::PermLength {
            rows: k,
            len: perm.len(),
        });
    }
    if k == 0 {
        if let Some(w) = warm {
            w.fill(0.0);
        }
        return Ok(AuctionInfo {
            integer: true,
            ..AuctionInfo::default()
        });
    }
    if scores.col_stride() != 1 && n > 1 {
        return Err(AuctionError::StridedColumns {
            col_stride: scores.col_stride(),
        });
    }
    let needed = auction_scratch_len(n);
    if scratch.len() < needed {
        return Err(AuctionError::ScratchTooSmall {
            needed,
            provided: scratch.len(),
        });
    }
    let Survey { lo, hi, integral } = survey(scores, &mut scratch[..n])?;
    let range = hi - lo;
    if range == 0.0 || n == 1 {
        // Every assignment has the same total; zero prices prove it.
        for (i, p) in perm.iter_mut().enumerate() {
            *p = i;
        }
        if let Some(w) = warm.as_deref_mut() {
            w.fill(0.0);
        }
        return Ok(AuctionInfo {
            integer: integral,
            ..AuctionInfo::default()
        });
    }
    let magnitude = lo.abs().max(hi.abs());
    let big_k = (n + 1) as f64;
    let integer = integral && big_k * magnitude <= INTEGER_LIMIT;
    let initial = params
        .initial_epsilon
        .clamp(INITIAL_EPSILON.0, INITIAL_EPSILON.1);
    let setup = if integer {
        Setup {
            k: big_k,
            eps0: libm::floor(initial * big_k * range).max(1.0),
            eps_final: 1.0,
            gap_tol: n as f64,
            integer,
        }
    } else {
        // Scores near the f64 limits are scaled by a power of two (exact): huge ones down, so
        // that the range, values `k s - p`, prices and sums of `n` slacks stay finite; tiny ones
        // (subnormal) up, so that the final epsilon is a positive step that moves prices.
        let k = if magnitude > HUGE_SCORE {
            HUGE_SCALE
        } else if magnitude < TINY_SCORE {
            TINY_SCALE
        } else {
            1.0
        };
        let (range, magnitude) = (hi * k - lo * k, magnitude * k);
        // A tolerance above the range (`rel_tol > 1`) would push prices beyond what the
        // huge-score scaling keeps finite.
        let eps_final = (params.rel_tol.min(1.0) * range).max(EPS_FLOOR * magnitude.max(range));
        Setup {
            k,
            eps0: (initial * range).max(eps_final),
            eps_final,
            gap_tol: n as f64 * eps_final,
            integer,
        }
    };
    let q0 = &mut scratch[..n];
    match warm.as_deref() {
        // Initial prices: the column maxima (left in place by the survey), so every row starts
        // at value <= 0 with 0 at its columns' best rows, the auction analogue of the
        // Jonker-Volgenant column reduction; it absorbs column offsets (units with large norms
        // in neg-l2 similarities) before the first bid.
        None => q0.iter_mut().for_each(|q| *q *= -setup.k),
        // The caller's prices, shifted to start at 0, clipped to the range and, for integer
        // scores, rounded to integers in scaled units (keeping all arithmetic exact).
        Some(w) => {
            let low = w.iter().copied().fold(f64::INFINITY, f64::min);
            let range_k = hi * setup.k - lo * setup.k;
            for (q, &p) in q0.iter_mut().zip(w) {
                let scaled = ((p - low) * setup.k).clamp(0.0, range_k);
                *q = -if setup.integer {
                    libm::round(scaled)
                } else {
                    scaled
                };
            }
        }
    }
    let mut state = State::new(scores, setup, lo, &mut scratch[..needed]);
    let (phases, eps, gap) = state.run(params.scaling.clamp(SCALING.0, SCALING.1));
    if let Some(w) = warm {
        let top = state
            .neg_prices
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        // Finite even when the range itself is not (scores spanning the whole f64 range).
        for (p, &q) in w.iter_mut().zip(state.neg_prices.iter()) {
            *p = ((top - q) / setup.k).min(f64::MAX);
        }
    }
    for (i, p) in perm.iter_mut().enumerate() {
        *p = state.assigned[i] as usize;
    }
    Ok(AuctionInfo {
        phases,
        bids: state.bids,
        rescans: state.rescans,
        full_scans: state.full_scans,
        epsilon: eps / setup.k,
        epsilon_bound: n as f64 * eps / setup.k,
        optimality_bound: gap / setup.k,
        integer,
    })
}

fn check_params(p: &AuctionParams) -> Result<(), AuctionError> {
    let bad = |name, value: f64| Err(AuctionError::InvalidParam { name, value });
    if !(p.rel_tol.is_finite() && p.rel_tol > 0.0) {
        return bad("rel_tol", p.rel_tol);
    }
    if !(p.initial_epsilon.is_finite() && p.initial_epsilon > 0.0) {
        return bad("initial_epsilon", p.initial_epsilon);
    }
    if !(p.scaling.is_finite() && p.scaling > 1.0) {
        return bad("scaling", p.scaling);
    }
    Ok(())
}

/// Scaled units of one run: values are `k * s`, steps `eps`, stop when the gap is `<= gap_tol`.
#[derive(Clone, Copy)]
struct Setup {
    k: f64,
    eps0: f64,
    eps_final: f64,
    gap_tol: f64,
    integer: bool,
}

struct State<'a, 's, T> {
    scores: MatRef<'s, T>,
    setup: Setup,
    /// Value of every padding row (`k * min s`).
    pad: f64,
    /// Negated prices, one per column.
    neg_prices: &'a mut [f64],
    /// Per-row bound on the distance from its best (valid while assigned).
    slack: &'a mut [f64],
    /// Row holding each column, or `NONE`.
    owner: &'a mut [f64],
    /// Column held by each row, or `NONE`.
    assigned: &'a mut [f64],
    /// FIFO ring of free rows.
    queue: &'a mut [f64],
    /// Per real row: the candidate list (columns, scaled scores), then the bound on the rest.
    cache: &'a mut [f64],
    head: usize,
    len: usize,
    bids: u64,
    rescans: u64,
    full_scans: u64,
}

impl<'a, 's, T: Score> State<'a, 's, T> {
    /// `scratch[..n]` must hold the initial negated prices (scaled units).
    fn new(scores: MatRef<'s, T>, setup: Setup, lo: f64, scratch: &'a mut [f64]) -> Self {
        let n = scores.cols();
        let (neg_prices, rest) = scratch.split_at_mut(n);
        let (slack, rest) = rest.split_at_mut(n);
        let (owner, rest) = rest.split_at_mut(n);
        let (assigned, rest) = rest.split_at_mut(n);
        let (queue, cache) = rest.split_at_mut(n);
        // An infinite bound sends every row's first scan to the whole row. The candidate
        // columns are cleared too: the cached scan reads them before it looks at the bound,
        // and the scratch may hold anything on entry (garbage, or columns beyond `n` left by a
        // wider problem would be read out of bounds).
        for c in cache.chunks_exact_mut(CACHE) {
            c[..CANDIDATE_SLOTS].fill(NONE);
            c[2 * CANDIDATE_SLOTS] = f64::INFINITY;
        }
        slack.fill(0.0);
        owner.fill(NONE);
        assigned.fill(NONE);
        Self {
            scores,
            setup,
            pad: setup.k * lo,
            neg_prices,
            slack,
            owner,
            assigned,
            queue,
            cache,
            head: 0,
            len: 0,
            bids: 0,
            rescans: 0,
            full_scans: 0,
        }
    }

    /// Best two values of row `i`: from its candidate list when that is conclusive, else by
    /// a full scan that refreshes the list.
    #[inline]
    fn scan(&mut self, i: usize) -> BestTwo {
        if i >= self.scores.rows() {
            self.full_scans += 1;
            return best_two_const(self.pad, self.neg_prices);
        }
        let row = self.scores.row(i).expect("contiguous rows");
        let k = self.setup.k;
        let cache = &mut self.cache[i * CACHE..(i + 1) * CACHE];
        let (cands, bound) = cache.split_at_mut(2 * CANDIDATE_SLOTS);
        if let Some(bt) = best_two_cached(self.neg_prices, cands, bound[0]) {
            return bt;
        }
        self.full_scans += 1;
        let (bt, b) = best_two_candidates(row, k, self.neg_prices, cands);
        bound[0] = b;
        bt
    }

    /// `k * s_ij - p_j`.
    #[inline]
    fn value(&self, i: usize, j: usize) -> f64 {
        let s = if i < self.scores.rows() {
            self.scores.row(i).expect("contiguous rows")[j].to_f64() * self.setup.k
        } else {
            self.pad
        };
        s + self.neg_prices[j]
    }

    #[inline]
    fn push(&mut self, i: usize) {
        let n = self.queue.len();
        let tail = (self.head + self.len) % n;
        self.queue[tail] = i as f64;
        self.len += 1;
    }

    #[inline]
    fn pop(&mut self) -> usize {
        let i = self.queue[self.head] as usize;
        self.head = (self.head + 1) % self.queue.len();
        self.len -= 1;
        i
    }

    /// Runs the phases; returns (phases, last epsilon, certified gap), scaled units.
    fn run(&mut self, scaling: f64) -> (u32, f64, f64) {
        let n = self.neg_prices.len();
        let mut eps = self.setup.eps0;
        let mut phases = 0u32;
        loop {
            phases += 1;
            self.start_phase(eps);
            while self.len > 0 {
                let i = self.pop();
                self.bid(i, eps);
            }
            let gap: f64 = self.slack.iter().sum();
            if gap <= self.setup.gap_tol || eps <= self.setup.eps_final {
                debug_assert!(gap <= n as f64 * eps * (1.0 + 1e-9));
                return (phases, eps, gap);
            }
            eps = if self.setup.integer {
                libm::floor(eps / scaling)
            } else {
                eps / scaling
            }
            .max(self.setup.eps_final);
        }
    }

    /// Queues the free rows; keeps assigned rows whose slack is within `eps`.
    fn start_phase(&mut self, eps: f64) {
        for i in 0..self.neg_prices.len() {
            let a = self.assigned[i];
            if a == NONE {
                self.push(i);
            } else if self.slack[i] > eps {
                self.rescans += 1;
                let j = a as usize;
                let bt = self.scan(i);
                let other = if bt.col == j { bt.second } else { bt.best };
                let slack = other - self.value(i, j);
                if slack <= eps {
                    self.slack[i] = slack.max(0.0);
                } else {
                    self.owner[j] = NONE;
                    self.assigned[i] = NONE;
                    self.push(i);
                }
            }
        }
    }

    #[inline]
    fn bid(&mut self, i: usize, eps: f64) {
        self.bids += 1;
        let bt = self.scan(i);
        let diff = bt.best - bt.second;
        let gamma = if diff > eps { diff } else { eps };
        let j = bt.col;
        self.neg_prices[j] -= gamma;
        self.slack[i] = gamma - diff;
        let prev = self.owner[j];
        self.owner[j] = i as f64;
        self.assigned[i] = j as f64;
        if prev != NONE {
            let prev = prev as usize;
            self.assigned[prev] = NONE;
            self.push(prev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Scalar twin of `survey_row`.
    fn survey_row_reference(row: &[f64], col_max: &mut [f64]) -> Option<(f64, f64)> {
        if row.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (&v, m) in row.iter().zip(col_max.iter_mut()) {
            *m = m.max(v);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        Some((lo, hi))
    }

    /// Every edge value in every lane position (vector body and scalar tail), for rows of 1 to
    /// 13 columns, against the scalar twin: non-finite values are caught wherever they sit, and
    /// extremes and column maxima agree.
    #[test]
    fn survey_row_lane_by_lane() {
        let edges = [
            0.0,
            -0.0,
            5e-324,
            -5e-324,
            f64::MIN_POSITIVE,
            1.5,
            -2.5,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        // Under Miri (`scripts/miri.sh`): rows of 1, 5 and 13 (no step, a step and a tail),
        // the planted value first and last.
        let lens: &[usize] = if cfg!(miri) {
            &[1, 5, 13]
        } else {
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
        };
        for &len in lens {
            for &x in &edges {
                let positions: std::vec::Vec<usize> = if cfg!(miri) {
                    std::vec![0, len - 1]
                } else {
                    (0..len).collect()
                };
                for pos in positions {
                    let mut row = vec![0.25; len];
                    row[pos] = x;
                    let start: Vec<f64> = (0..len).map(|j| j as f64 * 0.1 - 0.3).collect();
                    let (mut m1, mut m2) = (start.clone(), start.clone());
                    let got = survey_row(&row, &mut m1);
                    let want = survey_row_reference(&row, &mut m2);
                    assert_eq!(got, want, "len {len} x {x} at {pos}");
                    if got.is_some() {
                        assert_eq!(m1, m2, "column maxima, len {len} x {x} at {pos}");
                    }
                }
            }
        }
    }
}
