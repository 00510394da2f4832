//! Ridge least squares in sample space (the dual, or kernel, form), for fits with more input
//! columns than samples.
//!
//! With samples `X` (`N x k`, one row per sample, optionally followed by a constant intercept
//! column of ones), targets `T` (`N x m`) and prior weights `W0` (`m x k`), the ridge problem
//! of [`ridge_solve`](super::ridge_solve), pulled towards `W0`,
//!
//! ```text
//! min_W ||X W^T - T||^2 + lambda ||W - W0||^2
//! ```
//!
//! has the normal equations `(X^T X + lambda I)(W - W0)^T = X^T E` with the prior's residual
//! `E = T - X W0^T`. By the push-through identity
//! `(X^T X + lambda I)^{-1} X^T = X^T (X X^T + lambda I)^{-1}`, the same solution is
//!
//! ```text
//! W^T = W0^T + X^T Z,   (X X^T + lambda I) Z = E,
//! ```
//!
//! which needs the `N x N` kernel `K = X X^T + lambda I` instead of the `k x k` Gram. When
//! `k > N` (the 785 columns of an MLP's first layer against a few hundred merge samples) the
//! kernel is the smaller system, and the update `W - W0` lies in the span of the samples by
//! construction: directions the data does not excite keep the prior exactly.
//!
//! **Ridge.** `lambda = relative_ridge * mean(diag X^T X) + absolute_ridge`, the rule of the
//! primal solve, so both forms solve the same problem: `mean(diag X^T X)` is
//! `trace(X^T X) / k = trace(X X^T) / k`, computed column by column as the primal solve does
//! (each `sum_s x_sj^2` divided by `k` before summing; the intercept column contributes `N`).
//! A factorization that meets a non-positive pivot is retried with the ridge multiplied by 10,
//! up to [`DualParams::max_retries`] times, as in the primal solve.
//!
//! **Residual.** Since `K Z = E`, the fitted residual is `X W^T - T = X X^T Z - E = -lambda Z`,
//! so [`DualInfo::relative_residual`] (`sum ||X w_o - t_o||^2 / sum ||t_o||^2`) comes from `Z`
//! without another pass over the data.
//!
//! **Memory.** The kernel is kept in packed lower-triangular storage
//! ([`packed`](crate::linalg::packed)), `N (N + 1) / 2` values, and factored in place; the
//! right-hand sides `E` (`N x m`) are solved in place. [`dual_ridge_scratch_len`] is their sum:
//! for `N = 300` samples and `m = 16` targets, 49,950 f64 (400 kB), against 308,505 f64
//! (2.5 MB) for the packed 785 x 785 Gram of the primal form. Callers that produce `E` in
//! pieces (the MLP merge streams targets) use the steps separately: [`dual_factor`], then
//! [`dual_solve`] on each block of right-hand sides.
//!
//! Everything is accumulated in f64 from the f32 (or f64) inputs: the kernel entries are
//! sums of exact products, so the solve is as accurate as `cond(K)` allows, independently of
//! how the data was batched.

use core::fmt;

use super::retry::{Attempt, RetryError, with_ridge_retries};
use crate::linalg::packed::{PackedError, cholesky_packed, packed_index, packed_len, solve_packed};
use crate::linalg::view::{MatMut, MatRef};

/// Tuning knobs of the dual solve. The defaults are those of
/// [`RidgeParams`](super::RidgeParams), so that both forms solve the same problem.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct DualParams {
    /// Ridge relative to the mean diagonal of `X^T X`. Default `1e-6`.
    pub relative_ridge: f64,
    /// Ridge added as is. Default 0.
    pub absolute_ridge: f64,
    /// How many times the ridge may be multiplied by 10 after a failed factorization.
    /// Default 4.
    pub max_retries: u32,
}

impl Default for DualParams {
    fn default() -> Self {
        Self {
            relative_ridge: 1e-6,
            absolute_ridge: 0.0,
            max_retries: 4,
        }
    }
}

impl DualParams {
    /// These params with `relative_ridge` replaced.
    pub const fn with_relative_ridge(mut self, relative_ridge: f64) -> Self {
        self.relative_ridge = relative_ridge;
        self
    }

    /// These params with `absolute_ridge` replaced.
    pub const fn with_absolute_ridge(mut self, absolute_ridge: f64) -> Self {
        self.absolute_ridge = absolute_ridge;
        self
    }

    /// These params with `max_retries` replaced.
    pub const fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }
}

/// What a successful kernel factorization reports.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct DualFactorInfo {
    /// `mean(diag X^T X)` over the `k` columns (intercept included).
    pub mean_diagonal: f64,
    /// The ridge `lambda` of the successful factorization (after retries).
    pub ridge: f64,
    /// How many times the ridge was multiplied by 10.
    pub retries: u32,
    /// Smallest Cholesky pivot of `K` (`+inf` with no samples).
    pub min_pivot: f64,
    /// Largest Cholesky pivot of `K` (`-inf` with no samples).
    pub max_pivot: f64,
}

/// What a successful [`dual_ridge_solve`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct DualInfo {
    /// The kernel factorization.
    pub factor: DualFactorInfo,
    /// `sum_o ||X w_o - t_o||^2 / sum_o ||t_o||^2` of the returned weights, as
    /// `lambda^2 ||Z||^2 / ||T||^2` (see the module docs); 0 when `T` is zero.
    pub relative_residual: f64,
}

/// Which operand an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DualOperand {
    /// The samples `X`.
    Samples,
    /// The targets `T`.
    Targets,
    /// The prior weights `W0`.
    Prior,
    /// The output weights.
    Weights,
    /// The packed kernel storage.
    Kernel,
    /// The right-hand sides of [`dual_solve`].
    Rhs,
}

impl fmt::Display for DualOperand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DualOperand::Samples => "samples",
            DualOperand::Targets => "targets",
            DualOperand::Prior => "prior weights",
            DualOperand::Weights => "weights",
            DualOperand::Kernel => "kernel",
            DualOperand::Rhs => "right-hand sides",
        })
    }
}

/// Why a dual solve failed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum DualError {
    /// A ridge parameter is negative or not finite, or the ridge they produce is not finite.
    InvalidRidge {
        /// [`DualParams::relative_ridge`].
        relative: f64,
        /// [`DualParams::absolute_ridge`].
        absolute: f64,
    },
    /// An operand has the wrong shape (`(rows, cols)`; for the kernel storage, `(length, 1)`).
    ShapeMismatch {
        /// The operand.
        operand: DualOperand,
        /// The shape the other operands call for.
        expected: (usize, usize),
        /// The shape given.
        found: (usize, usize),
    },
    /// The scratch is shorter than [`dual_ridge_scratch_len`] asks for.
    ScratchTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        provided: usize,
    },
    /// An input value is NaN or infinite: the first one in row-major order.
    NonFinite {
        /// The operand holding it.
        operand: DualOperand,
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
    },
    /// `X X^T + lambda I` has a non-positive Cholesky pivot even with the last ridge tried.
    NotPositiveDefinite {
        /// The sample (kernel row) of the failing pivot.
        index: usize,
        /// The pivot value.
        pivot: f64,
        /// The last ridge tried.
        ridge: f64,
        /// How many times the ridge was multiplied by 10.
        retries: u32,
    },
    /// The inputs are finite but the weights overflow. The weights are unspecified.
    SolutionOverflow {
        /// The first target whose solution overflowed.
        target: usize,
        /// The ridge used.
        ridge: f64,
    },
}

impl fmt::Display for DualError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DualError::InvalidRidge { relative, absolute } => write!(
                f,
                "invalid ridge: relative {relative:e}, absolute {absolute:e} (need finite, >= 0)"
            ),
            DualError::ShapeMismatch {
                operand,
                expected,
                found,
            } => write!(
                f,
                "{operand} is {}x{}, expected {}x{}",
                found.0, found.1, expected.0, expected.1
            ),
            DualError::ScratchTooSmall { needed, provided } => write!(
                f,
                "scratch too small: {needed} elements needed, {provided} provided"
            ),
            DualError::NonFinite { operand, row, col } => {
                write!(f, "non-finite {operand} value at ({row}, {col})")
            }
            DualError::NotPositiveDefinite {
                index,
                pivot,
                ridge,
                retries,
            } => write!(
                f,
                "sample kernel is not positive definite: pivot {index} is {pivot:e} with ridge \
                 {ridge:e} after {retries} retries"
            ),
            DualError::SolutionOverflow { target, ridge } => write!(
                f,
                "the weights of target {target} overflow (ridge {ridge:e})"
            ),
        }
    }
}

impl core::error::Error for DualError {}

/// f64 elements of the packed kernel of `samples` samples: `N (N + 1) / 2`.
pub fn dual_kernel_len(samples: usize) -> usize {
    packed_len(samples)
}

/// Scratch elements [`dual_ridge_solve`] needs: the packed kernel plus the `N x m` right-hand
/// sides (solved in place).
pub fn dual_ridge_scratch_len(samples: usize, targets: usize) -> usize {
    packed_len(samples).saturating_add(samples.saturating_mul(targets))
}

/// The samples a dual solve reads: an `N x k'` matrix whose entries are read as f64.
///
/// Every [`MatRef`] of values that widen to f64 (`f32`, `f64`) is one; callers whose samples
/// are stored otherwise (bytes mapped through a normalisation table, for the MLP merge of a
/// microcontroller) implement it for their storage.
pub trait DualSamples {
    /// `(N, k')`: samples and columns (without the intercept).
    fn shape(&self) -> (usize, usize);

    /// Entry `(s, j)` (`s < N`, `j < k'`) in f64.
    fn value(&self, s: usize, j: usize) -> f64;
}

impl<T: Copy + Into<f64>> DualSamples for MatRef<'_, T> {
    #[inline]
    fn shape(&self) -> (usize, usize) {
        MatRef::shape(self)
    }

    #[inline]
    fn value(&self, s: usize, j: usize) -> f64 {
        self.at(s, j).into()
    }
}

impl<X: DualSamples + ?Sized> DualSamples for &X {
    #[inline]
    fn shape(&self) -> (usize, usize) {
        (**self).shape()
    }

    #[inline]
    fn value(&self, s: usize, j: usize) -> f64 {
        (**self).value(s, j)
    }
}

/// Columns of the fit: the sample columns plus the intercept.
fn columns<X: DualSamples>(x: &X, intercept: bool) -> usize {
    x.shape().1 + usize::from(intercept)
}

fn first_non_finite<X: DualSamples>(m: &X, operand: DualOperand) -> Result<(), DualError> {
    let (rows, cols) = m.shape();
    for i in 0..rows {
        for j in 0..cols {
            if !m.value(i, j).is_finite() {
                return Err(DualError::NonFinite {
                    operand,
                    row: i,
                    col: j,
                });
            }
        }
    }
    Ok(())
}

/// `mean(diag X^T X)` as the primal solve computes it: per column `sum_s x_sj^2`, each divided
/// by `k` before summing; the intercept column contributes `N`.
fn mean_diagonal<X: DualSamples>(x: &X, intercept: bool) -> f64 {
    let k = columns(x, intercept) as f64;
    let (rows, cols) = x.shape();
    let mut mean = 0.0;
    for j in 0..cols {
        let mut v = 0.0;
        for s in 0..rows {
            let e = x.value(s, j);
            v += e * e;
        }
        mean += v / k;
    }
    if intercept {
        mean += rows as f64 / k;
    }
    mean
}

/// Writes `X X^T + ridge I` (lower triangle, packed) into `kernel`.
fn build_kernel<X: DualSamples>(x: &X, intercept: bool, ridge: f64, kernel: &mut [f64]) {
    let (n, d) = x.shape();
    for s in 0..n {
        let row = packed_index(s, 0);
        for t in 0..=s {
            let mut v = 0.0;
            for j in 0..d {
                v += x.value(s, j) * x.value(t, j);
            }
            if intercept {
                v += 1.0;
            }
            if s == t {
                v += ridge;
            }
            kernel[row + t] = v;
        }
    }
}

/// Builds the kernel `K = X X^T + lambda I` of the samples `x` (plus a constant column of ones
/// if `intercept`) in packed storage and factors it in place (see the module docs for
/// `lambda` and the retries). `kernel` needs [`dual_kernel_len`]`(x.rows())` values; on
/// success it holds the packed Cholesky factor for [`dual_solve`].
pub fn dual_factor<X: DualSamples>(
    x: X,
    intercept: bool,
    params: DualParams,
    kernel: &mut [f64],
) -> Result<DualFactorInfo, DualError> {
    let (rel, abs) = (params.relative_ridge, params.absolute_ridge);
    let invalid = DualError::InvalidRidge {
        relative: rel,
        absolute: abs,
    };
    let usable = |v: f64| v.is_finite() && v >= 0.0;
    if !usable(rel) || !usable(abs) {
        return Err(invalid);
    }
    let n = x.shape().0;
    let needed = packed_len(n);
    if kernel.len() < needed {
        return Err(DualError::ShapeMismatch {
            operand: DualOperand::Kernel,
            expected: (needed, 1),
            found: (kernel.len(), 1),
        });
    }
    first_non_finite(&x, DualOperand::Samples)?;
    let mean_diagonal = mean_diagonal(&x, intercept);
    let first_ridge = rel * mean_diagonal.max(0.0) + abs;
    if !first_ridge.is_finite() {
        return Err(invalid);
    }
    let shape_error = DualError::ShapeMismatch {
        operand: DualOperand::Kernel,
        expected: (needed, 1),
        found: (kernel.len(), 1),
    };
    let retried = with_ridge_retries(first_ridge, params.max_retries, |ridge| {
        build_kernel(&x, intercept, ridge, kernel);
        cholesky_packed(&mut kernel[..needed], n).map_err(|e| match e {
            PackedError::NonPositivePivot { index, value } => {
                Attempt::NonPositivePivot { index, value }
            }
            // The length was checked above.
            _ => Attempt::Failed(shape_error),
        })
    })
    .map_err(|e| match e {
        RetryError::Exhausted {
            index,
            pivot,
            ridge,
            retries,
        } => DualError::NotPositiveDefinite {
            index,
            pivot,
            ridge,
            retries,
        },
        RetryError::Failed(e) => e,
    })?;
    Ok(DualFactorInfo {
        mean_diagonal,
        ridge: retried.ridge,
        retries: retried.retries,
        min_pivot: retried.value.min_pivot,
        max_pivot: retried.value.max_pivot,
    })
}

/// Solves `K Z = E` in place for the factor of [`dual_factor`] (`samples` rows): `rhs` holds
/// `E` (`samples x m`, any strides) and receives `Z`.
pub fn dual_solve(factor: &[f64], samples: usize, rhs: MatMut<'_, f64>) -> Result<(), DualError> {
    let found = rhs.shape();
    solve_packed(factor, samples, rhs).map_err(|e| match e {
        PackedError::RhsRows { .. } => DualError::ShapeMismatch {
            operand: DualOperand::Rhs,
            expected: (samples, found.1),
            found,
        },
        _ => DualError::ShapeMismatch {
            operand: DualOperand::Kernel,
            expected: (packed_len(samples), 1),
            found: (factor.len(), 1),
        },
    })
}

/// The shapes, the scratch length and the finiteness of a dual solve's inputs (in the order
/// [`dual_ridge_solve`] documents).
fn check_dual_inputs<T: Copy + Into<f64>>(
    x: &MatRef<'_, T>,
    intercept: bool,
    targets: &MatRef<'_, T>,
    prior: Option<&MatRef<'_, T>>,
    weights: (usize, usize),
    scratch: usize,
) -> Result<(), DualError> {
    let n = x.rows();
    let k = columns(x, intercept);
    let m = targets.cols();
    let mut shapes = [
        (DualOperand::Targets, (n, m), targets.shape()),
        (DualOperand::Weights, (m, k), weights),
        (DualOperand::Prior, (m, k), (m, k)),
    ];
    if let Some(p) = prior {
        shapes[2].2 = p.shape();
    }
    for (operand, expected, found) in shapes {
        if expected != found {
            return Err(DualError::ShapeMismatch {
                operand,
                expected,
                found,
            });
        }
    }
    let needed = dual_ridge_scratch_len(n, m);
    if scratch < needed {
        return Err(DualError::ScratchTooSmall {
            needed,
            provided: scratch,
        });
    }
    first_non_finite(x, DualOperand::Samples)?;
    first_non_finite(targets, DualOperand::Targets)?;
    if let Some(p) = prior {
        first_non_finite(p, DualOperand::Prior)?;
    }
    Ok(())
}

/// `E = T - X W0^T` in f64 into `z` (`N x m`), the prior's weight of target `o` on column `j`
/// read as `w0(o, j)` (intercept last); returns `||T||^2`.
fn prior_residual<T: Copy + Into<f64>>(
    x: &MatRef<'_, T>,
    intercept: bool,
    targets: &MatRef<'_, T>,
    w0: impl Fn(usize, usize) -> f64,
    z: &mut [f64],
) -> f64 {
    let (n, m) = (x.rows(), targets.cols());
    let k = columns(x, intercept);
    let mut tt = 0.0;
    for s in 0..n {
        for o in 0..m {
            let t: f64 = targets.at(s, o).into();
            tt += t * t;
            let mut p = 0.0;
            for j in 0..x.cols() {
                let v: f64 = x.at(s, j).into();
                p += w0(o, j) * v;
            }
            if intercept {
                p += w0(o, k - 1);
            }
            z[s * m + o] = t - p;
        }
    }
    tt
}

/// Solves the ridge problem of the module docs in sample space: `x` (`N x k'`, plus an
/// intercept column when `intercept`, so `k = k' + intercept` columns), `targets` (`N x m`),
/// `prior` (`m x k`, `None` for zero) into `weights` (`m x k`, row `o` the weights of target
/// `o`, intercept last), using `scratch` of at least [`dual_ridge_scratch_len`]`(N, m)`.
///
/// Errors are checked in this order: ridge params, shapes, scratch, finiteness (samples,
/// targets, prior); then the factorization may fail after its retries. With no columns at
/// all (`k = 0`) nothing is solved and the relative residual is 1 (0 for zero targets).
pub fn dual_ridge_solve<T: Copy + Into<f64>>(
    x: MatRef<'_, T>,
    intercept: bool,
    targets: MatRef<'_, T>,
    prior: Option<MatRef<'_, T>>,
    params: DualParams,
    mut weights: MatMut<'_, f64>,
    scratch: &mut [f64],
) -> Result<DualInfo, DualError> {
    let usable = |v: f64| v.is_finite() && v >= 0.0;
    if !usable(params.relative_ridge) || !usable(params.absolute_ridge) {
        return Err(DualError::InvalidRidge {
            relative: params.relative_ridge,
            absolute: params.absolute_ridge,
        });
    }
    check_dual_inputs(
        &x,
        intercept,
        &targets,
        prior.as_ref(),
        weights.shape(),
        scratch.len(),
    )?;
    let n = x.rows();
    let k = columns(&x, intercept);
    let m = targets.cols();
    let (kernel, rest) = scratch.split_at_mut(packed_len(n));
    let z = &mut rest[..n * m];
    let w0 = |o: usize, j: usize| -> f64 { prior.as_ref().map_or(0.0, |p| p.at(o, j).into()) };
    let tt = prior_residual(&x, intercept, &targets, w0, z);
    if k == 0 {
        // Nothing to fit: the (empty) weights are what they are, the residual is all of T.
        return Ok(DualInfo {
            factor: DualFactorInfo {
                mean_diagonal: 0.0,
                ridge: params.absolute_ridge,
                retries: 0,
                min_pivot: f64::INFINITY,
                max_pivot: f64::NEG_INFINITY,
            },
            relative_residual: if tt > 0.0 { 1.0 } else { 0.0 },
        });
    }
    let factor = dual_factor(x, intercept, params, kernel)?;
    dual_solve(
        kernel,
        n,
        MatMut::new(&mut *z, n, m).expect("n x m fits in n * m"),
    )?;
    let ridge = factor.ridge;
    if let Some(pos) = z.iter().position(|v| !v.is_finite()) {
        return Err(DualError::SolutionOverflow {
            target: pos % m.max(1),
            ridge,
        });
    }
    let zz: f64 = z.iter().map(|v| v * v).sum();
    let relative_residual = if tt > 0.0 {
        ridge * ridge * zz / tt
    } else {
        0.0
    };
    // W = W0 + (X^T Z)^T.
    for o in 0..m {
        for j in 0..k {
            let mut delta = 0.0;
            for s in 0..n {
                let v: f64 = if intercept && j == k - 1 {
                    1.0
                } else {
                    x.at(s, j).into()
                };
                delta += v * z[s * m + o];
            }
            let w = w0(o, j) + delta;
            if !w.is_finite() {
                return Err(DualError::SolutionOverflow { target: o, ridge });
            }
            *weights.at_mut(o, j) = w;
        }
    }
    Ok(DualInfo {
        factor,
        relative_residual,
    })
}
