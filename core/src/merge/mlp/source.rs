//! The device's [`PassSource`]: the merge samples stay where they are (in flash on a
//! microcontroller), nothing is stored between passes, and every pass recomputes the
//! activations it needs sample by sample in the scratch, in f32, summing moments in f64 one
//! sample at a time.

use super::error::{MlpMergeError, ScratchKind};
use super::forward::{self, Acts, Vector, relu};
use super::plan::MlpMergePlan;
use super::{LayerRef, Samples};
use crate::linalg::packed_index;
use crate::merge::driver::{Columns, DeviceSource, LayerInput, MergeSchedule, Model};
use crate::merge::pass::{
    FitMoments, FitPass, GramOut, GroupMoments, Moments, Pass, PassSource, TargetForm,
};
use crate::merge::prior::UnitWeights;
use crate::merge::sources::RowSource;

/// The models, the samples and the layouts a merge reads: the in-place pass source of the
/// device merge.
pub(super) struct InPlaceSource<'a> {
    /// The plan.
    pub(super) plan: &'a MlpMergePlan,
    /// Model A's layers.
    pub(super) a: &'a [LayerRef<'a>],
    /// Model B's layers.
    pub(super) b: &'a [LayerRef<'a>],
    /// The merge samples.
    pub(super) samples: Samples<'a>,
    /// The layouts the matching wrote (empty before it: fit passes need them).
    pub(super) indices: &'a [usize],
    /// The driver's view of the plan.
    pub(super) schedule: MergeSchedule,
}

/// The driver's column list of a pass's column set (at most two channel ranges).
pub(super) fn columns_of(pass: &FitPass<'_>) -> Columns {
    let ch = pass.columns.channels;
    Columns {
        ranges: [
            ch.first().cloned().unwrap_or(0..0),
            ch.get(1).cloned().unwrap_or(0..0),
        ],
        patch: pass.columns.patch,
        bias: pass.columns.bias,
    }
}

impl<'a> InPlaceSource<'a> {
    /// Sample `s`.
    pub(super) fn sample(&self, s: usize) -> Vector<'a> {
        let d = self.plan.inputs;
        Vector::Sample(self.samples.slice(s * d..(s + 1) * d))
    }

    /// The sources of row `r` of fitted layer `f`.
    pub(super) fn source_of_row(&self, f: usize, r: usize) -> RowSource {
        self.schedule.row_source(self.indices, f, r)
    }

    /// A's and B's pre-activations of original layer `upto` for sample `s`.
    fn originals(&self, s: usize, upto: usize, acts: &mut Acts<'_>) {
        let x = self.sample(s);
        forward::original(self.plan, self.a, x, upto, acts.a.0, acts.a.1);
        forward::original(self.plan, self.b, x, upto, acts.b.0, acts.b.1);
    }

    /// The inputs of fitted layer `f` in columns `cols` for sample `s` into `xb` (block
    /// columns, then 1 for the bias), the merged network read from `weights`.
    fn gather(
        &self,
        s: usize,
        f: usize,
        cols: &Columns,
        weights: &[f32],
        m: (&mut [f64], &mut [f64]),
        xb: &mut [f64],
    ) {
        let x = self.sample(s);
        let v = match self.schedule.layers[f].input {
            LayerInput::Samples => x,
            LayerInput::Group(g) => {
                let w = forward::merged(self.plan, weights, x, g, m.0, m.1);
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

    /// The target of row `r` of layer `f` from A's and B's pre-activations.
    fn target(&self, f: usize, r: usize, acts: &Acts<'_>) -> f32 {
        let (za, zb) = (&*acts.a.0, &*acts.b.0);
        self.source_of_row(f, r)
            .target(|i| za[i] as f32, |j| zb[j] as f32)
    }

    /// Matching moments of hidden layer `g` over both nodes of the group (the linear output
    /// and its ReLU), every sample.
    fn group_moments(&self, g: usize, mo: &mut GroupMoments<'_>, scratch: &mut [f64]) {
        let plan = self.plan;
        let n = plan.hidden[g];
        let (acts, _) = forward::split(plan, scratch);
        let (sim, sa, sb) = (&mut *mo.cross, &mut *mo.sum_a, &mut *mo.sum_b);
        let (saa, sbb) = (&mut *mo.sq_a, &mut *mo.sq_b);
        for s in 0..plan.samples {
            let x = self.sample(s);
            forward::original(plan, self.a, x, g, acts.a.0, acts.a.1);
            forward::original(plan, self.b, x, g, acts.b.0, acts.b.1);
            let za = &acts.a.0[..n];
            for after_relu in [false, true] {
                let value = |z: f64| {
                    if after_relu {
                        f64::from(relu(z as f32))
                    } else {
                        z
                    }
                };
                // B's values of this node, in B's second buffer (free after the forward pass).
                let (zb, bv) = (&acts.b.0[..n], &mut acts.b.1[..n]);
                for ((v, &z), (s, q)) in
                    bv.iter_mut().zip(zb).zip(sb.iter_mut().zip(sbb.iter_mut()))
                {
                    *v = value(z);
                    *s += *v;
                    *q += *v * *v;
                }
                for i in 0..n {
                    let a = value(za[i]);
                    sa[i] += a;
                    saa[i] += a * a;
                    let row = &mut sim[i * n..(i + 1) * n];
                    for (c, &b) in row.iter_mut().zip(bv.iter()) {
                        *c += a * b;
                    }
                }
            }
        }
        *mo.count += 2.0 * plan.samples as f64;
    }

    /// The packed Gram of the pass's columns over the samples.
    fn gram(&self, pass: &FitPass<'_>, weights: &[f32], gram: &mut [f64], scratch: &mut [f64]) {
        let (f, cols) = (pass.layers[0], columns_of(pass));
        let k = cols.len();
        let (acts, rest) = forward::split(self.plan, scratch);
        let xb = &mut rest[..k];
        for s in 0..self.plan.samples {
            self.gather(s, f, &cols, weights, (&mut *acts.m.0, &mut *acts.m.1), xb);
            for a in 0..k {
                let row = packed_index(a, 0);
                let xa = xb[a];
                for (g, &x) in gram[row..=row + a].iter_mut().zip(&xb[..=a]) {
                    *g += xa * x;
                }
            }
        }
    }

    /// `X^T E` (`k x c`) of the pass's columns against the residuals of its rows.
    fn cross(&self, pass: &FitPass<'_>, weights: &[f32], rhs: &mut [f64], scratch: &mut [f64]) {
        let (f, cols) = (pass.layers[0], columns_of(pass));
        let (k, rows) = (cols.len(), pass.rows.clone());
        let c = rows.len();
        let upto = f.min(self.plan.hidden.len());
        let (mut acts, rest) = forward::split(self.plan, scratch);
        let (xb, rest) = rest.split_at_mut(k);
        let eb = &mut rest[..c];
        for s in 0..self.plan.samples {
            self.originals(s, upto, &mut acts);
            self.gather(s, f, &cols, weights, (&mut *acts.m.0, &mut *acts.m.1), xb);
            for (e, r) in eb.iter_mut().zip(rows.clone()) {
                let t = self.target(f, r, &acts);
                *e = self.schedule.residual(f, r, t, &cols, weights, |a| xb[a]);
            }
            for a in 0..k {
                let xa = xb[a];
                for (v, &e) in rhs[a * c..(a + 1) * c].iter_mut().zip(&eb[..c]) {
                    *v += xa * e;
                }
            }
        }
    }

    /// The input rows of the pass's columns, `N x k`.
    fn input_rows(
        &self,
        pass: &FitPass<'_>,
        weights: &[f32],
        out: &mut [f64],
        scratch: &mut [f64],
    ) {
        let (f, cols) = (pass.layers[0], columns_of(pass));
        let k = cols.len();
        let (acts, _) = forward::split(self.plan, scratch);
        for s in 0..self.plan.samples {
            let row = &mut out[s * k..(s + 1) * k];
            self.gather(s, f, &cols, weights, (&mut *acts.m.0, &mut *acts.m.1), row);
        }
    }

    /// The target rows of the pass, `N x c` (f32 targets, widened).
    fn target_rows(&self, pass: &FitPass<'_>, out: &mut [f64], scratch: &mut [f64]) {
        let f = pass.layers[0];
        let rows = pass.rows.clone();
        let c = rows.len();
        let upto = f.min(self.plan.hidden.len());
        let (mut acts, _) = forward::split(self.plan, scratch);
        for s in 0..self.plan.samples {
            self.originals(s, upto, &mut acts);
            for (ci, r) in rows.clone().enumerate() {
                out[s * c + ci] = f64::from(self.target(f, r, &acts));
            }
        }
    }

    fn fit(
        &self,
        pass: &FitPass<'_>,
        weights: &[f32],
        mo: &mut FitMoments<'_>,
        scratch: &mut [f64],
    ) -> Result<(), MlpMergeError> {
        let w = pass.wants;
        // The device merge asks for one part per pass, of one layer; residual targets only
        // with the cross moments, where the source has the inputs at hand.
        let parts = [w.gram, w.cross, w.target_sq_sums, w.inputs, w.targets];
        let residual_ok = (pass.target == TargetForm::Residual) == w.cross;
        if pass.layers.len() != 1 || parts.iter().filter(|&&p| p).count() != 1 || !residual_ok {
            return Err(MlpMergeError::UnsupportedPass);
        }
        match (&mut mo.gram, &mut mo.cross, &mut mo.inputs, &mut mo.targets) {
            (GramOut::Packed(g), None, None, None) if w.gram => {
                self.gram(pass, weights, g, scratch)
            }
            (GramOut::None, Some(rhs), None, None) if w.cross => {
                self.cross(pass, weights, rhs, scratch)
            }
            (GramOut::None, None, Some(x), None) if w.inputs => {
                self.input_rows(pass, weights, x, scratch)
            }
            (GramOut::None, None, None, Some(t)) if w.targets => self.target_rows(pass, t, scratch),
            _ => return Err(MlpMergeError::UnsupportedPass),
        }
        Ok(())
    }
}

impl PassSource for InPlaceSource<'_> {
    type Weights = [f32];
    type Error = MlpMergeError;

    /// The activation buffers (two per network), plus one sample's inputs for the Gram and
    /// its inputs and residuals for the cross moments.
    fn scratch_len(&self, pass: &Pass<'_>) -> usize {
        let plan = self.plan;
        let acts = 4 * plan.original_width() + 2 * plan.merged_width();
        match pass {
            Pass::Fit(p) if p.wants.gram => acts + p.columns.len(),
            Pass::Fit(p) if p.wants.cross => acts + p.columns.len() + p.rows.len(),
            _ => acts,
        }
    }

    fn run(
        &mut self,
        pass: &Pass<'_>,
        weights: &[f32],
        moments: &mut Moments<'_>,
        scratch: &mut [f64],
    ) -> Result<(), MlpMergeError> {
        let needed = self.scratch_len(pass);
        if scratch.len() < needed {
            return Err(MlpMergeError::ScratchTooSmall {
                kind: ScratchKind::Scratch,
                needed,
                provided: scratch.len(),
            });
        }
        match (pass, moments) {
            (Pass::Matching { group }, Moments::Group(mo)) if *group < self.plan.hidden.len() => {
                self.group_moments(*group, mo, scratch);
                Ok(())
            }
            (Pass::Fit(p), Moments::Fit(mo)) => self.fit(p, weights, mo, scratch),
            _ => Err(MlpMergeError::UnsupportedPass),
        }
    }
}

impl<'a> DeviceSource<'a> for InPlaceSource<'a> {
    fn schedule(&self) -> &MergeSchedule {
        &self.schedule
    }

    fn unit_weights(&self, model: Model, f: usize, unit: usize) -> UnitWeights<'a> {
        let layers = match model {
            Model::A => self.a,
            Model::B => self.b,
        };
        let layer = layers[f.min(self.plan.hidden.len())];
        let width = self.schedule.layers[f].in_channels;
        (
            &layer.weight[unit * width..(unit + 1) * width],
            layer.bias.map(|b| b[unit]),
        )
    }

    fn sample_rows(&self, f: usize) -> Option<Samples<'a>> {
        (self.schedule.layers[f].input == LayerInput::Samples).then_some(self.samples)
    }
}
