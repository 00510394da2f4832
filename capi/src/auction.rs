//! Maximum-score assignment (the auction algorithm) and top-k pair selection: how PLeaS
//! matches the units of two models.
//!
//! ```c
//! size_t len;
//! pleas_auction_scratch_size_f32(rows, cols, &len);         /* doubles */
//! pleas_auction_f32(scores, rows, cols, NULL, perm, &info, scratch, len);
//! pleas_select_top_f32(scores, rows, cols, perm, k, order); /* the k best pairs first */
//! ```

use pleas_core::assign::{self, AuctionInfo, AuctionParams, Score};
use pleas_core::linalg::MatRef;

use crate::check::{self, disjoint, input, output, product};
use crate::pleas_status::{self, PLEAS_ERROR_LENGTH, PLEAS_ERROR_SCRATCH};
use crate::status::run;

/// Knobs of the auction. Fill with `pleas_auction_params_init()`, then change what you need;
/// pass NULL to the solvers for the defaults.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct pleas_auction_params {
    /// Tolerance on the total score for non-integer scores, relative to
    /// `cols * (max score - min score)`; finite and positive (values below 2^-40 are raised to
    /// it, values above 1 lowered to 1). Integer scores are always solved exactly. Default
    /// 1e-9.
    pub rel_tol: f64,
    /// First epsilon as a fraction of the score range; finite and positive (values outside
    /// [1e-5, 1] act as the nearer bound). Default 0.003.
    pub initial_epsilon: f64,
    /// Factor by which epsilon shrinks between phases; finite and above 1 (values outside
    /// [1.1, 1000] act as the nearer bound). Default 5.
    pub scaling: f64,
}

impl From<AuctionParams> for pleas_auction_params {
    fn from(p: AuctionParams) -> Self {
        Self {
            rel_tol: p.rel_tol,
            initial_epsilon: p.initial_epsilon,
            scaling: p.scaling,
        }
    }
}

impl From<pleas_auction_params> for AuctionParams {
    fn from(p: pleas_auction_params) -> Self {
        let mut q = AuctionParams::default();
        q.rel_tol = p.rel_tol;
        q.initial_epsilon = p.initial_epsilon;
        q.scaling = p.scaling;
        q
    }
}

/// What an auction did, for audit. Score units are those of the input.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct pleas_auction_info {
    /// Bids made.
    pub bids: u64,
    /// Full scans of a score row.
    pub full_scans: u64,
    /// Epsilon of the last phase.
    pub epsilon: f64,
    /// Certified bound on `optimum - total` of the returned assignment.
    pub optimality_bound: f64,
    /// Epsilon-scaling phases run.
    pub phases: u32,
    /// 1 if the scores were solved as integers (the result is then optimal), else 0.
    pub integer: u32,
}

impl From<AuctionInfo> for pleas_auction_info {
    fn from(i: AuctionInfo) -> Self {
        Self {
            bids: i.bids,
            full_scans: i.full_scans,
            epsilon: i.epsilon,
            optimality_bound: i.optimality_bound,
            phases: i.phases,
            integer: u32::from(i.integer),
        }
    }
}

/// Writes the default auction parameters into `params`.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (`params` NULL or misaligned).
///
/// # Safety
///
/// `params` must be NULL or point to a writable `pleas_auction_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_auction_params_init(
    params: *mut pleas_auction_params,
) -> pleas_status {
    run(|| {
        check::required(params.cast_const(), true)?;
        // SAFETY: checked non-NULL and aligned; writable by contract.
        unsafe { params.write(AuctionParams::default().into()) };
        Ok(())
    })
}

/// The scratch length in doubles of an auction on a `rows x cols` score matrix.
fn scratch_len(rows: usize, cols: usize) -> Result<usize, pleas_status> {
    if rows > cols {
        return Err(pleas_status::PLEAS_ERROR_SIZE_MISMATCH);
    }
    // The core asks for 52 doubles per column; keep its arithmetic far from overflow.
    if cols > isize::MAX as usize / 8 / 64 {
        return Err(PLEAS_ERROR_LENGTH);
    }
    Ok(assign::auction_scratch_len(cols))
}

/// The scratch length in doubles of `pleas_auction_f32()` (and `pleas_auction_f64()`) on a
/// `rows x cols` score matrix, into `scratch_len`.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (`scratch_len` NULL), `PLEAS_ERROR_SIZE_MISMATCH`
/// (`rows > cols`), `PLEAS_ERROR_LENGTH` (sizes beyond memory).
///
/// # Safety
///
/// `scratch_len` must be NULL or point to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_auction_scratch_size_f32(
    rows: usize,
    cols: usize,
    scratch_len: *mut usize,
) -> pleas_status {
    run(|| {
        check::required(scratch_len.cast_const(), true)?;
        let len = self::scratch_len(rows, cols)?;
        // SAFETY: checked non-NULL and aligned; writable by contract.
        unsafe { scratch_len.write(len) };
        Ok(())
    })
}

/// The common body of the typed auctions.
///
/// # Safety
///
/// As for `pleas_auction_f32()`.
unsafe fn auction_impl<T: Score>(
    scores: *const T,
    rows: usize,
    cols: usize,
    params: *const pleas_auction_params,
    perm: *mut usize,
    info: *mut pleas_auction_info,
    scratch: *mut f64,
    scratch_len: usize,
) -> pleas_status {
    run(|| {
        // SAFETY: NULL or a valid struct by contract.
        let params: AuctionParams =
            unsafe { check::optional(params, AuctionParams::default().into()) }?.into();
        let s = input(scores, product(rows, cols)?)?;
        let mut p = output(perm, rows)?;
        let info_region = check::optional_region(info)?;
        let needed = self::scratch_len(rows, cols)?;
        if scratch_len < needed {
            return Err(PLEAS_ERROR_SCRATCH);
        }
        let mut w = output(scratch, scratch_len)?;
        disjoint(&[s.region, p.region, info_region, w.region])?;
        // SAFETY: every buffer checked and disjoint from the writable ones; sizes by contract.
        let (s, p, w) = unsafe { (s.slice(), p.slice(), w.slice()) };
        let m = MatRef::new(s, rows, cols)?;
        let result = assign::auction(m, &params, p, w)?;
        // SAFETY: checked by `optional_region`; writable by contract.
        unsafe { check::write_optional(info, result.into()) }
    })
}

/// Assigns each row of the `rows x cols` score matrix `scores` (`rows <= cols`) to its own
/// column so that the total score is maximal: `perm[i]` (length `rows`) receives the column
/// of row `i`. `params` may be NULL (defaults); `info` may be NULL (not reported). `scratch`
/// holds at least `pleas_auction_scratch_size_f32()` doubles.
///
/// Integer-valued scores (with `(cols + 1) * max|score| <= 2^40`) give an optimal
/// assignment; other scores a total within `rel_tol * cols * (max - min)` of the optimum.
/// The result is deterministic.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (NULL or misaligned pointer, overlapping buffers, a
/// parameter out of range), `PLEAS_ERROR_LENGTH` (sizes beyond memory),
/// `PLEAS_ERROR_SIZE_MISMATCH` (`rows > cols`), `PLEAS_ERROR_NAN_INF` (a NaN or infinite
/// score), `PLEAS_ERROR_SCRATCH` (`scratch_len` too small).
///
/// # Safety
///
/// `scores` must address `rows * cols` floats, `perm` `rows` writable `size_t`, `scratch`
/// `scratch_len` writable doubles; `params` and `info` must be NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_auction_f32(
    scores: *const f32,
    rows: usize,
    cols: usize,
    params: *const pleas_auction_params,
    perm: *mut usize,
    info: *mut pleas_auction_info,
    scratch: *mut f64,
    scratch_len: usize,
) -> pleas_status {
    // SAFETY: forwarded contract.
    unsafe { auction_impl(scores, rows, cols, params, perm, info, scratch, scratch_len) }
}

/// `pleas_auction_f32()` on double scores (same scratch size).
///
/// # Safety
///
/// As for `pleas_auction_f32()`, with `scores` addressing `rows * cols` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_auction_f64(
    scores: *const f64,
    rows: usize,
    cols: usize,
    params: *const pleas_auction_params,
    perm: *mut usize,
    info: *mut pleas_auction_info,
    scratch: *mut f64,
    scratch_len: usize,
) -> pleas_status {
    // SAFETY: forwarded contract.
    unsafe { auction_impl(scores, rows, cols, params, perm, info, scratch, scratch_len) }
}

/// Ranks the pairs `(i, perm[i])` of an assignment on the `rows x cols` matrix `scores` and
/// writes into `order` (length `rows`) the rows of the `k` highest-scoring pairs, then the
/// other rows, each part in increasing row order (the `[merged | A-only]` layout of a partial
/// merge). Ties go to the lower row.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (NULL or misaligned pointer, overlapping buffers),
/// `PLEAS_ERROR_LENGTH` (`k > rows`, sizes beyond memory), `PLEAS_ERROR_INDEX` (a column in
/// `perm` not below `cols`), `PLEAS_ERROR_NAN_INF` (the score of a pair is NaN).
///
/// # Safety
///
/// `scores` must address `rows * cols` floats, `perm` `rows` `size_t`, `order` `rows`
/// writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_select_top_f32(
    scores: *const f32,
    rows: usize,
    cols: usize,
    perm: *const usize,
    k: usize,
    order: *mut usize,
) -> pleas_status {
    run(|| {
        let s = input(scores, product(rows, cols)?)?;
        let p = input(perm, rows)?;
        let mut o = output(order, rows)?;
        disjoint(&[s.region, p.region, o.region])?;
        // SAFETY: every buffer checked and disjoint from the writable one; sizes by contract.
        let (s, p, o) = unsafe { (s.slice(), p.slice(), o.slice()) };
        let m = MatRef::new(s, rows, cols)?;
        Ok(assign::select_top(m, p, k, o)?)
    })
}
