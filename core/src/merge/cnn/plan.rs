//! The plan of a CNN merge: which layers are fitted and which nodes carry each permutation
//! group, the ratios and merged widths from the budget, the merged network's description and
//! parameter layout, and the sizes of the caller's buffers.

use super::error::{CnnBuffer, CnnMergeError};
use super::{CnnMergeParams, Heads};
use crate::forward::compact::{
    CompactPlan, Layer, LayerOp, MAX_LAYERS, MAX_NODES, MapShape, Network,
};
use crate::forward::compact_fold::FoldedNetwork;
use crate::merge::budget::{
    BudgetError, LayerCost, check_budget, flop_ratio, merged_pairs, uniform_ratio,
};
use crate::merge::driver::{
    FittedLayer, GroupPlan, LayerInput, MAX_FITTED, MAX_GROUPS, MergeSchedule, block_scratch_len,
    matching_scratch_len,
};
use crate::merge::sources::TargetRule;

/// Everything the caller needs to size its buffers, and the merged network.
///
/// The merged network is the models' network with every conv or linear layer widened to its
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
    /// Per node of the models' network: the permutation group its channels carry.
    pub(super) node_group: heapless::Vec<Option<usize>, MAX_NODES>,
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

    /// Permutation groups (one per conv or linear layer before the head, less one per
    /// residual add joining two).
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

    /// The nodes of the models' network carrying group `g`, in node order: the outputs of
    /// the conv or linear layers producing it, the ReLU / pooling nodes after them and the
    /// residual adds joining them.
    pub(super) fn group_nodes(&self, g: usize) -> impl Iterator<Item = usize> + Clone + '_ {
        (0..self.node_group.len()).filter(move |&v| self.node_group[v] == Some(g))
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

/// The fitted layers of a network and the permutation group of each node.
struct Structure {
    /// The conv and linear layers, the head last.
    fitted: heapless::Vec<usize, MAX_FITTED>,
    /// Per node: the group its channels carry (`None`: the input, what passes it through,
    /// and the head's output).
    node_group: heapless::Vec<Option<usize>, MAX_NODES>,
    /// Groups, numbered in order of their first node.
    groups: usize,
}

/// The root of node `v` in the union-find `parent`.
fn root(parent: &[usize], mut v: usize) -> usize {
    while parent[v] != v {
        v = parent[v];
    }
    v
}

/// The conv and linear layers of a network ending in its linear head, its only output, and
/// the permutation groups of its nodes (the host's `permutation_groups` rules): each conv or
/// linear layer before the head starts a group, ReLU and pooling pass their input's on, and
/// a residual add makes the groups of its two operands one.
fn structure(net: &Network<'_>) -> Result<Structure, CnnMergeError> {
    let fitted_count = net
        .layers
        .iter()
        .filter(|l| matches!(l.op, LayerOp::Conv2d { .. } | LayerOp::Linear { .. }))
        .count();
    let too_many = || CnnMergeError::TooManyFitted {
        layers: fitted_count,
        max: MAX_FITTED - 1,
    };
    let mut fitted = heapless::Vec::new();
    // Union-find over nodes; `usize::MAX`: no group.
    let mut parent = [usize::MAX; MAX_NODES];
    let last = net.layers.len() - 1;
    for (l, layer) in net.layers.iter().enumerate() {
        let (v, input) = (l + 1, parent[layer.input]);
        parent[v] = match layer.op {
            LayerOp::Conv2d { .. } | LayerOp::Linear { .. } => {
                fitted.push(l).map_err(|_| too_many())?;
                v
            }
            LayerOp::BatchNorm { .. } => {
                return Err(CnnMergeError::UnsupportedLayer {
                    layer: l,
                    what: "batch-norm (fold it into the layer before)",
                });
            }
            LayerOp::Add { other } => {
                if input == usize::MAX || parent[other] == usize::MAX {
                    return Err(CnnMergeError::UnsupportedLayer {
                        layer: l,
                        what: "a residual add of the network input (no group permutes it)",
                    });
                }
                let (ra, rb) = (root(&parent, layer.input), root(&parent, other));
                // The smaller root stays: groups keep the order of their first node.
                let (keep, join) = (ra.min(rb), ra.max(rb));
                parent[join] = keep;
                keep
            }
            LayerOp::Relu | LayerOp::MaxPool(_) | LayerOp::AvgPool(_) | LayerOp::GlobalAvgPool => {
                if input == usize::MAX {
                    usize::MAX
                } else {
                    layer.input
                }
            }
        };
    }
    let head_is_last = fitted.last() == Some(&last)
        && matches!(net.layers[last].op, LayerOp::Linear { .. })
        && net.outputs == [last + 1];
    if !head_is_last || fitted.len() < 2 {
        return Err(CnnMergeError::NoHead);
    }
    if fitted.len() > MAX_FITTED - 1 {
        return Err(too_many());
    }
    parent[last + 1] = usize::MAX;
    let mut node_group = heapless::Vec::new();
    let mut roots: heapless::Vec<usize, MAX_NODES> = heapless::Vec::new();
    for v in 0..=net.layers.len() {
        let group = (parent[v] != usize::MAX).then(|| {
            let r = root(&parent, v);
            roots.iter().position(|&x| x == r).unwrap_or_else(|| {
                let _ = roots.push(r);
                roots.len() - 1
            })
        });
        let _ = node_group.push(group);
    }
    if roots.len() > MAX_GROUPS {
        return Err(CnnMergeError::TooManyGroups {
            groups: roots.len(),
            max: MAX_GROUPS,
        });
    }
    Ok(Structure {
        fitted,
        node_group,
        groups: roots.len(),
    })
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

/// The budget model of the host: one cost per conv or linear layer (the head once), with
/// the groups it reads and writes.
fn layer_costs(
    net: &Network<'_>,
    fitted: &[usize],
    node_group: &[Option<usize>],
    shapes: &[MapShape],
) -> Result<[LayerCost; MAX_FITTED], CnnMergeError> {
    let mut costs = [LayerCost {
        input_group: None,
        output_group: None,
        macs: 0.0,
        weights: 0.0,
        biases: 0.0,
    }; MAX_FITTED];
    for (f, &l) in fitted.iter().enumerate() {
        let (out, bias, patch) = layer_shape(&net.layers[l].op);
        let input = net.layers[l].input;
        let (s_in, s_out) = (shapes[input], shapes[l + 1]);
        let in_c = match net.layers[l].op {
            LayerOp::Linear { .. } => s_in.len(),
            _ => s_in.c,
        };
        if node_group[input].is_some() && in_c != s_in.c {
            return Err(CnnMergeError::SpatialLinear { layer: l });
        }
        let weights = (in_c as u64)
            .saturating_mul(out as u64)
            .saturating_mul(patch as u64);
        let macs = weights.saturating_mul((s_out.h as u64).saturating_mul(s_out.w as u64));
        costs[f] = LayerCost {
            input_group: node_group[input],
            output_group: node_group[l + 1],
            macs: macs as f64,
            weights: weights as f64,
            biases: if bias { out as f64 } else { 0.0 },
        };
    }
    Ok(costs)
}

/// The plan for merging two CNNs of architecture `net` (conv, linear, ReLU, max / average /
/// global average pooling layers, residual adds and batch-norms that follow a conv or linear
/// layer, which are folded into it, ending in one linear head) on `samples` merge samples
/// under `budget` with `params`.
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
    let Structure {
        fitted,
        node_group,
        groups,
    } = structure(net)?;
    if samples == 0 {
        return Err(CnnMergeError::NoSamples);
    }
    check_budget(budget).map_err(|_| CnnMergeError::BudgetOutOfRange { budget })?;
    let r = params.relative_ridge;
    if !(r.is_finite() && r > 0.0) {
        return Err(CnnMergeError::InvalidRidge { relative: r });
    }
    let shapes: heapless::Vec<MapShape, MAX_NODES> = (0..=net.layers.len())
        .filter_map(|n| orig.shape(n))
        .collect();
    let costs = layer_costs(net, &fitted, &node_group, &shapes)?;
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
        node_group: heapless::Vec::new(),
        original_outputs: heapless::Vec::new(),
        shapes,
    };
    for g in 0..groups {
        // The group's first node is a conv or linear output: its channels are the width.
        let first = node_group.iter().position(|&x| x == Some(g)).unwrap_or(0);
        let n = plan.shapes[first].c;
        let _ = plan.schedule.groups.push(GroupPlan {
            width: n,
            merged: merged_pairs(n, ratio),
        });
    }
    for &l in &fitted[..fitted.len() - 1] {
        if let Some(g) = node_group[l + 1] {
            let width = plan.schedule.groups[g].merged_width();
            plan.merged_layers[l].op = widened(net.layers[l].op, width);
        }
    }
    plan.node_group = node_group;
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
    let body = fitted.len() - 1;
    let head_count = if heads == Heads::Separate { 2 } else { 1 };
    let mut layers: heapless::Vec<FittedLayer, MAX_FITTED> = heapless::Vec::new();
    let mut map: heapless::Vec<(usize, usize), MAX_FITTED> = heapless::Vec::new();
    let mut outs: heapless::Vec<usize, MAX_FITTED> = heapless::Vec::new();
    for f in 0..body + head_count {
        let (orig_l, merged_l) = if f <= body {
            (fitted[f], fitted[f])
        } else {
            (fitted[body], net.layers.len())
        };
        let (out, bias, patch) = layer_shape(&net.layers[orig_l].op);
        let in_node = net.layers[orig_l].input;
        let s_in = plan.shapes[in_node];
        let s_out = plan.shapes[orig_l + 1];
        let (input, in_channels) = match plan.node_group[in_node] {
            None => (
                LayerInput::Samples,
                match net.layers[orig_l].op {
                    LayerOp::Linear { .. } => s_in.len(),
                    _ => s_in.c,
                },
            ),
            Some(g) => (LayerInput::Group(g), s_in.c),
        };
        let target = match plan.node_group[orig_l + 1] {
            Some(g) if f < body => TargetRule::Layout(g),
            _ => match (heads, f.saturating_sub(body)) {
                (Heads::Shared, _) => TargetRule::Average,
                (Heads::Separate, 0) => TargetRule::OnlyA,
                (Heads::Separate, _) => TargetRule::OnlyB,
            },
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
