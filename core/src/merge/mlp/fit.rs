//! Step 2: the sequential least-squares fit of every merged layer, block by block, in the
//! primal or the dual form (see the [module docs](super)), over the data passes of the
//! in-place source.
//!
//! For each layer the permute-and-average weights `W0` are written into the output buffer
//! first (they are the ridge's prior; a layer that only reads exact copies of the models'
//! units keeps them, see [`block_is_copy`](crate::merge::prior::block_is_copy)); each block
//! then asks the source for its moments over the samples: the merged network's own
//! activations as inputs (from the layers already fitted), A's and B's pre-activations for
//! the targets, and `e = t - W0 x` in f64. The solved update is added to `W0` in f64 and
//! stored in f32, as the host stores it.

use super::error::MlpMergeError;
use super::layout::Layout;
use super::plan::{Block, Columns, Input};
use super::source::{InPlaceSource, residual};
use super::{LayerFitInfo, MAX_HIDDEN, RidgeToward, Samples};
use crate::linalg::{
    MatMut, MatRef, PackedError, cholesky_packed, packed_index, packed_len, solve_packed,
};
use crate::lstsq::dual::{DualError, DualParams, DualSamples, dual_factor, dual_solve};
use crate::lstsq::{Attempt, RetryError, with_ridge_retries};
use crate::merge::pass::{
    ColumnSet, FitMoments, FitPass, FitWants, GramOut, InputForm, Moments, Pass, PassSource,
    TargetForm,
};
use crate::merge::prior::{UnitWeights, write_prior_row};
use crate::merge::sources::{RowSource, UnitLayout};

/// What one block's solve reports: dual or not, ridge, retries.
type BlockReport = (bool, f64, u32);

/// Fitted layer `f`'s block with its columns: what every pass of the block shares.
struct BlockFit<'b> {
    f: usize,
    block: &'b Block,
    cols: &'b Columns,
}

impl BlockFit<'_> {
    /// A fit pass over the block's columns (without the bias column if `bias` is false) for
    /// `rows`, wanting `wants`.
    fn pass<'p>(
        &self,
        layers: &'p [usize; 1],
        channels: &'p [core::ops::Range<usize>; 2],
        bias: bool,
        rows: core::ops::Range<usize>,
        wants: FitWants,
    ) -> Pass<'p> {
        let target = if wants.cross {
            TargetForm::Residual
        } else {
            TargetForm::Targets
        };
        Pass::Fit(FitPass {
            layers,
            columns: ColumnSet {
                channels,
                patch: 1,
                bias,
            },
            rows,
            input: InputForm::Merged,
            target,
            wants,
        })
    }

    fn singular(&self, index: usize, pivot: f64, ridge: f64, retries: u32) -> MlpMergeError {
        MlpMergeError::Singular {
            layer: self.f,
            first_row: self.block.rows.start,
            index,
            pivot,
            ridge,
            retries,
        }
    }

    fn dual_error(&self, error: DualError) -> MlpMergeError {
        match error {
            DualError::NotPositiveDefinite {
                index,
                pivot,
                ridge,
                retries,
            } => self.singular(index, pivot, ridge, retries),
            error => MlpMergeError::DualSolve {
                layer: self.f,
                first_row: self.block.rows.start,
                error,
            },
        }
    }
}

/// Stores `W0 + delta` (f64, rounded to f32) for row `r` of fitted layer `f`: `delta(a)` for
/// block column `a`, the bias last.
fn store(
    source: &InPlaceSource<'_>,
    fit: &BlockFit<'_>,
    r: usize,
    out: &mut [f32],
    delta: impl Fn(usize) -> f64,
) {
    let plan = source.plan;
    let in_width = plan.input_width(plan.io(fit.f).0);
    let row = plan.weight_range(fit.f).start + r * in_width;
    let cols = fit.cols;
    for a in 0..cols.inputs() {
        let i = row + cols.at(a);
        out[i] = (f64::from(out[i]) + delta(a)) as f32;
    }
    if let Some(b) = plan.bias_range(fit.f) {
        let i = b.start + r;
        out[i] = (f64::from(out[i]) + delta(cols.inputs())) as f32;
    }
}

/// Writes the permute-and-average weights of `block` of fitted layer `f` (or zeros, with a
/// zero prior) into the output buffer, through the core's prior writer: the columns the block
/// may not read stay zero.
fn block_prior(
    source: &InPlaceSource<'_>,
    f: usize,
    block: &Block,
    cols: &Columns,
    out: &mut [f32],
) {
    let plan = source.plan;
    let (input, _) = plan.io(f);
    let upto = f.min(plan.hidden.len());
    let in_width = plan.input_width(input);
    let orig_in = match input {
        Input::Samples => plan.inputs,
        Input::Hidden(g) => plan.hidden[g],
    };
    let layout_in = match input {
        Input::Samples => None,
        Input::Hidden(g) => Some(Layout::of(plan, source.indices, g)),
    };
    let (la, lb) = (source.a[upto], source.b[upto]);
    let wa = |u: usize| -> UnitWeights<'_> {
        (
            &la.weight[u * orig_in..(u + 1) * orig_in],
            la.bias.map(|b| b[u]),
        )
    };
    let wb = |u: usize| -> UnitWeights<'_> {
        (
            &lb.weight[u * orig_in..(u + 1) * orig_in],
            lb.bias.map(|b| b[u]),
        )
    };
    let place = |slot: usize| cols.contains(slot).then_some(slot);
    let place_a = |i: usize| place(layout_in.as_ref().map_or(i, |l| l.slot_a(i)));
    let place_b = |i: usize| place(layout_in.as_ref().map_or(i, |l| l.slot_b(i)));
    let weight = plan.weight_range(f);
    let (weights, biases) = out.split_at_mut(weight.end);
    let bias_start = plan.bias_range(f).map(|b| b.start - weight.end);
    for r in block.rows.clone() {
        let row_source = match source.params.ridge_toward {
            RidgeToward::Average => source.source_of_row(f, r),
            RidgeToward::Zero => RowSource::NONE,
        };
        let start = weight.start + r * in_width;
        write_prior_row(
            row_source,
            [&wa, &wb],
            [&place_a, &place_b],
            1,
            &mut weights[start..start + in_width],
            bias_start.map(|b| &mut biases[b + r]),
        );
    }
}

/// Accumulates the block's packed Gram through the source.
fn gram_pass(
    source: &mut InPlaceSource<'_>,
    fit: &BlockFit<'_>,
    out: &[f32],
    gram: &mut [f64],
    scratch: &mut [f64],
) -> Result<(), MlpMergeError> {
    gram.fill(0.0);
    let wants = FitWants {
        gram: true,
        ..FitWants::default()
    };
    let layers = [fit.f];
    let pass = fit.pass(
        &layers,
        &fit.cols.ranges,
        fit.cols.bias,
        fit.block.rows.clone(),
        wants,
    );
    let mut moments = Moments::Fit(FitMoments {
        gram: GramOut::Packed(gram),
        ..FitMoments::none()
    });
    source.run(&pass, out, &mut moments, scratch)
}

/// The primal solve of one block: the packed Gram of its columns over the samples, factored
/// with the ridge rule, then the right-hand sides `X^T E` in chunks of rows.
fn primal(
    source: &mut InPlaceSource<'_>,
    fit: &BlockFit<'_>,
    out: &mut [f32],
    work: &mut [f64],
) -> Result<BlockReport, MlpMergeError> {
    let plan = source.plan;
    let (k, rows) = (fit.cols.len(), fit.block.rows.clone());
    let chunk = plan.chunk(rows.len());
    let (gram, rest) = work.split_at_mut(packed_len(k));
    let (rhs, scratch) = rest.split_at_mut(k * chunk);
    gram_pass(source, fit, out, gram, scratch)?;
    // lambda = relative * mean(diag G[c, c]), each term divided by k first.
    let mut mean = 0.0;
    for a in 0..k {
        mean += gram[packed_index(a, a)] / k as f64;
    }
    let first_ridge = source.params.relative_ridge * mean.max(0.0);
    if !first_ridge.is_finite() {
        return Err(fit.singular(0, f64::NAN, first_ridge, 0));
    }
    // The factorization overwrites the Gram: a retry accumulates it again.
    let mut fresh = true;
    let max_retries = source.params.max_retries;
    let retried = with_ridge_retries(first_ridge, max_retries, |ridge| {
        if !fresh {
            gram_pass(source, fit, out, gram, scratch).map_err(Attempt::Failed)?;
        }
        fresh = false;
        for a in 0..k {
            gram[packed_index(a, a)] += ridge;
        }
        cholesky_packed(gram, k).map_err(|e| match e {
            PackedError::NonPositivePivot { index, value } => {
                Attempt::NonPositivePivot { index, value }
            }
            _ => Attempt::Failed(MlpMergeError::SizeOverflow),
        })
    })
    .map_err(|e| match e {
        RetryError::Exhausted {
            index,
            pivot,
            ridge,
            retries,
        } => fit.singular(index, pivot, ridge, retries),
        RetryError::Failed(e) => e,
    })?;
    let mut r0 = rows.start;
    while r0 < rows.end {
        let r1 = (r0 + chunk).min(rows.end);
        let c = r1 - r0;
        let rhs = &mut rhs[..k * c];
        rhs.fill(0.0);
        let wants = FitWants {
            cross: true,
            ..FitWants::default()
        };
        let layers = [fit.f];
        let pass = fit.pass(&layers, &fit.cols.ranges, fit.cols.bias, r0..r1, wants);
        let mut moments = Moments::Fit(FitMoments {
            cross: Some(&mut *rhs),
            ..FitMoments::none()
        });
        source.run(&pass, out, &mut moments, scratch)?;
        let view = MatMut::new(&mut *rhs, k, c).map_err(|_| MlpMergeError::SizeOverflow)?;
        solve_packed(gram, k, view).map_err(|_| MlpMergeError::SizeOverflow)?;
        for (ci, r) in (r0..r1).enumerate() {
            store(source, fit, r, out, |a| rhs[a * c + ci]);
        }
        r0 = r1;
    }
    Ok((false, retried.ridge, retried.retries))
}

/// The dual solve of one block over the samples `x` (`N x inputs`, the block's columns
/// without the bias): the packed kernel, then `Z = K^{-1} E` in chunks of rows (the targets
/// from the source, `E = T - X W0^T` here) and `W = W0 + (X^T Z)^T`.
fn dual<X: DualSamples>(
    source: &mut InPlaceSource<'_>,
    fit: &BlockFit<'_>,
    x: X,
    out: &mut [f32],
    kernel: &mut [f64],
    z: &mut [f64],
    scratch: &mut [f64],
) -> Result<BlockReport, MlpMergeError> {
    let plan = source.plan;
    let n = plan.samples;
    let params = DualParams::default()
        .with_relative_ridge(source.params.relative_ridge)
        .with_max_retries(source.params.max_retries);
    let factor = dual_factor(&x, fit.cols.bias, params, kernel).map_err(|e| fit.dual_error(e))?;
    let rows = fit.block.rows.clone();
    let chunk = plan.chunk(rows.len());
    let ni = fit.cols.inputs();
    let mut r0 = rows.start;
    while r0 < rows.end {
        let r1 = (r0 + chunk).min(rows.end);
        let c = r1 - r0;
        let z = &mut z[..n * c];
        let wants = FitWants {
            targets: true,
            ..FitWants::default()
        };
        let layers = [fit.f];
        let pass = fit.pass(&layers, &fit.cols.ranges, fit.cols.bias, r0..r1, wants);
        let mut moments = Moments::Fit(FitMoments {
            targets: Some(&mut *z),
            ..FitMoments::none()
        });
        source.run(&pass, out, &mut moments, scratch)?;
        for s in 0..n {
            for (ci, r) in (r0..r1).enumerate() {
                // The targets were formed in f32: narrowing them back is exact.
                let t = z[s * c + ci] as f32;
                z[s * c + ci] = residual(plan, fit.f, r, t, fit.cols, out, |a| x.value(s, a));
            }
        }
        let view = MatMut::new(&mut *z, n, c).map_err(|_| MlpMergeError::SizeOverflow)?;
        dual_solve(kernel, n, view).map_err(|e| fit.dual_error(e))?;
        for (ci, r) in (r0..r1).enumerate() {
            store(source, fit, r, out, |a| {
                let mut d = 0.0;
                for s in 0..n {
                    let v = if a < ni { x.value(s, a) } else { 1.0 };
                    d += v * z[s * c + ci];
                }
                d
            });
        }
        r0 = r1;
    }
    Ok((true, factor.ridge, factor.retries))
}

/// Fits one block in the form its shape calls for.
fn fit_block(
    source: &mut InPlaceSource<'_>,
    fit: &BlockFit<'_>,
    out: &mut [f32],
    scratch: &mut [f64],
) -> Result<BlockReport, MlpMergeError> {
    let plan = source.plan;
    let n = plan.samples;
    if !plan.dual(fit.cols.len()) {
        return primal(source, fit, out, scratch);
    }
    let chunk = plan.chunk(fit.block.rows.len());
    let (kernel, rest) = scratch.split_at_mut(packed_len(n));
    let (z, rest) = rest.split_at_mut(n * chunk);
    match (plan.io(fit.f).0, source.samples) {
        (Input::Samples, Samples::F32(x)) => {
            let x = MatRef::new(x, n, plan.inputs).map_err(|_| MlpMergeError::SizeOverflow)?;
            dual(source, fit, x, out, kernel, z, rest)
        }
        (Input::Samples, Samples::U8 { data, table }) => {
            let x = ByteRows {
                data,
                table,
                cols: plan.inputs,
            };
            dual(source, fit, x, out, kernel, z, rest)
        }
        (Input::Hidden(_), _) => {
            // The bias column is implicit in the dual form: gather inputs only.
            let ni = fit.cols.inputs();
            let (xg, rest) = rest.split_at_mut(n * ni);
            let wants = FitWants {
                inputs: true,
                ..FitWants::default()
            };
            let layers = [fit.f];
            let pass = fit.pass(
                &layers,
                &fit.cols.ranges,
                false,
                fit.block.rows.clone(),
                wants,
            );
            let mut moments = Moments::Fit(FitMoments {
                inputs: Some(&mut *xg),
                ..FitMoments::none()
            });
            source.run(&pass, out, &mut moments, rest)?;
            let x = MatRef::new(&*xg, n, ni).map_err(|_| MlpMergeError::SizeOverflow)?;
            dual(source, fit, x, out, kernel, z, rest)
        }
    }
}

/// Byte samples read through their table, as the dual solve reads samples.
struct ByteRows<'a> {
    data: &'a [u8],
    table: &'a [f32; 256],
    cols: usize,
}

impl DualSamples for ByteRows<'_> {
    #[inline]
    fn shape(&self) -> (usize, usize) {
        (self.data.len() / self.cols.max(1), self.cols)
    }

    #[inline]
    fn value(&self, s: usize, j: usize) -> f64 {
        f64::from(self.table[usize::from(self.data[s * self.cols + j])])
    }
}

/// Fits every merged layer in order (hidden layers, then the heads) into `out`, over the
/// source's passes (its layouts set by the matching).
pub(super) fn fit_layers(
    source: &mut InPlaceSource<'_>,
    out: &mut [f32],
    scratch: &mut [f64],
) -> Result<heapless::Vec<LayerFitInfo, { MAX_HIDDEN + 2 }>, MlpMergeError> {
    let plan = source.plan;
    let mut infos = heapless::Vec::new();
    for f in 0..plan.fitted_layers() {
        let (input, _) = plan.io(f);
        let blocks = plan.blocks(f);
        for block in &blocks {
            block_prior(source, f, block, &plan.columns(input, block), out);
        }
        let mut info = LayerFitInfo {
            copied_blocks: 0,
            primal_blocks: 0,
            dual_blocks: 0,
            ridge: 0.0,
            retries: 0,
        };
        if plan.copies(f) {
            // The prior just written is the exact solution.
            info.copied_blocks = blocks.len();
        } else {
            for block in &blocks {
                let cols = plan.columns(input, block);
                let fit = BlockFit {
                    f,
                    block,
                    cols: &cols,
                };
                let (dual, ridge, retries) = fit_block(source, &fit, out, scratch)?;
                if dual {
                    info.dual_blocks += 1;
                } else {
                    info.primal_blocks += 1;
                }
                info.ridge = info.ridge.max(ridge);
                info.retries = info.retries.max(retries);
            }
        }
        let weight = plan.weight_range(f);
        let end = plan.bias_range(f).map_or(weight.end, |b| b.end);
        if let Some(i) = out[weight.start..end].iter().position(|v| !v.is_finite()) {
            return Err(MlpMergeError::NonFiniteResult {
                index: weight.start + i,
            });
        }
        // At most MAX_HIDDEN + 2 fitted layers.
        let _ = infos.push(info);
    }
    Ok(infos)
}
