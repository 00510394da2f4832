//! The least-squares fit of one merged layer from its accumulated sums (docs/ALGORITHM.md section 4).
//!
//! With `G = sum x x^T` over the layer's inputs in the merged layout (im2col patches, plus a
//! constant 1 column when the layer has a bias), `R = sum x t^T` against the targets in the
//! merged output layout and `sum t^2` per target, every output block is solved on its allowed
//! columns by ridge least squares ([`ridge_solve`]); the cross blocks stay exactly zero.
//! [`layer_loss`] evaluates `sum ||W x - t||^2` of any weights from the same sums, which is how
//! the report compares the fit with permute-and-average.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use super::blocks::OutputBlock;
use crate::linalg::{KernelError, MatMut, MatRef, symm_rows};
use crate::lstsq::{
    LstsqError, NormalEquations, RidgeInfo, RidgeParams, ridge_solve, ridge_solve_scratch_len,
};

/// The fitted weights of one output block.
#[derive(Debug, Clone)]
pub struct BlockFit {
    /// The block's output units in the merged layout.
    pub rows: Range<usize>,
    /// The input columns the block reads (increasing).
    pub cols: Vec<usize>,
    /// `rows.len() x cols.len()` weights, row-major.
    pub weights: Vec<f64>,
    /// The solve's report (ridge used, pivots, relative residual).
    pub info: RidgeInfo,
}

/// Why a layer could not be fitted.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FitError {
    /// The ridge solve of the block with these output rows failed.
    Solve {
        /// The block's first output row.
        first_row: usize,
        /// The solver's error.
        error: LstsqError,
    },
    /// Dense weights (or their product with the Gram) of the wrong length were given to
    /// [`layer_loss`].
    WeightsLength {
        /// Expected `outputs * columns`.
        expected: usize,
        /// Found.
        found: usize,
    },
    /// The caller's scratch is shorter than [`layer_loss_scratch_len`] asks for.
    ScratchTooSmall {
        /// Values needed.
        needed: usize,
        /// Values provided.
        provided: usize,
    },
    /// The Gram and the weights disagree in shape.
    Kernel(KernelError),
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FitError::Solve { first_row, error } => {
                write!(f, "output block from row {first_row}: {error}")
            }
            FitError::WeightsLength { expected, found } => {
                write!(
                    f,
                    "dense weights: expected {expected} values, found {found}"
                )
            }
            FitError::ScratchTooSmall { needed, provided } => {
                write!(
                    f,
                    "loss scratch: {needed} values needed, {provided} provided"
                )
            }
            FitError::Kernel(e) => write!(f, "loss: {e}"),
        }
    }
}

impl core::error::Error for FitError {}

/// Fits every output block of a layer.
///
/// A block whose inputs are all identically zero on the data (units dead on the merge data, in
/// a layer without bias) has a zero Gram block, so the relative ridge is zero too and the
/// block's normal equations alone are singular. Any weights fit such inputs equally well;
/// when `params` has no absolute ridge, such a block is solved with an absolute ridge of 1
/// (in the units of `G`), which gives the minimum-norm solution `W = R[c, rows]`: zero for
/// sums of real data (`R[c, o] = sum x_c t_o = 0` when `x_c` is always 0). A caller that
/// regresses on `R - G W0` (a ridge towards `W0`) thus keeps `W0` there.
pub fn fit_layer(
    eqs: NormalEquations<'_>,
    blocks: &[OutputBlock],
    params: RidgeParams,
) -> Result<Vec<BlockFit>, FitError> {
    blocks
        .iter()
        .map(|b| {
            let targets: Vec<usize> = b.rows.clone().collect();
            let mut weights = vec![0.0; targets.len() * b.cols.len()];
            let mut scratch = vec![0.0; ridge_solve_scratch_len(b.cols.len(), targets.len())];
            let w = MatMut::new(&mut weights, targets.len(), b.cols.len()).expect("sized");
            let dead = params.absolute_ridge == 0.0
                && !b.cols.is_empty()
                && b.cols.iter().all(|&c| eqs.gram.get(c, c) == Some(0.0));
            let params = if dead {
                params.with_absolute_ridge(1.0)
            } else {
                params
            };
            let info =
                ridge_solve(eqs, &b.cols, &targets, params, w, &mut scratch).map_err(|error| {
                    FitError::Solve {
                        first_row: b.rows.start,
                        error,
                    }
                })?;
            Ok(BlockFit {
                rows: b.rows.clone(),
                cols: b.cols.clone(),
                weights,
                info,
            })
        })
        .collect()
}

/// The fitted blocks as one dense `outputs x columns` row-major matrix, zero outside the
/// blocks (for checks and for writing files; the forward pass of merged models reads blocks).
pub fn dense_weights(fits: &[BlockFit], outputs: usize, columns: usize) -> Vec<f64> {
    let mut w = vec![0.0; outputs * columns];
    for f in fits {
        for (r, row) in f.rows.clone().enumerate() {
            for (c, &col) in f.cols.iter().enumerate() {
                w[row * columns + col] = f.weights[r * f.cols.len() + c];
            }
        }
    }
    w
}

/// Scratch `f64` values [`layer_loss`] needs for `outputs x columns` dense weights (their
/// product with the Gram).
pub fn layer_loss_scratch_len(columns: usize, outputs: usize) -> usize {
    columns.saturating_mul(outputs)
}

fn check_weights(eqs: &NormalEquations<'_>, w: &[f64], outputs: usize) -> Result<(), FitError> {
    let d = eqs.gram.rows();
    if w.len() != outputs * d {
        return Err(FitError::WeightsLength {
            expected: outputs * d,
            found: w.len(),
        });
    }
    Ok(())
}

/// `sum_o ||X w_o - t_o||^2` for dense weights `w` (`outputs x columns`, row `o` fitting target
/// `o`), from the sums alone: `t^T t - 2 w^T R_o + w^T G w`, summed over the outputs.
///
/// `W G` is formed by the blocked symmetric product [`symm_rows`] in `scratch` (at least
/// [`layer_loss_scratch_len`] values), which reads the Gram's lower triangle row by row; the
/// rest is `O(outputs x columns)` ([`layer_loss_with_product`]). [`layer_loss_reference`] is
/// the scalar twin.
pub fn layer_loss(
    eqs: NormalEquations<'_>,
    w: &[f64],
    outputs: usize,
    scratch: &mut [f64],
) -> Result<f64, FitError> {
    check_weights(&eqs, w, outputs)?;
    let d = eqs.gram.rows();
    let needed = layer_loss_scratch_len(d, outputs);
    if scratch.len() < needed {
        return Err(FitError::ScratchTooSmall {
            needed,
            provided: scratch.len(),
        });
    }
    let wg = &mut scratch[..needed];
    let wv = MatRef::new(w, outputs, d).expect("length checked");
    symm_rows(
        eqs.gram,
        wv,
        MatMut::new(wg, outputs, d).expect("length checked"),
    )
    .map_err(FitError::Kernel)?;
    layer_loss_with_product(eqs, w, wg, outputs)
}

/// [`layer_loss`] when the caller already has `wg = W G` (`outputs x columns`, e.g. from
/// [`symm_rows`] on other threads, or the product of prior weights a ridge towards them needs):
/// `O(outputs x columns)`.
pub fn layer_loss_with_product(
    eqs: NormalEquations<'_>,
    w: &[f64],
    wg: &[f64],
    outputs: usize,
) -> Result<f64, FitError> {
    check_weights(&eqs, w, outputs)?;
    if wg.len() != w.len() {
        return Err(FitError::WeightsLength {
            expected: w.len(),
            found: wg.len(),
        });
    }
    let d = eqs.gram.rows();
    let mut total = 0.0;
    for o in 0..outputs {
        let wo = &w[o * d..(o + 1) * d];
        let go = &wg[o * d..(o + 1) * d];
        let mut quad = 0.0;
        let mut lin = 0.0;
        for i in 0..d {
            quad += wo[i] * go[i];
            lin += wo[i] * eqs.cross.at(i, o);
        }
        total += eqs.target_sq_sums[o] - 2.0 * lin + quad;
    }
    Ok(total)
}

/// Scalar twin of [`layer_loss`] (the oracle of its tests): the quadratic form read entry by
/// entry from the lower triangle.
pub fn layer_loss_reference(
    eqs: NormalEquations<'_>,
    w: &[f64],
    outputs: usize,
) -> Result<f64, FitError> {
    check_weights(&eqs, w, outputs)?;
    let d = eqs.gram.rows();
    let g = |i: usize, j: usize| {
        if i >= j {
            eqs.gram.at(i, j)
        } else {
            eqs.gram.at(j, i)
        }
    };
    let mut total = 0.0;
    for o in 0..outputs {
        let wo = &w[o * d..(o + 1) * d];
        let mut quad = 0.0;
        let mut lin = 0.0;
        for i in 0..d {
            if wo[i] == 0.0 {
                continue;
            }
            lin += wo[i] * eqs.cross.at(i, o);
            let mut gi = 0.0;
            for j in 0..d {
                gi += g(i, j) * wo[j];
            }
            quad += wo[i] * gi;
        }
        total += eqs.target_sq_sums[o] - 2.0 * lin + quad;
    }
    Ok(total)
}
