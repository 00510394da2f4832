//! Step 2: the sequential least-squares fit of every merged layer, block by block, in the
//! primal or the dual form (see the [module docs](super)).
//!
//! For each layer the permute-and-average weights `W0` are written into the output buffer
//! first (they are the ridge's prior; a layer that only reads exact copies of the models'
//! units keeps them, see [`MlpMergePlan::copies`](super::MlpMergePlan)); each block then
//! streams the samples: the merged
//! network's own activations as inputs (from the layers already fitted), A's and B's
//! pre-activations for the targets, and `e = t - W0 x` in f64. The solved update is added to
//! `W0` in f64 and stored in f32, as the host stores it.

use core::ops::Range;

use super::Samples;
use super::error::MlpMergeError;
use super::forward::{self, Acts, Vector};
use super::matching::{Layout, Sources};
use super::plan::{Block, Columns, Context, Input, Output};
use super::{LayerFitInfo, LayerRef, MAX_HIDDEN, RidgeToward};
use crate::linalg::{
    MatMut, MatRef, PackedError, cholesky_packed, packed_index, packed_len, solve_packed,
};
use crate::lstsq::dual::{DualError, DualParams, DualSamples, dual_factor, dual_solve};

/// One fitted layer and what its blocks share.
struct LayerFit<'c, 'a> {
    ctx: &'c Context<'a>,
    /// Fitted layer index (hidden layers, then heads).
    f: usize,
    input: Input,
    output: Output,
    /// Original layer whose outputs are the targets (the head for heads).
    upto: usize,
    /// Dense input width of the merged layer.
    in_width: usize,
    /// Input width of the original layer.
    orig_in: usize,
    /// The layer's weight and bias in the output buffer.
    weight: Range<usize>,
    bias: Option<Range<usize>>,
    layout_in: Option<Layout<'c>>,
    layout_out: Option<Layout<'c>>,
}

/// What one block's solve reports: dual or not, ridge, retries.
type BlockReport = (bool, f64, u32);

impl<'c, 'a> LayerFit<'c, 'a> {
    fn new(ctx: &'c Context<'a>, indices: &'c [usize], f: usize) -> Self {
        let plan = ctx.plan;
        let (input, output) = plan.io(f);
        let upto = f.min(plan.hidden.len());
        let (layout_in, orig_in) = match input {
            Input::Samples => (None, plan.inputs),
            Input::Hidden(g) => (Some(Layout::of(plan, indices, g)), plan.hidden[g]),
        };
        let layout_out = match output {
            Output::Group(g) => Some(Layout::of(plan, indices, g)),
            _ => None,
        };
        Self {
            ctx,
            f,
            input,
            output,
            upto,
            in_width: plan.input_width(input),
            orig_in,
            weight: plan.weight_range(f),
            bias: plan.bias_range(f),
            layout_in,
            layout_out,
        }
    }

    /// A's and B's units behind output row `r`, with their weights in the target.
    fn sources(&self, r: usize) -> Sources {
        match (self.output, &self.layout_out) {
            (Output::Group(_), Some(l)) => l.sources(r),
            (Output::Shared, _) => (Some((r, 0.5)), Some((r, 0.5))),
            (Output::HeadA, _) => (Some((r, 1.0)), None),
            (Output::HeadB, _) => (None, Some((r, 1.0))),
            (Output::Group(_), None) => (None, None),
        }
    }

    /// The target of row `r` from A's and B's pre-activations, formed in f32 as the host
    /// forms it (`w_a a + w_b b`).
    fn target(&self, r: usize, za: &[f64], zb: &[f64]) -> f32 {
        match self.sources(r) {
            (Some((i, wa)), Some((j, wb))) => wa * (za[i] as f32) + wb * (zb[j] as f32),
            (Some((i, w)), None) => w * (za[i] as f32),
            (None, Some((j, w))) => w * (zb[j] as f32),
            (None, None) => 0.0,
        }
    }

    /// The merged column of input unit `i` of model A (`a`) or B.
    fn slot(&self, a: bool, i: usize) -> usize {
        match &self.layout_in {
            None => i,
            Some(l) if a => l.slot_a(i),
            Some(l) => l.slot_b(i),
        }
    }

    /// Writes the permute-and-average weights of `block` (or zeros, with a zero prior) into
    /// the output buffer: each row takes its sources' rows scaled by their weights, A's first,
    /// placed at the merged columns of their input units when the block may read them.
    fn write_prior(&self, block: &Block, cols: &Columns, out: &mut [f32]) {
        let ctx = self.ctx;
        let models: [&[LayerRef<'_>]; 2] = [ctx.a, ctx.b];
        for r in block.rows.clone() {
            let start = self.weight.start + r * self.in_width;
            out[start..start + self.in_width].fill(0.0);
            if let Some(b) = &self.bias {
                out[b.start + r] = 0.0;
            }
            if ctx.params.ridge_toward == RidgeToward::Zero {
                continue;
            }
            let (sa, sb) = self.sources(r);
            for (side, (source, layers)) in [(true, (sa, models[0])), (false, (sb, models[1]))] {
                let Some((unit, alpha)) = source else {
                    continue;
                };
                let layer = layers[self.upto];
                let w = &layer.weight[unit * self.orig_in..(unit + 1) * self.orig_in];
                for (i, &v) in w.iter().enumerate() {
                    let c = self.slot(side, i);
                    if cols.contains(c) {
                        out[start + c] += alpha * v;
                    }
                }
                if let (Some(b), Some(lb)) = (&self.bias, layer.bias) {
                    out[b.start + r] += alpha * lb[unit];
                }
            }
        }
    }

    /// `e = t_r - W0[r, c] x - W0_bias[r]` in f64, for `x` the block's inputs of one sample
    /// (`x(a)` for block column `a`).
    fn residual(
        &self,
        r: usize,
        t: f32,
        cols: &Columns,
        out: &[f32],
        x: impl Fn(usize) -> f64,
    ) -> f64 {
        let row = self.weight.start + r * self.in_width;
        let mut p = 0.0;
        for a in 0..cols.inputs() {
            p += f64::from(out[row + cols.at(a)]) * x(a);
        }
        if let Some(b) = &self.bias {
            p += f64::from(out[b.start + r]);
        }
        f64::from(t) - p
    }

    /// Stores `W0 + delta` (f64, rounded to f32) for row `r`: `delta(a)` for block column `a`,
    /// the bias last.
    fn store(&self, r: usize, cols: &Columns, out: &mut [f32], delta: impl Fn(usize) -> f64) {
        let row = self.weight.start + r * self.in_width;
        for a in 0..cols.inputs() {
            let i = row + cols.at(a);
            out[i] = (f64::from(out[i]) + delta(a)) as f32;
        }
        if let Some(b) = &self.bias {
            let i = b.start + r;
            out[i] = (f64::from(out[i]) + delta(cols.inputs())) as f32;
        }
    }

    /// A's and B's pre-activations of the target layer for sample `s`.
    fn originals(&self, s: usize, acts: &mut Acts<'_>) {
        let (plan, x) = (self.ctx.plan, self.ctx.sample(s));
        forward::original(plan, self.ctx.a, x, self.upto, acts.a.0, acts.a.1);
        forward::original(plan, self.ctx.b, x, self.upto, acts.b.0, acts.b.1);
    }

    fn singular(
        &self,
        block: &Block,
        index: usize,
        pivot: f64,
        ridge: f64,
        retries: u32,
    ) -> MlpMergeError {
        MlpMergeError::Singular {
            layer: self.f,
            first_row: block.rows.start,
            index,
            pivot,
            ridge,
            retries,
        }
    }

    /// The block's inputs for sample `s` into `xb` (block columns, then 1 for the bias).
    fn gather(
        &self,
        s: usize,
        cols: &Columns,
        out: &[f32],
        m: (&mut [f64], &mut [f64]),
        xb: &mut [f64],
    ) {
        let ctx = self.ctx;
        let x = ctx.sample(s);
        let v = match self.input {
            Input::Samples => x,
            Input::Hidden(g) => {
                let w = forward::merged(ctx.plan, out, x, g, &mut *m.0, &mut *m.1);
                Vector::Hidden(&m.0[..w])
            }
        };
        for (a, slot) in xb.iter_mut().enumerate().take(cols.inputs()) {
            *slot = f64::from(v.at(cols.at(a)));
        }
        if cols.bias {
            xb[cols.inputs()] = 1.0;
        }
    }

    /// The primal solve of one block: the packed Gram of its columns over the samples, then
    /// the right-hand sides `X^T E` in chunks of rows.
    fn primal(
        &self,
        block: &Block,
        cols: &Columns,
        out: &mut [f32],
        acts: &mut Acts<'_>,
        work: &mut [f64],
    ) -> Result<BlockReport, MlpMergeError> {
        let ctx = self.ctx;
        let plan = ctx.plan;
        let k = cols.len();
        let chunk = plan.chunk(block.rows.len());
        let (gram, rest) = work.split_at_mut(packed_len(k));
        let (rhs, rest) = rest.split_at_mut(k * chunk);
        let (xb, rest) = rest.split_at_mut(k);
        let eb = &mut rest[..chunk];
        let mut ridge = 0.0;
        let mut retries = 0;
        loop {
            gram.fill(0.0);
            for s in 0..plan.samples {
                self.gather(s, cols, out, (&mut *acts.m.0, &mut *acts.m.1), xb);
                for a in 0..k {
                    let row = packed_index(a, 0);
                    let xa = xb[a];
                    for (g, &x) in gram[row..=row + a].iter_mut().zip(&xb[..=a]) {
                        *g += xa * x;
                    }
                }
            }
            if retries == 0 {
                // lambda = relative * mean(diag G[c, c]), each term divided by k first.
                let mut mean = 0.0;
                for a in 0..k {
                    mean += gram[packed_index(a, a)] / k as f64;
                }
                ridge = ctx.params.relative_ridge * mean.max(0.0);
                if !ridge.is_finite() {
                    return Err(self.singular(block, 0, f64::NAN, ridge, 0));
                }
            }
            for a in 0..k {
                gram[packed_index(a, a)] += ridge;
            }
            match cholesky_packed(gram, k) {
                Ok(_) => break,
                Err(PackedError::NonPositivePivot { index, value }) => {
                    let next = ridge * 10.0;
                    if retries >= ctx.params.max_retries || !next.is_finite() || next <= 0.0 {
                        return Err(self.singular(block, index, value, ridge, retries));
                    }
                    ridge = next;
                    retries += 1;
                }
                Err(_) => return Err(MlpMergeError::SizeOverflow),
            }
        }
        let mut r0 = block.rows.start;
        while r0 < block.rows.end {
            let r1 = (r0 + chunk).min(block.rows.end);
            let c = r1 - r0;
            let rhs = &mut rhs[..k * c];
            rhs.fill(0.0);
            for s in 0..plan.samples {
                self.originals(s, acts);
                self.gather(s, cols, out, (&mut *acts.m.0, &mut *acts.m.1), xb);
                for (e, r) in eb.iter_mut().zip(r0..r1) {
                    let t = self.target(r, acts.a.0, acts.b.0);
                    *e = self.residual(r, t, cols, out, |a| xb[a]);
                }
                for a in 0..k {
                    let xa = xb[a];
                    for (v, &e) in rhs[a * c..(a + 1) * c].iter_mut().zip(&eb[..c]) {
                        *v += xa * e;
                    }
                }
            }
            let view = MatMut::new(&mut *rhs, k, c).map_err(|_| MlpMergeError::SizeOverflow)?;
            solve_packed(gram, k, view).map_err(|_| MlpMergeError::SizeOverflow)?;
            for (ci, r) in (r0..r1).enumerate() {
                self.store(r, cols, out, |a| rhs[a * c + ci]);
            }
            r0 = r1;
        }
        Ok((false, ridge, retries))
    }

    /// The dual solve of one block over the samples `x` (`N x inputs`, the block's columns
    /// without the bias): the packed kernel, then `Z = K^{-1} E` in chunks of rows and
    /// `W = W0 + (X^T Z)^T`.
    fn dual<X: DualSamples>(
        &self,
        block: &Block,
        cols: &Columns,
        x: X,
        out: &mut [f32],
        acts: &mut Acts<'_>,
        kernel: &mut [f64],
        z: &mut [f64],
    ) -> Result<BlockReport, MlpMergeError> {
        let ctx = self.ctx;
        let plan = ctx.plan;
        let n = plan.samples;
        let params = DualParams::default()
            .with_relative_ridge(ctx.params.relative_ridge)
            .with_max_retries(ctx.params.max_retries);
        let factor = dual_factor(&x, cols.bias, params, kernel).map_err(|e| match e {
            DualError::NotPositiveDefinite {
                index,
                pivot,
                ridge,
                retries,
            } => self.singular(block, index, pivot, ridge, retries),
            error => MlpMergeError::DualSolve {
                layer: self.f,
                first_row: block.rows.start,
                error,
            },
        })?;
        let chunk = plan.chunk(block.rows.len());
        let ni = cols.inputs();
        let mut r0 = block.rows.start;
        while r0 < block.rows.end {
            let r1 = (r0 + chunk).min(block.rows.end);
            let c = r1 - r0;
            let z = &mut z[..n * c];
            for s in 0..n {
                self.originals(s, acts);
                for (ci, r) in (r0..r1).enumerate() {
                    let t = self.target(r, acts.a.0, acts.b.0);
                    z[s * c + ci] = self.residual(r, t, cols, out, |a| x.value(s, a));
                }
            }
            let view = MatMut::new(&mut *z, n, c).map_err(|_| MlpMergeError::SizeOverflow)?;
            dual_solve(kernel, n, view).map_err(|error| MlpMergeError::DualSolve {
                layer: self.f,
                first_row: block.rows.start,
                error,
            })?;
            for (ci, r) in (r0..r1).enumerate() {
                self.store(r, cols, out, |a| {
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
    fn block(
        &self,
        block: &Block,
        out: &mut [f32],
        scratch: &mut [f64],
    ) -> Result<BlockReport, MlpMergeError> {
        let ctx = self.ctx;
        let plan = ctx.plan;
        let cols = plan.columns(self.input, block);
        let (mut acts, work) = forward::split(plan, scratch);
        let n = plan.samples;
        if !plan.dual(cols.len()) {
            return self.primal(block, &cols, out, &mut acts, work);
        }
        let chunk = plan.chunk(block.rows.len());
        let (kernel, rest) = work.split_at_mut(packed_len(n));
        let (z, rest) = rest.split_at_mut(n * chunk);
        match self.input {
            Input::Samples => match ctx.samples {
                Samples::F32(x) => {
                    let x =
                        MatRef::new(x, n, plan.inputs).map_err(|_| MlpMergeError::SizeOverflow)?;
                    self.dual(block, &cols, x, out, &mut acts, kernel, z)
                }
                Samples::U8 { data, table } => {
                    let x = ByteRows {
                        data,
                        table,
                        cols: plan.inputs,
                    };
                    self.dual(block, &cols, x, out, &mut acts, kernel, z)
                }
            },
            Input::Hidden(_) => {
                let ni = cols.inputs();
                let xg = &mut rest[..n * ni];
                for s in 0..n {
                    let row = &mut xg[s * ni..(s + 1) * ni];
                    // The bias column is implicit in the dual form: gather inputs only.
                    let only_inputs = Columns {
                        ranges: cols.ranges.clone(),
                        bias: false,
                    };
                    self.gather(s, &only_inputs, out, (&mut *acts.m.0, &mut *acts.m.1), row);
                }
                let x = MatRef::new(&*xg, n, ni).map_err(|_| MlpMergeError::SizeOverflow)?;
                self.dual(block, &cols, x, out, &mut acts, kernel, z)
            }
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

/// Fits every merged layer in order (hidden layers, then the heads) into `out`.
pub(super) fn fit_layers(
    ctx: &Context<'_>,
    out: &mut [f32],
    scratch: &mut [f64],
    indices: &[usize],
) -> Result<heapless::Vec<LayerFitInfo, { MAX_HIDDEN + 2 }>, MlpMergeError> {
    let plan = ctx.plan;
    let mut infos = heapless::Vec::new();
    for f in 0..plan.fitted_layers() {
        let layer = LayerFit::new(ctx, indices, f);
        let blocks = plan.blocks(f);
        for block in &blocks {
            let cols = plan.columns(layer.input, block);
            layer.write_prior(block, &cols, out);
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
                let (dual, ridge, retries) = layer.block(block, out, scratch)?;
                if dual {
                    info.dual_blocks += 1;
                } else {
                    info.primal_blocks += 1;
                }
                info.ridge = info.ridge.max(ridge);
                info.retries = info.retries.max(retries);
            }
        }
        let end = plan.bias_range(f).map_or(layer.weight.end, |b| b.end);
        if let Some(i) = out[layer.weight.start..end]
            .iter()
            .position(|v| !v.is_finite())
        {
            return Err(MlpMergeError::NonFiniteResult {
                index: layer.weight.start + i,
            });
        }
        // At most MAX_HIDDEN + 2 fitted layers.
        let _ = infos.push(info);
    }
    Ok(infos)
}
