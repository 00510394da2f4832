//! The solves of one fit pass: from the accumulated moments (the primal form, one ridge solve
//! per output block, threaded) or from the kept rows (the dual form, in sample space), with
//! the ridge towards the permute-and-average weights or towards zero, blocks that read only
//! exact channels kept as copies (the core's exact-copy rule), and each layer's report.

use std::time::Instant;

use pleas_core::graph::Weights;
use pleas_core::linalg::{MatMut, MatRef, symm_rows};
use pleas_core::lstsq::dual::{DualParams, dual_ridge_scratch_len, dual_ridge_solve};
use pleas_core::lstsq::{LstsqError, NormalEquations, RidgeParams};
use pleas_core::merge::RidgeToward;
use pleas_core::merge::blocks::OutputBlock;
use pleas_core::merge::fit::{FitError, fit_layer, layer_loss_with_product};
use pleas_core::merge::pass::{FitMoments, GramOut, Moments};
use pleas_core::merge::prior::block_is_copy;

use super::merged_model::{MergedLayer, MergedModel};
use super::report::LayerReport;
use super::schedule::reads_exact;
use crate::error::Error;
use crate::par::{Parallelism, map_jobs};

/// The merge step the solves belong to, in errors.
const STAGE: &str = "least squares";

/// One block's fitted weights (`rows x cols`, bias last), ridge, and loss where the solve
/// measured it.
type Fitted = (Vec<f64>, f64, Option<f64>);

/// What the solves of one pass share.
pub(crate) struct FitPassInputs<'a> {
    /// The merged network.
    pub(crate) merged: &'a MergedModel,
    /// Relative ridge.
    pub(crate) ridge: f64,
    /// What the ridge pulls towards.
    pub(crate) toward: RidgeToward,
    /// Exact channels per merged node ([`exact_channels`](super::schedule::exact_channels)).
    pub(crate) exact: &'a [Vec<bool>],
    /// The permute-and-average weights.
    pub(crate) average: &'a Weights,
    /// Threads for the block solves and products.
    pub(crate) par: Parallelism,
}

/// Solves the fits of one pass, stores the weights and reports each layer: from the normal
/// equations of the accumulated moments, or, when the pass kept its rows (fewer rows than
/// columns), in sample space from the rows ([`sample_space_fit`]).
///
/// With the ridge towards the permute-and-average weights, a block whose columns all read
/// exact channels keeps those weights without a solve
/// ([`block_is_copy`]): each of its rows' targets is the same combination of its sources'
/// outputs that the prior computes from exact copies of their inputs, so the prior has zero
/// loss and zero ridge penalty and is the problem's unique minimiser. Solving instead would
/// set the directions the merge data leaves unexcited from f32 rounding divided by the ridge,
/// which on rank-deficient inputs (units that are functions of a few others) moves the model
/// off its copy.
pub(crate) fn solve_fit(
    inputs: &FitPassInputs<'_>,
    layer_ids: &[usize],
    moments: &FitTotals,
    weights: &mut Weights,
    started: Instant,
) -> Result<Vec<LayerReport>, Error> {
    let rows = moments.rows.as_ref();
    let mut reports = Vec::new();
    let mut offset = 0;
    let solve_time = started.elapsed().as_secs_f64();
    for &li in layer_ids {
        let layer = &inputs.merged.layers[li];
        let fit = LayerFit::new(inputs, moments, layer, offset);
        let fits = fit.fits(rows)?;
        let mut report = fit.store(&fits, weights)?;
        report.seconds = solve_time / layer_ids.len() as f64;
        reports.push(report);
        offset += layer.outputs;
    }
    Ok(reports)
}

/// One layer of a fit pass: its prior, its copies and the moments of its targets.
struct LayerFit<'a> {
    inputs: &'a FitPassInputs<'a>,
    moments: &'a FitTotals,
    layer: &'a MergedLayer,
    name: String,
    /// The layer's first target column in the pass.
    offset: usize,
    /// The permute-and-average weights, dense.
    avg_dense: Vec<f64>,
    /// `W0 G`.
    avg_g: Vec<f64>,
    /// Per output, the permute-and-average loss `||X w0_o - t_o||^2`, from `W0 G`.
    avg_losses: Vec<f64>,
    /// Per block: whether it keeps its prior without a solve.
    copies: Vec<bool>,
}

impl<'a> LayerFit<'a> {
    fn new(
        inputs: &'a FitPassInputs<'a>,
        moments: &'a FitTotals,
        layer: &'a MergedLayer,
        offset: usize,
    ) -> Self {
        let merged = inputs.merged;
        let name = merged.graph.node(layer.node).name.clone();
        // Ridge towards the permute-and-average weights W0: solve for W - W0 with the cross
        // moment R - G W0 (per block, on its own columns), so that directions the merge data
        // does not excite keep W0 instead of shrinking to zero. `W0 G` also gives W0's loss.
        let avg_dense = layer.dense(inputs.average);
        let avg_g = moments.product(&avg_dense, layer.outputs, inputs.par);
        let avg_losses = moments.output_losses(offset, &avg_dense, &avg_g, layer.outputs);
        // Blocks whose prior is their exact solution (see `solve_fit`).
        let input = &inputs.exact[merged.graph.node(layer.node).inputs[0]];
        let copies = layer
            .blocks
            .iter()
            .map(|b| block_is_copy(inputs.toward, reads_exact(layer, b, input)))
            .collect();
        Self {
            inputs,
            moments,
            layer,
            name,
            offset,
            avg_dense,
            avg_g,
            avg_losses,
            copies,
        }
    }

    /// The prior of the solves (`None`: the ridge pulls towards zero).
    fn prior(&self) -> Option<&[f64]> {
        match self.inputs.toward {
            RidgeToward::Average => Some(&self.avg_dense),
            RidgeToward::Zero => None,
        }
    }

    /// The blocks to solve (not copies).
    fn to_solve(&self) -> Vec<usize> {
        (0..self.copies.len())
            .filter(|&i| !self.copies[i])
            .collect()
    }

    /// Every block's weights, ridge and loss: the prior's (no ridge, its own loss) for
    /// copies, else the solve's.
    fn fits(&self, rows: Option<&KeptRows>) -> Result<Vec<Fitted>, Error> {
        let to_solve = self.to_solve();
        let solved = if to_solve.is_empty() {
            Vec::new()
        } else if let Some(rows) = rows {
            self.solve_dual(&to_solve, rows)?
        } else {
            self.solve_primal(&to_solve)?
        };
        let d = self.moments.d;
        let mut solved = solved.into_iter();
        let mut fits: Vec<Fitted> = Vec::with_capacity(self.layer.blocks.len());
        for (b, &copy) in self.layer.blocks.iter().zip(&self.copies) {
            if copy {
                let w0 = &self.avg_dense;
                let w = b
                    .rows
                    .clone()
                    .flat_map(|o| b.cols.iter().map(move |&j| w0[o * d + j]))
                    .collect();
                let loss = b.rows.clone().map(|o| self.avg_losses[o]).sum();
                fits.push((w, 0.0, Some(loss)));
            } else {
                fits.push(solved.next().ok_or_else(|| Error::Merge {
                    stage: STAGE,
                    reason: format!("layer `{}`: a block's fit is missing", self.name),
                })?);
            }
        }
        Ok(fits)
    }

    /// The blocks `to_solve` in sample space from the pass's kept rows.
    fn solve_dual(&self, to_solve: &[usize], rows: &KeptRows) -> Result<Vec<Fitted>, Error> {
        let m = self.moments;
        let blocks = to_solve.iter().map(|&i| &self.layer.blocks[i]);
        let fits = sample_space_fit(
            blocks,
            rows,
            (m.d, m.t, self.offset),
            self.prior(),
            self.inputs.ridge,
        )
        .map_err(|e| Error::core_at(STAGE, format!("layer `{}`", self.name), e))?;
        Ok(fits
            .into_iter()
            .map(|(w, ridge)| (w, ridge, None))
            .collect())
    }

    /// The blocks `to_solve` from the normal equations, one job per block.
    fn solve_primal(&self, to_solve: &[usize]) -> Result<Vec<Fitted>, Error> {
        let (m, offset, layer) = (self.moments, self.offset, self.layer);
        let (d, t) = (m.d, m.t);
        let prior = self.prior();
        let mut cross_fit = m.r.clone();
        if prior.is_some() {
            // W0 is zero outside each block's columns, so row o of `W0 G` at column i is
            // the block's sum over its own columns.
            for b in &layer.blocks {
                for o in b.rows.clone() {
                    for &i in &b.cols {
                        cross_fit[i * t + offset + o] -= self.avg_g[o * d + i];
                    }
                }
            }
        }
        // With the prior, the solve regresses the residual targets `t - X w0`, whose
        // energies are the permute-and-average losses: its residual is then the fitted
        // weights' loss relative to them, and no further `W G` product is needed.
        let mut energies = m.tt.to_vec();
        if prior.is_some() {
            for (o, &l) in self.avg_losses.iter().enumerate() {
                energies[offset + o] = l;
            }
        }
        let eqs = NormalEquations {
            gram: MatRef::new(&m.g, d, d).expect("d x d"),
            cross: MatRef::new(&cross_fit, d, t).expect("d x t"),
            target_sq_sums: &energies,
        };
        let blocks: Vec<OutputBlock> = to_solve
            .iter()
            .map(|&i| {
                let b = &layer.blocks[i];
                OutputBlock {
                    rows: b.rows.start + offset..b.rows.end + offset,
                    cols: b.cols.clone(),
                }
            })
            .collect();
        let params = RidgeParams::default().with_relative_ridge(self.inputs.ridge);
        // Blocks are independent solves: one job each, results in block order.
        let solves = map_jobs(self.inputs.par, blocks.len(), |k| {
            fit_layer(eqs, &blocks[k..k + 1], params)
        });
        let fitted: Result<Vec<Vec<_>>, FitError> = solves.into_iter().collect();
        let mut fits: Vec<_> = fitted
            .map_err(|e| self.solve_error(e))?
            .into_iter()
            .flatten()
            .collect();
        if let Some(w0) = prior {
            for (f, b) in fits
                .iter_mut()
                .zip(to_solve.iter().map(|&i| &layer.blocks[i]))
            {
                let nc = b.cols.len();
                for (r_i, o) in b.rows.clone().enumerate() {
                    for (c, &j) in b.cols.iter().enumerate() {
                        f.weights[r_i * nc + c] += w0[o * d + j];
                    }
                }
            }
        }
        Ok(fits
            .into_iter()
            .map(|f| {
                let energy: f64 = f.rows.clone().map(|o| energies[o]).sum();
                (
                    f.weights,
                    f.info.ridge,
                    Some(f.info.relative_residual * energy),
                )
            })
            .collect())
    }

    /// The error of a failed solve, with a hint where more ridge or data would help.
    fn solve_error(&self, e: FitError) -> Error {
        let hint = match e {
            FitError::Solve {
                error: LstsqError::NotPositiveDefinite { .. },
                ..
            } => format!(
                " (the merge data do not determine this block, and ridge {:e} is below the \
                 rounding of its Gram; a larger --ridge, e.g. the default 1e-6, or more merge \
                 data regularise it)",
                self.inputs.ridge
            ),
            _ => String::new(),
        };
        Error::core_at(STAGE, format!("layer `{}`{hint}", self.name), e)
    }

    /// Stores the blocks' weights and reports the layer: the losses of the fitted and the
    /// permute-and-average weights on this layer's targets; the fitted one from the solves
    /// where they measured it (of the f64 solution, before its f32 storage), else from the
    /// stored weights' product with the Gram.
    fn store(&self, fits: &[Fitted], weights: &mut Weights) -> Result<LayerReport, Error> {
        let (m, layer, offset) = (self.moments, self.layer, self.offset);
        let mut max_ridge: f64 = 0.0;
        for (bi, (w, ridge, _)) in fits.iter().enumerate() {
            layer.store_block(bi, w, weights);
            max_ridge = max_ridge.max(*ridge);
        }
        let o = layer.outputs;
        let energy = m.tt[offset..offset + o]
            .iter()
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        let fitted = match fits.iter().map(|f| f.2).sum::<Option<f64>>() {
            Some(loss) => loss.max(0.0) / energy,
            None => {
                let fitted_dense = layer.dense(weights);
                let fitted_g = m.product(&fitted_dense, o, self.inputs.par);
                m.relative_residual(offset, &fitted_dense, &fitted_g, o)
                    .map_err(|e| Error::core_at(STAGE, format!("layer `{}`", self.name), e))?
            }
        };
        let avg = self.avg_losses.iter().sum::<f64>().max(0.0) / energy;
        Ok(LayerReport {
            name: self.name.clone(),
            columns: m.d,
            outputs: o,
            ridge: max_ridge,
            relative_residual: fitted,
            average_relative_residual: avg,
            seconds: 0.0,
            own_input_relative_residual: None,
        })
    }
}

/// Why a sample-space fit failed.
#[derive(Debug, thiserror::Error)]
pub enum SampleSpaceError {
    /// The kept rows do not have the pass's shape.
    #[error("kept rows do not match {columns} columns and {targets} targets ({x} and {t} values)")]
    RowShape {
        /// Columns of the pass.
        columns: usize,
        /// Targets of the pass.
        targets: usize,
        /// Input values kept.
        x: usize,
        /// Target values kept.
        t: usize,
    },
    /// A view of the rows.
    #[error(transparent)]
    View(#[from] pleas_core::linalg::ViewError),
    /// The dual solve.
    #[error(transparent)]
    Dual(#[from] pleas_core::lstsq::dual::DualError),
}

/// The ridge fit of each of `blocks` (output blocks of one layer) in sample space
/// ([`pleas_core::lstsq::dual`]): `W = W0 + X_b^T (X_b X_b^T + lambda I)^{-1} (T_b - X_b W0^T)`
/// over the kept rows, `X_b` the block's columns, `T_b` its targets (columns `offset + rows` of
/// the pass's `t` targets; `shape` is `(d, t, offset)`), `W0` the prior (`None`: zero). The
/// ridge rule is the primal solve's (relative to the mean diagonal of the block's `X^T X`), so
/// both forms solve the same problem; here the directions the rows do not reach keep `W0`
/// exactly instead of being set by f32 rounding of a rank-deficient Gram. Returns each of
/// `blocks`' `rows x cols` weights and ridge.
fn sample_space_fit<'b>(
    blocks: impl ExactSizeIterator<Item = &'b OutputBlock>,
    rows: &KeptRows,
    shape: (usize, usize, usize),
    prior: Option<&[f64]>,
    ridge: f64,
) -> Result<Vec<(Vec<f64>, f64)>, SampleSpaceError> {
    let (d, t, offset) = shape;
    let n = rows.x.len() / d.max(1);
    if rows.x.len() != n * d || rows.t.len() != n * t {
        return Err(SampleSpaceError::RowShape {
            columns: d,
            targets: t,
            x: rows.x.len(),
            t: rows.t.len(),
        });
    }
    let mut out = Vec::with_capacity(blocks.len());
    for b in blocks {
        let (m, k) = (b.rows.len(), b.cols.len());
        let mut xb = Vec::with_capacity(n * k);
        for row in rows.x.chunks_exact(d) {
            xb.extend(b.cols.iter().map(|&j| row[j]));
        }
        let mut tb = Vec::with_capacity(n * m);
        for row in rows.t.chunks_exact(t) {
            tb.extend(b.rows.clone().map(|o| row[offset + o]));
        }
        // The rows and the prior are f32 values widened to f64: the solve reads them as
        // f64 either way.
        let pb: Option<Vec<f64>> = prior.map(|w0| {
            b.rows
                .clone()
                .flat_map(|o| b.cols.iter().map(move |&j| w0[o * d + j]))
                .collect()
        });
        let mut w = vec![0.0f64; m * k];
        let mut scratch = vec![0.0f64; dual_ridge_scratch_len(n, m)];
        let info = dual_ridge_solve(
            MatRef::new(&xb, n, k)?,
            false,
            MatRef::new(&tb, n, m)?,
            pb.as_deref().map(|p| MatRef::new(p, m, k)).transpose()?,
            DualParams::default().with_relative_ridge(ridge),
            MatMut::new(&mut w, m, k)?,
            &mut scratch,
        )?;
        out.push((w, info.factor.ridge));
    }
    Ok(out)
}

/// Relative residuals `||X W - T||^2 / ||T||^2` of the current weights of `layer_ids` on the
/// moments of one pass.
pub(crate) fn own_input_residuals(
    merged: &MergedModel,
    layer_ids: &[usize],
    moments: &FitTotals,
    weights: &Weights,
    par: Parallelism,
) -> Result<Vec<(String, f64)>, Error> {
    let stage = "diagnosis";
    let mut out = Vec::new();
    let mut offset = 0;
    for &li in layer_ids {
        let layer = &merged.layers[li];
        let o = layer.outputs;
        let w = layer.dense(weights);
        let wg = moments.product(&w, o, par);
        let residual = moments
            .relative_residual(offset, &w, &wg, o)
            .map_err(|e| Error::core(stage, e))?;
        out.push((merged.graph.node(layer.node).name.clone(), residual));
        offset += o;
    }
    Ok(out)
}

/// The rows of a fit pass with fewer rows than columns, `N x d` inputs and `N x t` targets
/// row-major, in sample order (f32 values widened).
pub(crate) struct KeptRows {
    x: Vec<f64>,
    t: Vec<f64>,
}

/// The totals of one fit pass, as the pass source fills them: lower-triangular Gram `g`
/// (`d x d`), cross moment `r` (`d x t`), per-target sums of squares `tt`, and the rows when
/// the pass keeps them.
pub(crate) struct FitTotals {
    d: usize,
    t: usize,
    g: Vec<f64>,
    r: Vec<f64>,
    tt: Vec<f64>,
    rows: Option<KeptRows>,
}

impl FitTotals {
    /// Zeroed totals of a pass with `d` columns and `t` targets, and room for `rows` rows
    /// when the pass keeps them. (The zeroed buffers are only touched when the source writes
    /// them, after its pass.)
    pub(crate) fn new(d: usize, t: usize, rows: Option<usize>) -> Self {
        Self {
            d,
            t,
            g: vec![0.0; d * d],
            r: vec![0.0; d * t],
            tt: vec![0.0; t],
            rows: rows.map(|n| KeptRows {
                x: vec![0.0; n * d],
                t: vec![0.0; n * t],
            }),
        }
    }

    /// The buffers a pass source fills.
    pub(crate) fn moments(&mut self) -> Moments<'_> {
        let (x, t) = match &mut self.rows {
            Some(r) => (Some(&mut r.x[..]), Some(&mut r.t[..])),
            None => (None, None),
        };
        Moments::Fit(FitMoments {
            gram: GramOut::Dense(&mut self.g),
            cross: Some(&mut self.r),
            target_sq_sums: Some(&mut self.tt),
            inputs: x,
            targets: t,
        })
    }

    /// `W G` for dense weights `w` (`outputs` rows of `d`), its rows split in fixed chunks
    /// over `par`'s threads: every row is computed the same way in any chunk, so the result
    /// does not depend on the thread count.
    fn product(&self, w: &[f64], outputs: usize, par: Parallelism) -> Vec<f64> {
        let d = self.r.len() / self.tt.len().max(1);
        let gram = MatRef::new(&self.g, d, d).expect("d x d");
        let chunks = outputs.div_ceil(PRODUCT_ROWS);
        let parts = map_jobs(par, chunks, |c| {
            let rows = c * PRODUCT_ROWS..((c + 1) * PRODUCT_ROWS).min(outputs);
            let n = rows.len();
            let mut out = vec![0.0; n * d];
            let wv = MatRef::new(&w[rows.start * d..rows.end * d], n, d).expect("n x d");
            symm_rows(gram, wv, MatMut::new(&mut out, n, d).expect("n x d")).expect("shapes agree");
            out
        });
        parts.concat()
    }

    /// Per output, `||X w_o - t_o||^2` (clamped at 0 against rounding) of dense weights `w`
    /// (`o x d`) with `wg = W G`, for the targets from column `offset` on.
    fn output_losses(&self, offset: usize, w: &[f64], wg: &[f64], o: usize) -> Vec<f64> {
        let t = self.tt.len();
        let d = self.r.len() / t.max(1);
        (0..o)
            .map(|k| {
                let (wk, gk) = (&w[k * d..(k + 1) * d], &wg[k * d..(k + 1) * d]);
                let (mut quad, mut lin) = (0.0, 0.0);
                for i in 0..d {
                    quad += wk[i] * gk[i];
                    lin += wk[i] * self.r[i * t + offset + k];
                }
                (self.tt[offset + k] - 2.0 * lin + quad).max(0.0)
            })
            .collect()
    }

    /// `||X W - T||^2 / ||T||^2` of dense weights `w` (`o x d`) with `wg = W G`, for the
    /// targets from column `offset` on.
    fn relative_residual(
        &self,
        offset: usize,
        w: &[f64],
        wg: &[f64],
        o: usize,
    ) -> Result<f64, pleas_core::merge::fit::FitError> {
        let t = self.tt.len();
        let d = self.r.len() / t.max(1);
        let cross = target_columns(&self.r, d, t, offset, o);
        let eqs = NormalEquations {
            gram: MatRef::new(&self.g, d, d).expect("d x d"),
            cross: MatRef::new(&cross, d, o).expect("d x o"),
            target_sq_sums: &self.tt[offset..offset + o],
        };
        let norm = self.tt[offset..offset + o]
            .iter()
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        Ok(layer_loss_with_product(eqs, w, wg, o)?.max(0.0) / norm)
    }
}

/// Rows of dense weights per job of [`FitTotals::product`] (a multiple of the kernel's block of
/// four; fixed, so the split never depends on the thread count).
const PRODUCT_ROWS: usize = 16;

/// Columns `offset .. offset + o` of the `d x t` cross moment `r`, as a `d x o` matrix.
fn target_columns(r: &[f64], d: usize, t: usize, offset: usize, o: usize) -> Vec<f64> {
    let mut cross = vec![0.0f64; d * o];
    for i in 0..d {
        cross[i * o..(i + 1) * o].copy_from_slice(&r[i * t + offset..i * t + offset + o]);
    }
    cross
}
