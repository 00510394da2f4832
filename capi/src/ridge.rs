//! Ridge least squares on a principal sub-block of accumulated moments: how PLeaS fits each
//! output block of a merged layer.
//!
//! For input columns `c` (`ncols` indices below `dim`) and outputs `o` (`ntargets` indices
//! below `targets`), solves `(G[c, c] + lambda I) W^T = R[c, o]` by Cholesky, where
//! `lambda = relative_ridge * mean(diag G[c, c]) + absolute_ridge` (multiplied by 10 and
//! retried, up to `max_retries` times, while the factorization fails), and writes `W`
//! (`ntargets x ncols`: row `a` holds the weights of output `o[a]` over the columns `c`).
//!
//! ```c
//! pleas_normal_equations_f64 eqs = { dim, targets, G, R, sum_tt };
//! size_t len;
//! pleas_ridge_scratch_size_f64(ncols, ntargets, &len);       /* doubles */
//! pleas_ridge_solve_f64(&eqs, cols, ncols, outs, ntargets, NULL, W, &info, scratch, len);
//! ```

use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::lstsq::{self, NormalEquations, RidgeInfo, RidgeParams};

use crate::check::{self, disjoint, input, output, product};
use crate::pleas_status::{self, PLEAS_ERROR_LENGTH};
use crate::status::run;

/// The moments that define the normal equations, as written by `pleas_gram_moments_f32`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct pleas_normal_equations_f64 {
    /// Inputs per sample: `gram` is `dim x dim`.
    pub dim: usize,
    /// Targets per sample: `cross` is `dim x targets`, `sum_tt` has `targets` entries.
    pub targets: usize,
    /// `G = sum x x^T` (row-major; only the lower triangle, row >= column, is read).
    pub gram: *const f64,
    /// `R = sum x t^T` (row-major, `dim x targets`).
    pub cross: *const f64,
    /// `sum t^2` per target (for the residual only; non-negative).
    pub sum_tt: *const f64,
}

/// Knobs of the ridge solve. Fill with `pleas_ridge_params_init()`, then change what you
/// need; pass NULL to the solver for the defaults.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct pleas_ridge_params {
    /// Ridge relative to the mean diagonal of `G[c, c]`; finite, >= 0. Default 1e-6.
    pub relative_ridge: f64,
    /// Ridge added as is, in the units of `G`; finite, >= 0. Default 0.
    pub absolute_ridge: f64,
    /// How many times the ridge may be multiplied by 10 after a failed factorization.
    /// Default 4.
    pub max_retries: u32,
}

impl From<RidgeParams> for pleas_ridge_params {
    fn from(p: RidgeParams) -> Self {
        Self {
            relative_ridge: p.relative_ridge,
            absolute_ridge: p.absolute_ridge,
            max_retries: p.max_retries,
        }
    }
}

impl From<pleas_ridge_params> for RidgeParams {
    fn from(p: pleas_ridge_params) -> Self {
        RidgeParams::default()
            .with_relative_ridge(p.relative_ridge)
            .with_absolute_ridge(p.absolute_ridge)
            .with_max_retries(p.max_retries)
    }
}

/// What a successful ridge solve reports.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct pleas_ridge_info {
    /// The ridge `lambda` of the successful factorization.
    pub ridge: f64,
    /// Smallest Cholesky pivot of `G[c, c] + lambda I`.
    pub min_pivot: f64,
    /// Largest Cholesky pivot; `max_pivot / min_pivot` bounds the condition number from
    /// below.
    pub max_pivot: f64,
    /// `sum ||X w - t||^2 / sum ||t||^2` over the chosen targets (0 when they are all 0).
    pub relative_residual: f64,
    /// How many times the ridge was multiplied by 10.
    pub retries: u32,
}

impl From<RidgeInfo> for pleas_ridge_info {
    fn from(i: RidgeInfo) -> Self {
        Self {
            ridge: i.ridge,
            min_pivot: i.min_pivot,
            max_pivot: i.max_pivot,
            relative_residual: i.relative_residual,
            retries: i.retries,
        }
    }
}

/// Writes the default ridge parameters into `params`.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (`params` NULL or misaligned).
///
/// # Safety
///
/// `params` must be NULL or point to a writable `pleas_ridge_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_ridge_params_init(params: *mut pleas_ridge_params) -> pleas_status {
    run(|| {
        check::required(params.cast_const(), true)?;
        // SAFETY: checked non-NULL and aligned; writable by contract.
        unsafe { params.write(RidgeParams::default().into()) };
        Ok(())
    })
}

/// The scratch length in doubles of a solve over `ncols` columns and `ntargets` outputs.
fn scratch_len(ncols: usize, ntargets: usize) -> Result<usize, pleas_status> {
    // The core's query saturates; a saturated size is beyond memory.
    Some(lstsq::ridge_solve_scratch_len(ncols, ntargets))
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or(PLEAS_ERROR_LENGTH)
}

/// The scratch length in doubles of `pleas_ridge_solve_f64()` over `ncols` input columns and
/// `ntargets` outputs, into `scratch_len`: `ncols * (ncols + ntargets + 1)`.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (`scratch_len` NULL), `PLEAS_ERROR_LENGTH` (sizes beyond
/// memory).
///
/// # Safety
///
/// `scratch_len` must be NULL or point to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_ridge_scratch_size_f64(
    ncols: usize,
    ntargets: usize,
    scratch_len: *mut usize,
) -> pleas_status {
    run(|| {
        check::required(scratch_len.cast_const(), true)?;
        let len = self::scratch_len(ncols, ntargets)?;
        // SAFETY: checked non-NULL and aligned; writable by contract.
        unsafe { scratch_len.write(len) };
        Ok(())
    })
}

/// Solves the ridge problem over the columns `cols` (`ncols` distinct indices below
/// `eqs->dim`) and the outputs `targets` (`ntargets` distinct indices below `eqs->targets`)
/// into `weights` (`ntargets x ncols`, row-major). `params` may be NULL (defaults); `info` may
/// be NULL (not reported). `scratch` holds at least `pleas_ridge_scratch_size_f64()` doubles.
///
/// Errors, checked in this order before anything is computed: `PLEAS_ERROR_ARGUMENT` (NULL or
/// misaligned pointer, overlapping buffers, a negative or non-finite ridge parameter),
/// `PLEAS_ERROR_LENGTH` (sizes beyond memory), `PLEAS_ERROR_INDEX` (an index out of range or
/// repeated), `PLEAS_ERROR_SCRATCH` (`scratch_len` too small), `PLEAS_ERROR_NAN_INF` (a NaN
/// or infinity among the moments read). Then `PLEAS_ERROR_SINGULAR` (not positive definite
/// with the last ridge tried) or `PLEAS_ERROR_OVERFLOW` (the weights overflow).
///
/// # Safety
///
/// `eqs` must point to a valid struct whose pointers address `dim * dim`, `dim * targets` and
/// `targets` doubles; `cols` and `targets` must address `ncols` and `ntargets` `size_t`;
/// `weights` `ntargets * ncols` writable doubles; `scratch` `scratch_len` writable doubles;
/// `params` and `info` must be NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_ridge_solve_f64(
    eqs: *const pleas_normal_equations_f64,
    cols: *const usize,
    ncols: usize,
    targets: *const usize,
    ntargets: usize,
    params: *const pleas_ridge_params,
    weights: *mut f64,
    info: *mut pleas_ridge_info,
    scratch: *mut f64,
    scratch_len: usize,
) -> pleas_status {
    run(|| {
        let eqs_region = check::required(eqs, false)?;
        // SAFETY: checked non-NULL and aligned; valid by contract.
        let e = unsafe { eqs.read() };
        // SAFETY: NULL or a valid struct by contract.
        let params: RidgeParams =
            unsafe { check::optional(params, RidgeParams::default().into()) }?.into();
        let (d, t) = (e.dim, e.targets);
        let g = input(e.gram, product(d, d)?)?;
        let r = input(e.cross, product(d, t)?)?;
        let s = input(e.sum_tt, t)?;
        let c = input(cols, ncols)?;
        let o = input(targets, ntargets)?;
        let mut w = output(weights, product(ntargets, ncols)?)?;
        let info_region = check::optional_region(info)?;
        let mut sc = output(scratch, scratch_len)?;
        disjoint(&[
            eqs_region,
            g.region,
            r.region,
            s.region,
            c.region,
            o.region,
            w.region,
            info_region,
            sc.region,
        ])?;
        // SAFETY: every buffer checked and disjoint from the writable ones; sizes by contract.
        let (g, r, s, c, o) = unsafe { (g.slice(), r.slice(), s.slice(), c.slice(), o.slice()) };
        let eqs = NormalEquations {
            gram: MatRef::new(g, d, d)?,
            cross: MatRef::new(r, d, t)?,
            target_sq_sums: s,
        };
        // SAFETY: as above.
        let (w, sc) = unsafe { (w.slice(), sc.slice()) };
        let wv = MatMut::new(w, ntargets, ncols)?;
        let result = lstsq::ridge_solve(eqs, c, o, params, wv, sc)?;
        // SAFETY: checked by `optional_region`; writable by contract.
        unsafe { check::write_optional(info, result.into()) }
    })
}
