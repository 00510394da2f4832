//! The CNN's in-place [`PassSource`]: the merge samples stay where they are, nothing is
//! stored between passes, and every pass recomputes the activations it needs sample by
//! sample with the compact forward pass (f32, in the caller's forward scratch), summing
//! moments in f64 one position at a time.

use super::error::{CnnBuffer, CnnMergeError};
use super::plan::CnnMergePlan;
use crate::forward::compact::{CompactPlan, LayerOp};
use crate::linalg::packed_index;
use crate::merge::driver::{Columns, DeviceSource, MergeSchedule, Model, Samples};
use crate::merge::pass::{
    FitMoments, FitPass, GramOut, GroupMoments, Moments, Pass, PassSource, TargetForm,
};
use crate::merge::prior::UnitWeights;

/// The models, the samples and the layouts a CNN merge reads.
pub(super) struct CnnSource<'s> {
    /// The plan.
    pub(super) plan: &'s CnnMergePlan,
    /// The models' network, planned.
    pub(super) original: CompactPlan<'s>,
    /// The merged network, planned.
    pub(super) merged: CompactPlan<'s>,
    /// Model A's parameters.
    pub(super) a: &'s [f32],
    /// Model B's parameters.
    pub(super) b: &'s [f32],
    /// The merge samples.
    pub(super) samples: Samples<'s>,
    /// The forward passes' scratch.
    pub(super) forward: &'s mut [f32],
    /// The layouts the matching wrote (empty before it: fit passes need them).
    pub(super) indices: &'s [usize],
}

/// The driver's column list of a pass's column set (at most two channel ranges).
fn columns_of(pass: &FitPass<'_>) -> Columns {
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

/// Which parts of a fit pass a position contributes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FitPart {
    Gram,
    Cross,
    Inputs,
    Targets,
}

impl CnnSource<'_> {
    /// Writes sample `s` into `plan`'s input slot of the forward scratch.
    fn load(&mut self, merged: bool, s: usize) -> Result<(), CnnMergeError> {
        let d = self.plan.input.len();
        let x = self.samples.slice(s * d..(s + 1) * d);
        let plan = if merged { &self.merged } else { &self.original };
        let slot = plan
            .input_mut(self.forward)
            .map_err(CnnMergeError::Forward)?;
        for (i, v) in slot.iter_mut().enumerate() {
            *v = x.at(i);
        }
        Ok(())
    }

    /// Runs `model` on sample `s` up to node `last`, calling `observe` for every node.
    fn run_original(
        &mut self,
        model: Model,
        s: usize,
        last: usize,
        observe: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), CnnMergeError> {
        self.load(false, s)?;
        let params = match model {
            Model::A => self.a,
            Model::B => self.b,
        };
        self.original
            .run_to(params, self.forward, last, observe)
            .map_err(CnnMergeError::Forward)
    }

    /// Matching moments of group `g` over every node carrying it, every sample and position.
    fn group_moments(
        &mut self,
        g: usize,
        mo: &mut GroupMoments<'_>,
        scratch: &mut [f64],
    ) -> Result<(), CnnMergeError> {
        let plan = self.plan;
        let n = plan.schedule.groups[g].width;
        let carries = |v: usize| plan.node_group.get(v) == Some(&Some(g));
        let last = plan.group_nodes(g).last().unwrap_or(0);
        let total: usize = plan.group_nodes(g).map(|v| plan.shapes[v].len()).sum();
        let (kept, rest) = scratch.split_at_mut(total);
        let (av, rest) = rest.split_at_mut(n);
        let bv = &mut rest[..n];
        let positions: usize = plan
            .group_nodes(g)
            .map(|v| plan.shapes[v].h * plan.shapes[v].w)
            .sum();
        for s in 0..plan.samples {
            let mut at = 0;
            self.run_original(Model::A, s, last, &mut |node, act| {
                if carries(node) {
                    for (k, &v) in kept[at..at + act.len()].iter_mut().zip(act) {
                        *k = f64::from(v);
                    }
                    at += act.len();
                }
            })?;
            let mut at = 0;
            let (sim, sa, sb) = (&mut *mo.cross, &mut *mo.sum_a, &mut *mo.sum_b);
            let (saa, sbb) = (&mut *mo.sq_a, &mut *mo.sq_b);
            self.run_original(Model::B, s, last, &mut |node, act| {
                if !carries(node) {
                    return;
                }
                let hw = act.len() / n;
                let a_node = &kept[at..at + act.len()];
                at += act.len();
                for p in 0..hw {
                    for j in 0..n {
                        let b = f64::from(act[j * hw + p]);
                        bv[j] = b;
                        sb[j] += b;
                        sbb[j] += b * b;
                    }
                    for i in 0..n {
                        let a = a_node[i * hw + p];
                        av[i] = a;
                        sa[i] += a;
                        saa[i] += a * a;
                    }
                    for i in 0..n {
                        let row = &mut sim[i * n..(i + 1) * n];
                        for (c, &b) in row.iter_mut().zip(bv.iter()) {
                            *c += av[i] * b;
                        }
                    }
                }
            })?;
        }
        *mo.count += (positions * plan.samples) as f64;
        Ok(())
    }

    /// A's and B's outputs of fitted layer `f` for sample `s` into `ta` and `tb`.
    fn targets_of(
        &mut self,
        f: usize,
        s: usize,
        ta: &mut [f64],
        tb: &mut [f64],
    ) -> Result<(), CnnMergeError> {
        let node = self.plan.fitted[f].0 + 1;
        for (model, t) in [(Model::A, ta), (Model::B, tb)] {
            self.run_original(model, s, node, &mut |v, act| {
                if v == node {
                    for (o, &x) in t.iter_mut().zip(act) {
                        *o = f64::from(x);
                    }
                }
            })?;
        }
        Ok(())
    }

    /// Runs the merged network (weights `weights`) on sample `s` up to fitted layer `f`'s
    /// input; returns that node.
    fn merged_input(
        &mut self,
        f: usize,
        s: usize,
        weights: &[f32],
    ) -> Result<usize, CnnMergeError> {
        self.load(true, s)?;
        let node = self.merged.network().layers[self.plan.fitted[f].1].input;
        let params = &weights[..self.merged.params_len()];
        self.merged
            .run_to(params, self.forward, node, &mut |_, _| {})
            .map_err(CnnMergeError::Forward)?;
        Ok(node)
    }

    /// One fit pass over every sample and output position.
    fn fit(
        &mut self,
        pass: &FitPass<'_>,
        part: FitPart,
        weights: &[f32],
        out: &mut [f64],
        scratch: &mut [f64],
    ) -> Result<(), CnnMergeError> {
        let plan = self.plan;
        let f = pass.layers[0];
        let cols = columns_of(pass);
        let (k, rows) = (cols.len(), pass.rows.clone());
        let c = rows.len();
        let t_len = plan.original_outputs[f] * plan.schedule.layers[f].rows_per_sample;
        let (ta, rest) = scratch.split_at_mut(t_len);
        let (tb, rest) = rest.split_at_mut(t_len);
        let (xb, rest) = rest.split_at_mut(k);
        let eb = &mut rest[..c];
        let hw = plan.schedule.layers[f].rows_per_sample;
        let orig_layer = plan.fitted[f].0;
        let window = match plan.merged_network().layers[plan.fitted[f].1].op {
            LayerOp::Conv2d { window, .. } => Some(window),
            _ => None,
        };
        let out_w = plan.shapes[orig_layer + 1].w;
        let needs_targets = matches!(part, FitPart::Cross | FitPart::Targets);
        for s in 0..plan.samples {
            if needs_targets {
                self.targets_of(f, s, ta, tb)?;
            }
            let node = self.merged_input(f, s, weights)?;
            let shape = self
                .merged
                .shape(node)
                .ok_or(CnnMergeError::UnsupportedPass)?;
            let input = self
                .merged
                .node(node, self.forward)
                .ok_or(CnnMergeError::UnsupportedPass)?;
            for p in 0..hw {
                // The im2row patch of position p: per block channel, its window's taps.
                let ni = cols.inputs();
                let patch = cols.patch.max(1);
                for (a, x) in xb.iter_mut().enumerate().take(ni) {
                    let ch = cols.channel(a / patch);
                    *x = match window {
                        None => f64::from(input[ch]),
                        Some(w) => {
                            let (ky, kx) = ((a % patch) / w.kernel[1], (a % patch) % w.kernel[1]);
                            let (oy, ox) = (p / out_w, p % out_w);
                            let iy = (oy * w.stride[0] + ky).checked_sub(w.padding[0]);
                            let ix = (ox * w.stride[1] + kx).checked_sub(w.padding[1]);
                            match (iy, ix) {
                                (Some(iy), Some(ix)) if iy < shape.h && ix < shape.w => {
                                    f64::from(input[(ch * shape.h + iy) * shape.w + ix])
                                }
                                _ => 0.0,
                            }
                        }
                    };
                }
                if cols.bias {
                    xb[ni] = 1.0;
                }
                let row = s * hw + p;
                match part {
                    FitPart::Gram => {
                        for a in 0..k {
                            let base = packed_index(a, 0);
                            let xa = xb[a];
                            for (g, &x) in out[base..=base + a].iter_mut().zip(&xb[..=a]) {
                                *g += xa * x;
                            }
                        }
                    }
                    FitPart::Inputs => out[row * k..(row + 1) * k].copy_from_slice(&xb[..k]),
                    FitPart::Cross | FitPart::Targets => {
                        for (e, r) in eb.iter_mut().zip(rows.clone()) {
                            let src = plan.schedule.row_source(self.indices, f, r);
                            let t =
                                src.target(|i| ta[i * hw + p] as f32, |j| tb[j * hw + p] as f32);
                            *e = if part == FitPart::Cross {
                                plan.schedule.residual(f, r, t, &cols, weights, |a| xb[a])
                            } else {
                                f64::from(t)
                            };
                        }
                        if part == FitPart::Targets {
                            out[row * c..(row + 1) * c].copy_from_slice(eb);
                        } else {
                            for a in 0..k {
                                let xa = xb[a];
                                for (v, &e) in out[a * c..(a + 1) * c].iter_mut().zip(&*eb) {
                                    *v += xa * e;
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the pass's request and runs it.
    fn fit_pass(
        &mut self,
        pass: &FitPass<'_>,
        weights: &[f32],
        mo: &mut FitMoments<'_>,
        scratch: &mut [f64],
    ) -> Result<(), CnnMergeError> {
        let w = pass.wants;
        let parts = [w.gram, w.cross, w.target_sq_sums, w.inputs, w.targets];
        let residual_ok = (pass.target == TargetForm::Residual) == w.cross;
        if pass.layers.len() != 1 || parts.iter().filter(|&&p| p).count() != 1 || !residual_ok {
            return Err(CnnMergeError::UnsupportedPass);
        }
        match (&mut mo.gram, &mut mo.cross, &mut mo.inputs, &mut mo.targets) {
            (GramOut::Packed(g), None, None, None) if w.gram => {
                self.fit(pass, FitPart::Gram, weights, g, scratch)
            }
            (GramOut::None, Some(rhs), None, None) if w.cross => {
                self.fit(pass, FitPart::Cross, weights, rhs, scratch)
            }
            (GramOut::None, None, Some(x), None) if w.inputs => {
                self.fit(pass, FitPart::Inputs, weights, x, scratch)
            }
            (GramOut::None, None, None, Some(t)) if w.targets => {
                self.fit(pass, FitPart::Targets, weights, t, scratch)
            }
            _ => Err(CnnMergeError::UnsupportedPass),
        }
    }
}

impl PassSource for CnnSource<'_> {
    type Weights = [f32];
    type Error = CnnMergeError;

    /// A's activations of a group's nodes for a matching pass; A's and B's outputs of the
    /// layer, one position's inputs and targets for a fit pass.
    fn scratch_len(&self, pass: &Pass<'_>) -> usize {
        match pass {
            Pass::Matching { group } if *group < self.plan.groups() => {
                self.plan.matching_source_len(*group)
            }
            Pass::Fit(p) if p.layers.len() == 1 && p.layers[0] < self.plan.fitted_layers() => self
                .plan
                .fit_source_len(p.layers[0], p.columns.len(), p.rows.len()),
            _ => 0,
        }
    }

    fn run(
        &mut self,
        pass: &Pass<'_>,
        weights: &[f32],
        moments: &mut Moments<'_>,
        scratch: &mut [f64],
    ) -> Result<(), CnnMergeError> {
        let needed = self.scratch_len(pass);
        if scratch.len() < needed {
            return Err(CnnMergeError::ScratchTooSmall {
                kind: CnnBuffer::Scratch,
                needed,
                provided: scratch.len(),
            });
        }
        match (pass, moments) {
            (Pass::Matching { group }, Moments::Group(mo)) if *group < self.plan.groups() => {
                self.group_moments(*group, mo, scratch)
            }
            (Pass::Fit(p), Moments::Fit(mo))
                if p.layers.len() == 1 && p.layers[0] < self.plan.fitted_layers() =>
            {
                self.fit_pass(p, weights, mo, scratch)
            }
            _ => Err(CnnMergeError::UnsupportedPass),
        }
    }
}

impl<'s> DeviceSource<'s> for CnnSource<'s> {
    fn schedule(&self) -> &MergeSchedule {
        &self.plan.schedule
    }

    fn unit_weights(&self, model: Model, f: usize, unit: usize) -> UnitWeights<'s> {
        let params = match model {
            Model::A => self.a,
            Model::B => self.b,
        };
        let l = &self.plan.schedule.layers[f];
        let row = l.in_channels * l.patch;
        let range = self.original.param_range(self.plan.fitted[f].0);
        let p = &params[range];
        let outputs = self.plan.original_outputs[f];
        let bias = l.bias.then(|| p[outputs * row + unit]);
        (&p[unit * row..(unit + 1) * row], bias)
    }

    fn sample_rows(&self, _f: usize) -> Option<Samples<'s>> {
        None
    }
}
