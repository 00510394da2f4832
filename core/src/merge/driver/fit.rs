//! Step 2: the sequential least-squares fit of every merged layer, block by block, in the
//! primal or the dual form, over the data passes of the source.
//!
//! For each layer the permute-and-average weights `W0` are written into the output buffer
//! first (they are the ridge's prior; a layer that only reads exact copies of the models'
//! units keeps them, see [`block_is_copy`](crate::merge::prior::block_is_copy)); each block
//! then asks the source for its moments over the samples: the merged network's own
//! activations as inputs (from the layers already fitted), A's and B's pre-activations for
//! the targets, and `e = t - W0 x` in f64. The solved update is added to `W0` in f64 and
//! stored in f32, as the host stores it.
//!
//! A block with `k` columns is solved in the primal form (the packed `k x k` Gram, factored
//! with the ridge rule of [`with_ridge_retries`], then the right-hand sides `X^T E` in chunks
//! of rows) or, when the schedule says so ([`MergeSchedule::dual`]), in the dual form of
//! [`lstsq::dual`](crate::lstsq::dual) over the `N x N` kernel of its rows.

use core::ops::Range;

use super::schedule::{Block, Columns, MergeSchedule};
use super::{DeviceSource, DriverError, LayerFitInfo, Model, Samples, SolveKnobs};
use crate::linalg::{
    MatMut, MatRef, PackedError, cholesky_packed, packed_index, packed_len, solve_packed,
};
use crate::lstsq::dual::{DualError, DualParams, DualSamples, dual_factor, dual_solve};
use crate::lstsq::{Attempt, RetryError, with_ridge_retries};
use crate::merge::pass::{
    ColumnSet, FitMoments, FitPass, FitWants, GramOut, InputForm, Moments, Pass, TargetForm,
};
use crate::merge::prior::{RidgeToward, UnitWeights, write_prior_row};
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
        channels: &'p [Range<usize>; 2],
        bias: bool,
        rows: Range<usize>,
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
                patch: self.cols.patch,
                bias,
            },
            rows,
            input: InputForm::Merged,
            target,
            wants,
        })
    }

    fn singular(&self, index: usize, pivot: f64, ridge: f64, retries: u32) -> DriverError {
        DriverError::Singular {
            layer: self.f,
            first_row: self.block.rows.start,
            index,
            pivot,
            ridge,
            retries,
        }
    }

    fn dual_error(&self, error: DualError) -> DriverError {
        match error {
            DualError::NotPositiveDefinite {
                index,
                pivot,
                ridge,
                retries,
            } => self.singular(index, pivot, ridge, retries),
            error => DriverError::DualSolve {
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
    plan: &MergeSchedule,
    fit: &BlockFit<'_>,
    r: usize,
    out: &mut [f32],
    delta: impl Fn(usize) -> f64,
) {
    let l = &plan.layers[fit.f];
    let row = l.weight_start + r * plan.row_len(fit.f);
    let cols = fit.cols;
    for a in 0..cols.inputs() {
        let i = row + cols.at(a);
        out[i] = (f64::from(out[i]) + delta(a)) as f32;
    }
    if l.bias {
        let i = l.bias_start + r;
        out[i] = (f64::from(out[i]) + delta(cols.inputs())) as f32;
    }
}

/// Writes the permute-and-average weights of `block` of fitted layer `f` (or zeros, with a
/// zero prior) into the output buffer, through the core's prior writer: the columns the block
/// may not read stay zero.
fn block_prior<'a, S: DeviceSource<'a>>(
    source: &S,
    indices: &[usize],
    f: usize,
    block: &Block,
    cols: &Columns,
    out: &mut [f32],
) {
    let plan = source.schedule();
    let l = &plan.layers[f];
    let row_len = plan.row_len(f);
    let layout_in = match l.input {
        super::LayerInput::Samples => None,
        super::LayerInput::Group(g) => Some(plan.layout(indices, g)),
    };
    let wa = |u: usize| -> UnitWeights<'a> { source.unit_weights(Model::A, f, u) };
    let wb = |u: usize| -> UnitWeights<'a> { source.unit_weights(Model::B, f, u) };
    let patch = l.patch;
    let place = |slot: usize| cols.contains(slot).then_some(slot * patch);
    let place_a = |i: usize| place(layout_in.as_ref().map_or(i, |l| l.slot_a(i)));
    let place_b = |i: usize| place(layout_in.as_ref().map_or(i, |l| l.slot_b(i)));
    let weight_end = l.weight_start + l.outputs * row_len;
    let (weights, biases) = out.split_at_mut(weight_end);
    let bias_start = l.bias.then(|| l.bias_start - weight_end);
    for r in block.rows.clone() {
        let row_source = match plan.ridge_toward {
            RidgeToward::Average => plan.row_source(indices, f, r),
            RidgeToward::Zero => RowSource::NONE,
        };
        let start = l.weight_start + r * row_len;
        write_prior_row(
            row_source,
            [&wa, &wb],
            [&place_a, &place_b],
            patch,
            &mut weights[start..start + row_len],
            bias_start.map(|b| &mut biases[b + r]),
        );
    }
}

/// Accumulates the block's packed Gram through the source.
fn gram_pass<'a, S>(
    source: &mut S,
    fit: &BlockFit<'_>,
    out: &[f32],
    gram: &mut [f64],
    scratch: &mut [f64],
) -> Result<(), S::Error>
where
    S: DeviceSource<'a>,
{
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
fn primal<'a, S>(
    source: &mut S,
    knobs: &SolveKnobs,
    fit: &BlockFit<'_>,
    out: &mut [f32],
    work: &mut [f64],
) -> Result<BlockReport, S::Error>
where
    S: DeviceSource<'a>,
    S::Error: From<DriverError>,
{
    let (k, rows) = (fit.cols.len(), fit.block.rows.clone());
    let chunk = source.schedule().chunk(rows.len());
    let (gram, rest) = work.split_at_mut(packed_len(k));
    let (rhs, scratch) = rest.split_at_mut(k * chunk);
    gram_pass(source, fit, out, gram, scratch)?;
    // lambda = relative * mean(diag G[c, c]), each term divided by k first.
    let mut mean = 0.0;
    for a in 0..k {
        mean += gram[packed_index(a, a)] / k as f64;
    }
    let first_ridge = knobs.relative_ridge * mean.max(0.0);
    if !first_ridge.is_finite() {
        return Err(fit.singular(0, f64::NAN, first_ridge, 0).into());
    }
    // The factorization overwrites the Gram: a retry accumulates it again.
    let mut fresh = true;
    let retried = with_ridge_retries(first_ridge, knobs.max_retries, |ridge| {
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
            _ => Attempt::Failed(DriverError::SizeOverflow.into()),
        })
    })
    .map_err(|e| match e {
        RetryError::Exhausted {
            index,
            pivot,
            ridge,
            retries,
        } => fit.singular(index, pivot, ridge, retries).into(),
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
        let view = MatMut::new(&mut *rhs, k, c).map_err(|_| DriverError::SizeOverflow)?;
        solve_packed(gram, k, view).map_err(|_| DriverError::SizeOverflow)?;
        for (ci, r) in (r0..r1).enumerate() {
            store(source.schedule(), fit, r, out, |a| rhs[a * c + ci]);
        }
        r0 = r1;
    }
    Ok((false, retried.ridge, retried.retries))
}

/// The buffers of a dual solve: the packed kernel, the chunk of right-hand sides, the rest.
struct DualBuffers<'w> {
    kernel: &'w mut [f64],
    z: &'w mut [f64],
    scratch: &'w mut [f64],
}

/// The dual solve of one block over its rows `x` (`N x inputs`, the block's columns without
/// the bias): the packed kernel, then `Z = K^{-1} E` in chunks of rows (the targets from the
/// source, `E = T - X W0^T` here) and `W = W0 + (X^T Z)^T`.
fn dual<'a, S, X>(
    source: &mut S,
    knobs: &SolveKnobs,
    fit: &BlockFit<'_>,
    x: X,
    out: &mut [f32],
    bufs: DualBuffers<'_>,
) -> Result<BlockReport, S::Error>
where
    S: DeviceSource<'a>,
    S::Error: From<DriverError>,
    X: DualSamples,
{
    let DualBuffers { kernel, z, scratch } = bufs;
    let n = source.schedule().fit_rows(fit.f);
    let params = DualParams::default()
        .with_relative_ridge(knobs.relative_ridge)
        .with_max_retries(knobs.max_retries);
    let factor = dual_factor(&x, fit.cols.bias, params, kernel).map_err(|e| fit.dual_error(e))?;
    let rows = fit.block.rows.clone();
    let chunk = source.schedule().chunk(rows.len());
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
        let plan = source.schedule();
        for s in 0..n {
            for (ci, r) in (r0..r1).enumerate() {
                // The targets were formed in f32: narrowing them back is exact.
                let t = z[s * c + ci] as f32;
                z[s * c + ci] = plan.residual(fit.f, r, t, fit.cols, out, |a| x.value(s, a));
            }
        }
        let view = MatMut::new(&mut *z, n, c).map_err(|_| DriverError::SizeOverflow)?;
        dual_solve(kernel, n, view).map_err(|e| fit.dual_error(e))?;
        for (ci, r) in (r0..r1).enumerate() {
            store(plan, fit, r, out, |a| {
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

/// f64 scratch the driver itself needs for a block of fitted layer `f` with `cols` (besides
/// its source's): the packed Gram and the right-hand sides (primal), or the packed kernel,
/// the residuals and, unless the source hands out the rows, the gathered rows (dual).
pub fn block_scratch_len(
    plan: &MergeSchedule,
    f: usize,
    cols: &Columns,
    rows: usize,
    gathers: bool,
) -> usize {
    let k = cols.len();
    let c = plan.chunk(rows);
    if plan.dual(f, k) {
        let n = plan.fit_rows(f);
        let gathered = if gathers {
            n.saturating_mul(cols.inputs())
        } else {
            0
        };
        packed_len(n)
            .saturating_add(n.saturating_mul(c))
            .saturating_add(gathered)
    } else {
        packed_len(k).saturating_add(k.saturating_mul(c))
    }
}

/// Fits one block in the form its shape calls for.
fn fit_block<'a, S>(
    source: &mut S,
    knobs: &SolveKnobs,
    fit: &BlockFit<'_>,
    out: &mut [f32],
    scratch: &mut [f64],
) -> Result<BlockReport, S::Error>
where
    S: DeviceSource<'a>,
    S::Error: From<DriverError>,
{
    let plan = source.schedule();
    if !plan.dual(fit.f, fit.cols.len()) {
        return primal(source, knobs, fit, out, scratch);
    }
    let n = plan.fit_rows(fit.f);
    let chunk = plan.chunk(fit.block.rows.len());
    let (kernel, rest) = scratch.split_at_mut(packed_len(n));
    let (z, rest) = rest.split_at_mut(n * chunk);
    let inputs = plan.layers[fit.f].in_channels;
    match source.sample_rows(fit.f) {
        Some(Samples::F32(x)) => {
            let x = MatRef::new(x, n, inputs).map_err(|_| DriverError::SizeOverflow)?;
            let bufs = DualBuffers {
                kernel,
                z,
                scratch: rest,
            };
            dual(source, knobs, fit, x, out, bufs)
        }
        Some(Samples::U8 { data, table }) => {
            let x = ByteRows {
                data,
                table,
                cols: inputs,
            };
            let bufs = DualBuffers {
                kernel,
                z,
                scratch: rest,
            };
            dual(source, knobs, fit, x, out, bufs)
        }
        None => {
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
            let x = MatRef::new(&*xg, n, ni).map_err(|_| DriverError::SizeOverflow)?;
            let bufs = DualBuffers {
                kernel,
                z,
                scratch: rest,
            };
            dual(source, knobs, fit, x, out, bufs)
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

/// Fits every merged layer of the source's schedule in order into `out`, over the source's
/// passes; `indices` holds the layouts the matching wrote. The report holds the first `N`
/// layers (the caller's capacity).
#[inline(never)]
pub fn fit_layers<'a, S, const N: usize>(
    source: &mut S,
    knobs: &SolveKnobs,
    indices: &[usize],
    out: &mut [f32],
    scratch: &mut [f64],
) -> Result<heapless::Vec<LayerFitInfo, N>, S::Error>
where
    S: DeviceSource<'a>,
    S::Error: From<DriverError>,
{
    let mut infos = heapless::Vec::new();
    for f in 0..source.schedule().layers.len() {
        let blocks = source.schedule().blocks(f);
        for block in &blocks {
            let cols = source.schedule().columns(f, block);
            block_prior(source, indices, f, block, &cols, out);
        }
        let mut info = LayerFitInfo {
            copied_blocks: 0,
            primal_blocks: 0,
            dual_blocks: 0,
            ridge: 0.0,
            retries: 0,
        };
        if source.schedule().copies(f) {
            // The prior just written is the exact solution.
            info.copied_blocks = blocks.len();
        } else {
            for block in &blocks {
                let cols = source.schedule().columns(f, block);
                let fit = BlockFit {
                    f,
                    block,
                    cols: &cols,
                };
                let (dual, ridge, retries) = fit_block(source, knobs, &fit, out, scratch)?;
                if dual {
                    info.dual_blocks += 1;
                } else {
                    info.primal_blocks += 1;
                }
                info.ridge = info.ridge.max(ridge);
                info.retries = info.retries.max(retries);
            }
        }
        let plan = source.schedule();
        let start = plan.layers[f].weight_start;
        let end = plan.layer_end(f);
        if let Some(i) = out[start..end].iter().position(|v| !v.is_finite()) {
            return Err(DriverError::NonFiniteResult { index: start + i }.into());
        }
        // Layers beyond the caller's capacity are not reported.
        let _ = infos.push(info);
    }
    Ok(infos)
}
