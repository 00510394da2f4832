//! Ridge least squares on a principal sub-block of an accumulated Gram.
//!
//! This is how PLeaS fits each output block of a merged layer. Over the merge data, with
//! inputs `x` (length `d`) and targets `t` (length `t`), the caller accumulates
//! `G = sum x x^T` (`d x d`, only the lower triangle needs to be valid), `R = sum x t^T`
//! (`d x t`) and `sum t_o^2` per target. For a list `cols` of allowed input columns `c` and a
//! list `targets` of outputs, [`ridge_solve`] solves
//!
//! ```text
//! (G[c, c] + lambda I) W^T = R[c, targets]
//! ```
//!
//! by Cholesky, where `lambda = relative_ridge * mean(diag G[c, c]) + absolute_ridge`, and
//! writes `W` (`targets.len() x cols.len()`; row `o` holds the weights of `targets[o]` over
//! the columns `c`, in the given order).
//!
//! If the factorization meets a non-positive pivot, the ridge is multiplied by 10 and the
//! factorization retried, up to [`RidgeParams::max_retries`] times (the one retry loop of
//! [`retry`], shared with the dual form).
//!
//! **Residual.** [`RidgeInfo::relative_residual`] is
//! `sum_o ||X w_o - t_o||^2 / sum_o ||t_o||^2` over the chosen targets, computed from the
//! sums alone as `||X w - t||^2 = t^T t - 2 w^T R[c, o] + w^T G[c, c] w` (each target's term
//! clamped at 0 against rounding). When every chosen target has `sum t^2 = 0` it is reported
//! as 0. It measures the weights actually returned, not the ridge-regularised objective.
//!
//! **Primal or dual.** This primal form needs the `d x d` Gram. When a fit has more input
//! columns than samples, [`dual`] solves the same ridge problem (same `lambda`, same retries)
//! in sample space, with an `N x N` kernel instead; see its module docs for the memory each
//! form needs.

use core::fmt;

pub mod dual;
pub mod retry;

pub use retry::{Attempt, LsForm, Retried, RetryError, with_ridge_retries};

use crate::linalg::cholesky::{CholeskyParams, cholesky_unchecked};
use crate::linalg::lanes::{Strided, dot, dots};
use crate::linalg::triangular::{solve_lower_transpose_unchecked, solve_lower_unchecked};
use crate::linalg::view::{MatMut, MatRef};

/// The accumulated sums that define the normal equations of every output block of a layer.
#[derive(Debug, Clone, Copy)]
pub struct NormalEquations<'a> {
    /// `G = sum x x^T`, `d x d`. Only the lower triangle (`row >= col`) is read.
    pub gram: MatRef<'a, f64>,
    /// `R = sum x t^T`, `d x t`: row `i` is input `i`, column `o` is target `o`.
    pub cross: MatRef<'a, f64>,
    /// `sum t_o^2` over the samples, one entry per column of `cross`. Only the residual uses
    /// it; entries are expected to be non-negative.
    pub target_sq_sums: &'a [f64],
}

/// Tuning knobs of [`ridge_solve`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RidgeParams {
    /// Ridge relative to the mean diagonal of `G[c, c]`. Default `1e-6`, chosen so that
    ///
    /// - the regularised block is safely factorable: for a positive semi-definite Gram the
    ///   mean diagonal is at least `lambda_max / n`, so `cond(G[c, c] + lambda I) <= 1 + 1e6 n`,
    ///   and Higham's sufficient condition for Cholesky to succeed in floating point
    ///   (`20 n^1.5 u cond < 1`, Demmel; Higham, *Accuracy and Stability*, section 10.1)
    ///   holds up to `n ~ 2900` inputs. Beyond that, or when accumulation rounding leaves the
    ///   Gram slightly indefinite, a failed factorization is retried with a larger ridge;
    /// - the fit barely moves: each eigen-direction of `G[c, c]` with eigenvalue `s` is shrunk
    ///   by `lambda / (s + lambda)`, i.e. by at most `1e-6` for directions carrying at least
    ///   the mean input energy; only directions with about a millionth of it (numerically
    ///   degenerate ones: dead or duplicated units) are damped substantially.
    pub relative_ridge: f64,
    /// Ridge added as is, in the units of `G`. Default 0. Set it when the selected inputs may
    /// all be identically zero (then the relative ridge is 0 and the solve is rejected).
    pub absolute_ridge: f64,
    /// How many times the ridge may be multiplied by 10 after a failed factorization.
    /// Default 4 (up to `1e4` times the first ridge).
    pub max_retries: u32,
    /// Params of the Cholesky factorization.
    pub cholesky: CholeskyParams,
}

impl RidgeParams {
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

    /// These params with the Cholesky params replaced.
    pub const fn with_cholesky(mut self, cholesky: CholeskyParams) -> Self {
        self.cholesky = cholesky;
        self
    }
}

impl Default for RidgeParams {
    fn default() -> Self {
        Self {
            relative_ridge: 1e-6,
            absolute_ridge: 0.0,
            max_retries: 4,
            cholesky: CholeskyParams::default(),
        }
    }
}

/// What a successful ridge solve reports.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RidgeInfo {
    /// The ridge `lambda` of the successful factorization (after retries).
    pub ridge: f64,
    /// Smallest Cholesky pivot of `G[c, c] + lambda I` (`L[j, j]^2`; `+inf` if `cols` is
    /// empty).
    pub min_pivot: f64,
    /// Largest Cholesky pivot (`-inf` if `cols` is empty). `max_pivot / min_pivot` is a
    /// cheap lower bound on the condition number of the regularised system.
    pub max_pivot: f64,
    /// `sum_o ||X w_o - t_o||^2 / sum_o ||t_o||^2` (see the module docs); 0 when the
    /// denominator is 0.
    pub relative_residual: f64,
    /// How many times the ridge was multiplied by 10.
    pub retries: u32,
}

/// Which index list an index error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexList {
    /// The input columns `cols`.
    Cols,
    /// The outputs `targets`.
    Targets,
}

/// Which operand an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// [`NormalEquations::gram`].
    Gram,
    /// [`NormalEquations::cross`].
    Cross,
    /// [`NormalEquations::target_sq_sums`], seen as a `t x 1` column.
    TargetSqSums,
    /// The output weights.
    Weights,
}

impl fmt::Display for IndexList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IndexList::Cols => "cols",
            IndexList::Targets => "targets",
        })
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operand::Gram => "gram",
            Operand::Cross => "cross",
            Operand::TargetSqSums => "target_sq_sums",
            Operand::Weights => "weights",
        })
    }
}

/// Why a ridge solve failed. The weights are written only on success.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum LstsqError {
    /// A ridge parameter is negative or not finite, or the first ridge they produce is not
    /// finite.
    InvalidRidge {
        /// [`RidgeParams::relative_ridge`].
        relative: f64,
        /// [`RidgeParams::absolute_ridge`].
        absolute: f64,
    },
    /// An operand has the wrong shape. Shapes are `(rows, cols)`.
    ShapeMismatch {
        /// The operand.
        operand: Operand,
        /// The shape the other operands and index lists call for.
        expected: (usize, usize),
        /// The shape given.
        found: (usize, usize),
    },
    /// An index is not below its bound (`d` for `cols`, `t` for `targets`).
    IndexOutOfRange {
        /// The list holding it.
        list: IndexList,
        /// Its position in the list.
        position: usize,
        /// The index.
        index: usize,
        /// The exclusive bound.
        bound: usize,
    },
    /// An index appears twice in the same list.
    DuplicateIndex {
        /// The list holding it.
        list: IndexList,
        /// The repeated index.
        index: usize,
        /// Position of its first occurrence.
        first: usize,
        /// Position of its second occurrence.
        second: usize,
    },
    /// The scratch is shorter than [`ridge_solve_scratch_len`] asks for.
    ScratchTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        provided: usize,
    },
    /// An element that the solve reads is NaN or infinite, given in the operand's own
    /// coordinates (for the Gram, the lower-triangle element `(row >= col)`; also reported
    /// when adding the ridge to a diagonal element overflows). The first one found, checking
    /// the Gram block, then the cross block, then the target sums, in list order.
    NonFinite {
        /// The operand.
        operand: Operand,
        /// Row in the operand.
        row: usize,
        /// Column in the operand (0 for the target sums).
        col: usize,
    },
    /// `G[c, c] + ridge I` has a non-positive Cholesky pivot even with the last ridge tried.
    NotPositiveDefinite {
        /// Position in `cols` of the failing pivot.
        index: usize,
        /// The Gram column `cols[index]`.
        column: usize,
        /// The pivot value (NaN or `-inf` if the factorization overflowed).
        pivot: f64,
        /// The last ridge tried.
        ridge: f64,
        /// How many times the ridge was multiplied by 10.
        retries: u32,
    },
    /// The solve overflowed: the inputs are finite but the weights are not representable
    /// (e.g. a nearly singular block with huge right-hand sides). Nothing is written.
    SolutionOverflow {
        /// Position in `targets` of the first target whose weights overflowed.
        target: usize,
        /// The ridge used.
        ridge: f64,
    },
}

impl fmt::Display for LstsqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LstsqError::InvalidRidge { relative, absolute } => write!(
                f,
                "invalid ridge: relative {relative:e}, absolute {absolute:e} (need finite, >= 0)"
            ),
            LstsqError::ShapeMismatch {
                operand,
                expected,
                found,
            } => write!(
                f,
                "{operand} is {}x{}, expected {}x{}",
                found.0, found.1, expected.0, expected.1
            ),
            LstsqError::IndexOutOfRange {
                list,
                position,
                index,
                bound,
            } => write!(
                f,
                "{list}[{position}] = {index} is out of range (must be < {bound})"
            ),
            LstsqError::DuplicateIndex {
                list,
                index,
                first,
                second,
            } => write!(
                f,
                "{list} holds {index} twice, at positions {first} and {second}"
            ),
            LstsqError::ScratchTooSmall { needed, provided } => write!(
                f,
                "scratch too small: {needed} elements needed, {provided} provided"
            ),
            LstsqError::NonFinite { operand, row, col } => {
                write!(f, "non-finite {operand} element at ({row}, {col})")
            }
            LstsqError::NotPositiveDefinite {
                index,
                column,
                pivot,
                ridge,
                retries,
            } => write!(
                f,
                "Gram block is not positive definite: pivot {index} (column {column}) is \
                 {pivot:e} with ridge {ridge:e} after {retries} retries"
            ),
            LstsqError::SolutionOverflow { target, ridge } => write!(
                f,
                "the weights of target {target} overflow (ridge {ridge:e}): the inputs are too \
                 large or too ill-conditioned for f64"
            ),
        }
    }
}

impl core::error::Error for LstsqError {}

/// Scratch elements [`ridge_solve`] needs for `ncols` input columns and `ntargets` outputs:
/// the `ncols x ncols` factor (whose strict upper triangle also keeps the Gram block for the
/// residual and for retries), the `ntargets x ncols` solution and the `ncols` diagonal of the
/// Gram block.
pub fn ridge_solve_scratch_len(ncols: usize, ntargets: usize) -> usize {
    ncols
        .saturating_mul(ncols)
        .saturating_add(ncols.saturating_mul(ntargets))
        .saturating_add(ncols)
}

fn check_indices(list: IndexList, idx: &[usize], bound: usize) -> Result<(), LstsqError> {
    for (position, &index) in idx.iter().enumerate() {
        if index >= bound {
            return Err(LstsqError::IndexOutOfRange {
                list,
                position,
                index,
                bound,
            });
        }
    }
    // Quadratic, without allocation; the solve itself is cubic in `cols.len()`.
    for (second, &index) in idx.iter().enumerate() {
        if let Some(first) = idx[..second].iter().position(|&v| v == index) {
            return Err(LstsqError::DuplicateIndex {
                list,
                index,
                first,
                second,
            });
        }
    }
    Ok(())
}

/// `G[i, j]` read from the lower triangle.
#[inline]
fn gram_at(gram: MatRef<'_, f64>, i: usize, j: usize) -> f64 {
    if i >= j { gram.at(i, j) } else { gram.at(j, i) }
}

/// Where the strict lower row `a` of the pristine `G[c, c]` is kept: row `k - 1 - a` of the
/// strict upper triangle of the `k x k` factor, columns `k - a .. k` (exactly `a` elements),
/// which the Cholesky factorization never touches. Rows stay contiguous both when they are
/// written and when they are read back.
fn pristine_row(k: usize, a: usize) -> core::ops::Range<usize> {
    let r = k - 1 - a;
    r * k + (k - a)..r * k + k
}

/// Copies `G[c, c]` into its pristine places (diagonal into `diag`, strict lower rows via
/// [`pristine_row`]) checking that every element is finite, in the order (a, b <= a); returns
/// the mean of the diagonal.
fn copy_gram_block(
    gram: MatRef<'_, f64>,
    cols: &[usize],
    factor: &mut [f64],
    diag: &mut [f64],
) -> Result<f64, LstsqError> {
    let k = cols.len();
    let non_finite = |ca: usize, cb: usize| LstsqError::NonFinite {
        operand: Operand::Gram,
        row: ca.max(cb),
        col: ca.min(cb),
    };
    let mut mean = 0.0;
    for (a, &ca) in cols.iter().enumerate() {
        let row = &mut factor[pristine_row(k, a)];
        for (b, &cb) in cols[..a].iter().enumerate() {
            let v = gram_at(gram, ca, cb);
            if !v.is_finite() {
                return Err(non_finite(ca, cb));
            }
            row[b] = v;
        }
        let v = gram.at(ca, ca);
        if !v.is_finite() {
            return Err(non_finite(ca, ca));
        }
        diag[a] = v;
        // Divided term by term so that the sum cannot overflow.
        mean += v / k as f64;
    }
    Ok(mean)
}

/// Checks the cross block and the target sums the solve reads.
fn check_targets_finite(
    eqs: &NormalEquations<'_>,
    cols: &[usize],
    targets: &[usize],
) -> Result<(), LstsqError> {
    for &c in cols {
        for &o in targets {
            if !eqs.cross.at(c, o).is_finite() {
                return Err(LstsqError::NonFinite {
                    operand: Operand::Cross,
                    row: c,
                    col: o,
                });
            }
        }
    }
    for &o in targets {
        if !eqs.target_sq_sums[o].is_finite() {
            return Err(LstsqError::NonFinite {
                operand: Operand::TargetSqSums,
                row: o,
                col: 0,
            });
        }
    }
    Ok(())
}

/// `sum_o ||X w_o - t_o||^2 / sum_o ||t_o||^2` of the solution `sol` (`m x k`, row `o` the
/// weights of `targets[o]`), from the sums and the pristine Gram block kept in `factor` and
/// `diag` (see the module docs); 0 when every target's energy is 0.
fn relative_residual(
    eqs: &NormalEquations<'_>,
    cols: &[usize],
    targets: &[usize],
    factor: &[f64],
    diag: &[f64],
    sol: &[f64],
) -> f64 {
    let (k, m) = (cols.len(), targets.len());
    // ||X w - t||^2 = t^T t - 2 w^T r + w^T G w, with w^T G w from the pristine diagonal and
    // strict lower rows: w^T G w = sum_a w_a (G_aa w_a + 2 G[a, 0..a] . w[0..a]).
    // Every target's terms are divided by `m`, so that summing finite energies (each at most
    // `f64::MAX`) cannot overflow into `inf / inf`.
    // Targets go four at a time, so each pristine row is read once per four (the dot of
    // each target is computed exactly as alone: separate accumulators, same order).
    let (mut num, mut den) = (0.0, 0.0);
    let per_target = 1.0 / m.max(1) as f64;
    let mut wgw = [0.0f64; 4];
    for first in (0..m).step_by(4) {
        let group = (m - first).min(4);
        wgw[..group].fill(0.0);
        for a in 0..k {
            let row = Strided::new(factor, pristine_row(k, a).start, 1);
            let w_of = |j: usize| &sol[(first + j.min(group - 1)) * k..];
            let offs = if group == 4 {
                dots::<4>(
                    row,
                    core::array::from_fn(|j| Strided::new(w_of(j), 0, 1)),
                    a,
                )
            } else {
                core::array::from_fn(|j| {
                    if j < group {
                        dot(row, Strided::new(w_of(j), 0, 1), a)
                    } else {
                        0.0
                    }
                })
            };
            for j in 0..group {
                let wa = sol[(first + j) * k + a];
                wgw[j] += wa * (diag[a] * wa + 2.0 * offs[j]);
            }
        }
        for j in 0..group {
            let (o, to) = (first + j, targets[first + j]);
            let w = &sol[o * k..(o + 1) * k];
            let tt = eqs.target_sq_sums[to];
            let mut wr = 0.0;
            for (a, &ca) in cols.iter().enumerate() {
                wr += w[a] * eqs.cross.at(ca, to);
            }
            num += (tt - 2.0 * wr + wgw[j]).max(0.0) * per_target;
            den += tt * per_target;
        }
    }
    if den > 0.0 { num / den } else { 0.0 }
}

/// The shapes, the indices and the scratch length of a ridge solve (in the order
/// [`ridge_solve`] documents).
fn check_shapes(
    eqs: &NormalEquations<'_>,
    cols: &[usize],
    targets: &[usize],
    weights: (usize, usize),
    scratch: usize,
) -> Result<(), LstsqError> {
    let d = eqs.gram.rows();
    let t = eqs.cross.cols();
    let (k, m) = (cols.len(), targets.len());
    let shapes = [
        (Operand::Gram, (d, d), eqs.gram.shape()),
        (Operand::Cross, (d, t), eqs.cross.shape()),
        (Operand::TargetSqSums, (t, 1), (eqs.target_sq_sums.len(), 1)),
        (Operand::Weights, (m, k), weights),
    ];
    for (operand, expected, found) in shapes {
        if expected != found {
            return Err(LstsqError::ShapeMismatch {
                operand,
                expected,
                found,
            });
        }
    }
    check_indices(IndexList::Cols, cols, d)?;
    check_indices(IndexList::Targets, targets, t)?;
    let needed = ridge_solve_scratch_len(k, m);
    if scratch < needed {
        return Err(LstsqError::ScratchTooSmall {
            needed,
            provided: scratch,
        });
    }
    Ok(())
}

/// Solves the ridge problem `(G[c, c] + lambda I) W^T = R[c, targets]` (see the module docs)
/// into `weights` (`targets.len() x cols.len()`, any strides), using `scratch` of at least
/// [`ridge_solve_scratch_len`]`(cols.len(), targets.len())` elements.
///
/// Errors are checked in this order, before anything is computed: ridge params, shapes,
/// indices (range, then duplicates; `cols` before `targets`), scratch, finiteness. Then the
/// factorization may fail with [`LstsqError::NotPositiveDefinite`] after its retries. A
/// ridge of 0 (all selected diagonals 0 and no absolute ridge) is never retried.
pub fn ridge_solve(
    eqs: NormalEquations<'_>,
    cols: &[usize],
    targets: &[usize],
    params: RidgeParams,
    mut weights: MatMut<'_, f64>,
    scratch: &mut [f64],
) -> Result<RidgeInfo, LstsqError> {
    let (rel, abs) = (params.relative_ridge, params.absolute_ridge);
    let invalid = LstsqError::InvalidRidge {
        relative: rel,
        absolute: abs,
    };
    let usable = |v: f64| v.is_finite() && v >= 0.0;
    if !usable(rel) || !usable(abs) {
        return Err(invalid);
    }
    check_shapes(&eqs, cols, targets, weights.shape(), scratch.len())?;
    let (k, m) = (cols.len(), targets.len());

    let (factor, rest) = scratch.split_at_mut(k * k);
    let (sol, rest) = rest.split_at_mut(m * k);
    let diag = &mut rest[..k];
    let mean_diag = copy_gram_block(eqs.gram, cols, factor, diag)?;
    check_targets_finite(&eqs, cols, targets)?;

    let first_ridge = rel * mean_diag.max(0.0) + abs;
    if !first_ridge.is_finite() {
        return Err(invalid);
    }

    let retried = with_ridge_retries(first_ridge, params.max_retries, |ridge| {
        for a in 0..k {
            factor.copy_within(pristine_row(k, a), a * k);
            let v = diag[a] + ridge;
            if !v.is_finite() {
                return Err(Attempt::Failed(LstsqError::NonFinite {
                    operand: Operand::Gram,
                    row: cols[a],
                    col: cols[a],
                }));
            }
            factor[a * k + a] = v;
        }
        let view = MatMut::new(&mut *factor, k, k).expect("k x k fits in k * k");
        cholesky_unchecked(view, params.cholesky).map_err(|fail| Attempt::NonPositivePivot {
            index: fail.index,
            value: fail.value,
        })
    })
    .map_err(|e| match e {
        RetryError::Exhausted {
            index,
            pivot,
            ridge,
            retries,
        } => LstsqError::NotPositiveDefinite {
            index,
            column: cols[index],
            pivot,
            ridge,
            retries,
        },
        RetryError::Failed(e) => e,
    })?;
    let (info, ridge, retries) = (retried.value, retried.ridge, retried.retries);

    // W^T as a k x m view over `sol`, whose row o (contiguous) is the weights of target o.
    for (o, &to) in targets.iter().enumerate() {
        for (a, &ca) in cols.iter().enumerate() {
            sol[o * k + a] = eqs.cross.at(ca, to);
        }
    }
    if k > 0 && m > 0 {
        let l = MatRef::new(&*factor, k, k).expect("k x k fits in k * k");
        let mut wt = MatMut::from_strided(&mut *sol, k, m, 1, k).expect("W^T fits in m * k");
        solve_lower_unchecked(l, wt.reborrow());
        solve_lower_transpose_unchecked(l, wt);
    }

    let relative_residual = relative_residual(&eqs, cols, targets, factor, diag, sol);

    if let Some(pos) = sol[..m * k].iter().position(|v| !v.is_finite()) {
        return Err(LstsqError::SolutionOverflow {
            target: pos / k.max(1),
            ridge,
        });
    }
    for o in 0..m {
        for a in 0..k {
            *weights.at_mut(o, a) = sol[o * k + a];
        }
    }
    Ok(RidgeInfo {
        ridge,
        min_pivot: info.min_pivot,
        max_pivot: info.max_pivot,
        relative_residual,
        retries,
    })
}
