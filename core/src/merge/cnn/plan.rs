//! The plan of a CNN merge: which layers are fitted and which nodes carry each permutation
//! group, the ratios and merged widths from the budget, the merged network's description and
//! parameter layout, and the sizes of the caller's buffers.

use super::error::{CnnBuffer, CnnMergeError};
use super::{CnnMergeParams, Heads};
use crate::forward::compact::{
    CompactPlan, Layer, LayerOp, MAX_LAYERS, MAX_NODES, MapShape, Network,
};
use crate::forward::compact_fold::FoldedNetwork;
use crate::merge::budget::{BudgetError, LayerCost, flop_ratio, merged_pairs, uniform_ratio};
use crate::merge::driver::{
    FittedLayer, GroupPlan, LayerInput, MAX_FITTED, MAX_GROUPS, MergeSchedule, block_scratch_len,
    matching_scratch_len,
};
use crate::merge::sources::TargetRule;

/// Everything the caller needs to size its buffers, and the merged network.
///
/// The merged network is the models' chain with every conv or linear layer widened to its
/// merged group (`2n - k` channels laid out `[merged | A-only | B-only]`, the cross blocks
/// zero), and, with [`Heads::Separate`], a second head: layer `L` (the models' layer count)
/// is head `b`, reading the same node as head `a` (layer `L - 1`). Its parameters are laid
/// out as [`CompactPlan`] lays out those of [`CnnMergePlan::merged_network`]: the output
/// buffer runs as it is through the compact forward pass.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CnnMergePlan {
    /// Fraction of every group's units kept separate.
    pub ratio: f64,
    /// The FLOP ratio of the merged network to one model (the budget model's count).
    pub flop_ratio: f64,
    /// Merge samples.
    pub samples: usize,
    /// f32 values of the merged parameters.
    pub output_len: usize,
    /// f64 elements of scratch [`cnn_merge`](super::cnn_merge) needs.
    pub scratch_len: usize,
    /// f32 elements of forward-pass scratch it needs.
    pub forward_len: usize,
    /// Elements of index scratch it needs.
    pub index_len: usize,
    /// f32 values of one model's folded parameters (0 when nothing is folded: the models'
    /// parameters are then read where they are).
    pub folded_params_len: usize,
    pub(super) schedule: MergeSchedule,
    pub(super) input: MapShape,
    merged_layers: heapless::Vec<Layer, MAX_LAYERS>,
    merged_outputs: heapless::Vec<usize, 2>,
    /// Per fitted layer: its layer in the models' network and in the merged one.
    pub(super) fitted: heapless::Vec<(usize, usize), MAX_FITTED>,
    /// Per group: the last node carrying it (its first is the output of fitted layer `g`).
    pub(super) group_end: heapless::Vec<usize, MAX_GROUPS>,
    /// Per fitted layer: output channels of the models' layer.
    pub(super) original_outputs: heapless::Vec<usize, MAX_FITTED>,
    /// Per node of the models' network: its shape.
    pub(super) shapes: heapless::Vec<MapShape, MAX_NODES>,
}

impl CnnMergePlan {
    /// The merged network (its parameters: the output buffer of a merge).
    pub fn merged_network(&self) -> Network<'_> {
        Network {
            input: self.input,
            layers: &self.merged_layers,
            outputs: &self.merged_outputs,
        }
    }

    /// Permutation groups (one per conv or linear layer before the head).
    pub fn groups(&self) -> usize {
        self.schedule.groups.len()
    }

    /// Units per model and merged pairs of group `g`.
    pub fn group(&self, g: usize) -> Option<(usize, usize)> {
        self.schedule.groups.get(g).map(|p| (p.width, p.merged))
    }

    /// Fitted layers: one per conv or linear layer, and a second head with
    /// [`Heads::Separate`].
    pub fn fitted_layers(&self) -> usize {
        self.schedule.layers.len()
    }

    /// Bytes of the caller's buffers: merged parameters, f64 scratch, forward scratch and
    /// index scratch.
    pub fn bytes(&self) -> (usize, usize, usize, usize) {
        (
            self.output_len.saturating_mul(4),
            self.scratch_len.saturating_mul(8),
            self.forward_len.saturating_mul(4),
            self.index_len.saturating_mul(core::mem::size_of::<usize>()),
        )
    }

    /// The nodes of the models' network carrying group `g`: the output of fitted layer `g`
    /// and the ReLU / pooling nodes after it, up to the next fitted layer's input.
    pub(super) fn group_nodes(&self, g: usize) -> core::ops::RangeInclusive<usize> {
        self.fitted[g].0 + 1..=self.group_end[g]
    }

    /// f64 values the source needs for the matching pass of group `g`: A's activations of
    /// the group's nodes and one position's units of each model.
    pub(super) fn matching_source_len(&self, g: usize) -> usize {
        let nodes: usize = self.group_nodes(g).map(|n| self.shapes[n].len()).sum();
        nodes.saturating_add(2 * self.schedule.groups[g].width)
    }

    /// f64 values the source needs for a fit pass of fitted layer `f` with `k` columns and
    /// `c` target rows: A's and B's outputs of the layer, one position's inputs and targets.
    pub(super) fn fit_source_len(&self, f: usize, k: usize, c: usize) -> usize {
        let t = self.original_outputs[f].saturating_mul(self.schedule.layers[f].rows_per_sample);
        t.saturating_mul(2).saturating_add(k).saturating_add(c)
    }
}

fn check_budget(budget: f64) -> Result<(), CnnMergeError> {
    if (1.0..=2.0).contains(&budget) {
        Ok(())
    } else {
        Err(CnnMergeError::BudgetOutOfRange { budget })
    }
}

/// The conv and linear layers of a chain ending in its linear head, its only output.
fn fitted_of(net: &Network<'_>) -> Result<heapless::Vec<usize, MAX_FITTED>, CnnMergeError> {
    let mut fitted = heapless::Vec::new();
    for (l, layer) in net.layers.iter().enumerate() {
        if layer.input != l {
            return Err(CnnMergeError::NotAChain { layer: l });
        }
        match layer.op {
            LayerOp::Conv2d { .. } | LayerOp::Linear { .. } => {
                fitted.push(l).map_err(|_| CnnMergeError::TooManyGroups {
                    groups: net.layers.len(),
                    max: MAX_GROUPS,
                })?;
            }
            LayerOp::BatchNorm { .. } => {
                return Err(CnnMergeError::UnsupportedLayer {
                    layer: l,
                    what: "batch-norm (fold it into the layer before)",
                });
            }
            LayerOp::Add { .. } => {
                return Err(CnnMergeError::UnsupportedLayer {
                    layer: l,
                    what: "a residual add",
                });
            }
            LayerOp::Relu | LayerOp::MaxPool(_) | LayerOp::AvgPool(_) | LayerOp::GlobalAvgPool => {}
        }
    }
    let last = net.layers.len() - 1;
    let head_is_last = fitted.last() == Some(&last)
        && matches!(net.layers[last].op, LayerOp::Linear { .. })
        && net.outputs == [last + 1];
    if !head_is_last || fitted.len() < 2 {
        return Err(CnnMergeError::NoHead);
    }
    Ok(fitted)
}

/// Output channels, bias and patch of conv or linear layer `op`.
fn layer_shape(op: &LayerOp) -> (usize, bool, usize) {
    match *op {
        LayerOp::Conv2d {
            out_channels,
            window,
            bias,
        } => (out_channels, bias, window.kernel[0] * window.kernel[1]),
        LayerOp::Linear { out_features, bias } => (out_features, bias, 1),
        _ => (0, false, 1),
    }
}

/// `op` with `outputs` output channels.
fn widened(op: LayerOp, outputs: usize) -> LayerOp {
    match op {
        LayerOp::Conv2d { window, bias, .. } => LayerOp::Conv2d {
            out_channels: outputs,
            window,
            bias,
        },
        LayerOp::Linear { bias, .. } => LayerOp::Linear {
            out_features: outputs,
            bias,
        },
        op => op,
    }
}

/// The plan for merging two CNNs of architecture `net` (a chain of conv, linear, ReLU,
/// max / average / global average pooling layers and batch-norms that follow a conv or
/// linear layer, which are folded into it, ending in one linear head) on `samples` merge samples under `budget` with `params`.
pub fn cnn_merge_plan(
    net: &Network<'_>,
    heads: Heads,
    samples: usize,
    budget: f64,
    params: &CnnMergeParams,
) -> Result<CnnMergePlan, CnnMergeError> {
    let folded = FoldedNetwork::new(net).map_err(CnnMergeError::Network)?;
    let folded_net = folded.network(net.input);
    let net = &folded_net;
    let orig = CompactPlan::new(*net).map_err(CnnMergeError::Network)?;
    let fitted = fitted_of(net)?;
    if samples == 0 {
        return Err(CnnMergeError::NoSamples);
    }
    check_budget(budget)?;
    let r = params.relative_ridge;
    if !(r.is_finite() && r > 0.0) {
        return Err(CnnMergeError::InvalidRidge { relative: r });
    }
    let shapes: heapless::Vec<MapShape, MAX_NODES> = (0..=net.layers.len())
        .filter_map(|n| orig.shape(n))
        .collect();
    let groups = fitted.len() - 1;
    if groups > MAX_GROUPS {
        return Err(CnnMergeError::TooManyGroups {
            groups,
            max: MAX_GROUPS,
        });
    }
    // The budget model of the host: one cost per conv or linear layer (the head once).
    let mut costs = [LayerCost {
        input_group: None,
        output_group: None,
        macs: 0.0,
        weights: 0.0,
        biases: 0.0,
    }; MAX_FITTED];
    for (f, &l) in fitted.iter().enumerate() {
        let (out, bias, patch) = layer_shape(&net.layers[l].op);
        let (s_in, s_out) = (shapes[l], shapes[l + 1]);
        let in_c = match net.layers[l].op {
            LayerOp::Linear { .. } => s_in.len(),
            _ => s_in.c,
        };
        if f > 0 && in_c != s_in.c {
            return Err(CnnMergeError::SpatialLinear { layer: l });
        }
        let weights = (in_c as u64)
            .saturating_mul(out as u64)
            .saturating_mul(patch as u64);
        let macs = weights.saturating_mul((s_out.h as u64).saturating_mul(s_out.w as u64));
        costs[f] = LayerCost {
            input_group: f.checked_sub(1),
            output_group: (f < groups).then_some(f),
            macs: macs as f64,
            weights: weights as f64,
            biases: if bias { out as f64 } else { 0.0 },
        };
    }
    let costs = &costs[..fitted.len()];
    let ratio = uniform_ratio(costs, groups, budget).map_err(|e| match e {
        BudgetError::OutOfRange { budget } => CnnMergeError::BudgetOutOfRange { budget },
        _ => CnnMergeError::SizeOverflow,
    })?;
    let ratios = [ratio; MAX_GROUPS];
    let mut plan = CnnMergePlan {
        ratio,
        flop_ratio: flop_ratio(costs, &ratios[..groups]),
        samples,
        output_len: 0,
        scratch_len: 0,
        forward_len: 0,
        index_len: 0,
        folded_params_len: if folded.folds() { orig.params_len() } else { 0 },
        schedule: MergeSchedule {
            groups: heapless::Vec::new(),
            layers: heapless::Vec::new(),
            samples,
            ridge_toward: params.ridge_toward,
            form: params.form,
            rhs_chunk: params.rhs_chunk.max(1),
        },
        input: net.input,
        merged_layers: net.layers.iter().copied().collect(),
        merged_outputs: heapless::Vec::new(),
        fitted: heapless::Vec::new(),
        group_end: heapless::Vec::new(),
        original_outputs: heapless::Vec::new(),
        shapes,
    };
    for g in 0..groups {
        let n = layer_shape(&net.layers[fitted[g]].op).0;
        let k = merged_pairs(n, ratio);
        let _ = plan.schedule.groups.push(GroupPlan {
            width: n,
            merged: k,
        });
        let _ = plan.group_end.push(fitted[g + 1]);
        let l = fitted[g];
        plan.merged_layers[l].op = widened(net.layers[l].op, 2 * n - k);
    }
    let head = net.layers.len() - 1;
    let _ = plan.merged_outputs.push(head + 1);
    if heads == Heads::Separate {
        plan.merged_layers.push(net.layers[head]).map_err(|_| {
            CnnMergeError::Network(crate::forward::compact::CompactError::LayerCount {
                layers: net.layers.len() + 1,
            })
        })?;
        let _ = plan.merged_outputs.push(head + 2);
    }
    fill_layers(&mut plan, net, &fitted, heads)?;
    plan.scratch_len = scratch_len(&plan)?;
    let merged = CompactPlan::new(plan.merged_network()).map_err(CnnMergeError::Network)?;
    plan.forward_len = orig
        .scratch_len()
        .max(merged.scratch_len())
        .checked_add(2 * plan.folded_params_len)
        .ok_or(CnnMergeError::SizeOverflow)?;
    plan.index_len = plan.schedule.index_len();
    Ok(plan)
}

/// The schedule's fitted layers and the output layout, from the merged network.
fn fill_layers(
    plan: &mut CnnMergePlan,
    net: &Network<'_>,
    fitted: &[usize],
    heads: Heads,
) -> Result<(), CnnMergeError> {
    let (params_len, starts) = {
        let merged = CompactPlan::new(plan.merged_network()).map_err(CnnMergeError::Network)?;
        let starts: heapless::Vec<usize, MAX_LAYERS> = (0..plan.merged_layers.len())
            .map(|l| merged.param_range(l).start)
            .collect();
        (merged.params_len(), starts)
    };
    plan.output_len = params_len;
    let groups = fitted.len() - 1;
    let head_count = if heads == Heads::Separate { 2 } else { 1 };
    let mut layers: heapless::Vec<FittedLayer, MAX_FITTED> = heapless::Vec::new();
    let mut map: heapless::Vec<(usize, usize), MAX_FITTED> = heapless::Vec::new();
    let mut outs: heapless::Vec<usize, MAX_FITTED> = heapless::Vec::new();
    for f in 0..groups + head_count {
        let (orig_l, merged_l) = if f <= groups {
            (fitted[f], fitted[f])
        } else {
            (fitted[groups], net.layers.len())
        };
        let fi = f.min(groups);
        let (out, bias, patch) = layer_shape(&net.layers[orig_l].op);
        let s_in = plan.shapes[orig_l];
        let s_out = plan.shapes[orig_l + 1];
        let (input, in_channels) = match fi {
            0 => (
                LayerInput::Samples,
                match net.layers[orig_l].op {
                    LayerOp::Linear { .. } => s_in.len(),
                    _ => s_in.c,
                },
            ),
            g => (LayerInput::Group(g - 1), s_in.c),
        };
        let target = if f < groups {
            TargetRule::Layout(f)
        } else {
            match (heads, f - groups) {
                (Heads::Shared, _) => TargetRule::Average,
                (Heads::Separate, 0) => TargetRule::OnlyA,
                (Heads::Separate, _) => TargetRule::OnlyB,
            }
        };
        let outputs = match target {
            TargetRule::Layout(g) => plan.schedule.groups[g].merged_width(),
            _ => out,
        };
        let weight_start = starts[merged_l];
        let in_width = match input {
            LayerInput::Samples => in_channels,
            LayerInput::Group(g) => plan.schedule.groups[g].merged_width(),
        };
        let weight_len = outputs
            .checked_mul(in_width)
            .and_then(|v| v.checked_mul(patch))
            .ok_or(CnnMergeError::SizeOverflow)?;
        let _ = layers.push(FittedLayer {
            input,
            in_channels,
            patch,
            target,
            outputs,
            bias,
            weight_start,
            bias_start: weight_start + weight_len,
            rows_per_sample: s_out.h * s_out.w,
        });
        let _ = map.push((orig_l, merged_l));
        let _ = outs.push(out);
    }
    plan.schedule.layers = layers;
    plan.fitted = map;
    plan.original_outputs = outs;
    Ok(())
}

/// The f64 scratch: the most any matching or solved block needs, its source's included.
fn scratch_len(plan: &CnnMergePlan) -> Result<usize, CnnMergeError> {
    let s = &plan.schedule;
    let mut need = 0usize;
    for (g, p) in s.groups.iter().enumerate() {
        need = need.max(matching_scratch_len(p.width).saturating_add(plan.matching_source_len(g)));
    }
    for f in (0..s.layers.len()).filter(|&f| !s.copies(f)) {
        for block in s.blocks(f) {
            let cols = s.columns(f, &block);
            let rows = block.rows.len();
            let own = block_scratch_len(s, f, &cols, rows, true);
            let source = plan.fit_source_len(f, cols.len(), s.chunk(rows));
            need = need.max(own.saturating_add(source));
        }
    }
    if need == usize::MAX {
        return Err(CnnMergeError::SizeOverflow);
    }
    Ok(need)
}

/// Checks the caller's buffers against the plan.
pub(super) fn check_buffers(
    plan: &CnnMergePlan,
    out: usize,
    scratch: usize,
    forward: usize,
    indices: usize,
) -> Result<(), CnnMergeError> {
    for (kind, needed, provided) in [
        (CnnBuffer::Output, plan.output_len, out),
        (CnnBuffer::Scratch, plan.scratch_len, scratch),
        (CnnBuffer::Forward, plan.forward_len, forward),
        (CnnBuffer::Indices, plan.index_len, indices),
    ] {
        if provided < needed {
            return Err(CnnMergeError::ScratchTooSmall {
                kind,
                needed,
                provided,
            });
        }
    }
    Ok(())
}
