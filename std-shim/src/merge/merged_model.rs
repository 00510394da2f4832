//! The merged network: the original graph with every group widened to its layout
//! `[merged | A-only | B-only]`, every conv and linear layer block-structured (the cross blocks
//! between A-only and B-only units are neither stored nor computed), and its initial weights by
//! permute-and-average (docs/ALGORITHM.md sections 3 and 4).
//!
//! Node ids mirror the original graph's. With two heads (different label spaces) the original
//! head node becomes head A (`{head}.a`, reading `[merged | A-only]`) and head B (`{head}.b`,
//! reading `[merged | B-only]`) is appended as the last node; the graph outputs are `a` and `b`.

use std::ops::Range;

use pleas_core::graph::{
    Graph, GraphError, Groups, Node, NodeId, Op, Tensor, WeightBlock, Weights,
};
use pleas_core::merge::blocks::{InputSide, OutputBlock, output_blocks};
use pleas_core::merge::layout::GroupLayout;
use pleas_core::merge::prior::{UnitWeights, write_prior_row};
pub use pleas_core::merge::sources::{Heads, TargetRule};
use pleas_core::merge::sources::{UnitLayout, row_source};

use super::layers::{Layer, LayerKind};
use crate::error::Error;

/// How a layer's merged input is formed from A's and B's inputs (non-sequential fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRule {
    /// Through the layout of this group.
    Layout(usize),
    /// Plain average (an axis in no group, e.g. the image).
    Average,
}

/// A block-structured layer of the merged network and how it is fitted.
#[derive(Debug, Clone)]
pub struct MergedLayer {
    /// Its node in the merged graph.
    pub node: NodeId,
    /// Its original layer (index into the plan's layers).
    pub source: usize,
    /// Merged input formation.
    pub input_rule: InputRule,
    /// Target formation.
    pub target_rule: TargetRule,
    /// Geometry.
    pub kind: LayerKind,
    /// Input channels of the merged layer.
    pub in_channels: usize,
    /// Output channels of the merged layer.
    pub outputs: usize,
    /// Whether the layer has a bias (the last dense column).
    pub bias: bool,
    /// Output blocks: rows and allowed dense columns (`channel * patch + position`, then bias).
    pub blocks: Vec<OutputBlock>,
    /// Per block: weight and bias tensor names.
    pub tensors: Vec<(String, Option<String>)>,
}

impl MergedLayer {
    /// Dense columns (`in_channels * patch`, plus one for the bias).
    pub fn columns(&self) -> usize {
        self.in_channels * self.kind.patch() + usize::from(self.bias)
    }

    /// The layer's weights as a dense `outputs x columns` matrix (zeros outside the blocks).
    pub fn dense(&self, weights: &Weights) -> Vec<f64> {
        let d = self.columns();
        let mut w = vec![0.0; self.outputs * d];
        for (b, (wn, bn)) in self.blocks.iter().zip(&self.tensors) {
            let wt = weights[wn].data();
            let nc = b.cols.len() - usize::from(self.bias);
            for (r, row) in b.rows.clone().enumerate() {
                for c in 0..nc {
                    w[row * d + b.cols[c]] = f64::from(wt[r * nc + c]);
                }
                if let Some(bn) = bn {
                    w[row * d + d - 1] = f64::from(weights[bn].data()[r]);
                }
            }
        }
        w
    }

    /// Writes block `b`'s fitted weights (`rows x cols` in the block's column order, bias
    /// last) into its tensors.
    pub fn store_block(&self, b: usize, fitted: &[f64], weights: &mut Weights) {
        let block = &self.blocks[b];
        let (wn, bn) = &self.tensors[b];
        let cols = block.cols.len();
        let nc = cols - usize::from(self.bias);
        if let Some(t) = weights.get_mut(wn) {
            let data = t.data_mut();
            for r in 0..block.rows.len() {
                for c in 0..nc {
                    data[r * nc + c] = fitted[r * cols + c] as f32;
                }
            }
        }
        if let Some(bn) = bn
            && let Some(t) = weights.get_mut(bn)
        {
            for (r, v) in t.data_mut().iter_mut().enumerate() {
                *v = fitted[r * cols + cols - 1] as f32;
            }
        }
    }
}

/// The merged network with its permute-and-average weights.
#[derive(Debug, Clone)]
pub struct MergedModel {
    /// The merged graph.
    pub graph: Graph,
    /// Its weights (permute-and-average until fitted).
    pub weights: Weights,
    /// Its block-structured layers, in node order.
    pub layers: Vec<MergedLayer>,
    /// For each merged node, the original node whose outputs are its targets / counterpart.
    pub source_node: Vec<NodeId>,
}

fn merge_err(reason: String) -> Error {
    Error::Merge {
        stage: STAGE,
        reason,
    }
}

/// The merge step this module is, in errors.
const STAGE: &str = "merged model";

/// Channel ranges covered by the dense columns `cols` (bias excluded), merged when adjacent.
fn channel_ranges(cols: &[usize], patch: usize, bias: bool) -> Vec<Range<usize>> {
    let n = cols.len() - usize::from(bias);
    let mut out: Vec<Range<usize>> = Vec::new();
    for &c in cols[..n].iter().step_by(patch.max(1)) {
        let ch = c / patch;
        match out.last_mut() {
            Some(r) if r.end == ch => r.end += 1,
            _ => out.push(ch..ch + 1),
        }
    }
    out
}

fn param_prefix(weight: &str, node: &str) -> String {
    weight
        .strip_suffix(".weight")
        .map_or_else(|| node.to_string(), str::to_string)
}

/// Merged input channel of original input unit `i` of A (`a`) or B under `rule`.
fn input_slot(rule: InputRule, layouts: &[GroupLayout], a: bool, i: usize) -> usize {
    match rule {
        InputRule::Layout(g) if a => layouts[g].slot_a(i),
        InputRule::Layout(g) => layouts[g].slot_b(i),
        InputRule::Average => i,
    }
}

/// Unit `o`'s weight row (`per_unit` values) and bias.
fn unit_weights<'w>(
    weight: &'w [f32],
    bias: Option<&'w [f32]>,
    per_unit: usize,
    o: usize,
) -> UnitWeights<'w> {
    (
        &weight[o * per_unit..(o + 1) * per_unit],
        bias.map(|b| b[o]),
    )
}

/// Permute-and-average weights of one block (the core's prior writer, row by row): every
/// output row takes its sources' rows, each scaled by its weight, placed at the merged
/// channels of their input units (merged input channels thus get the average of A's and B's
/// weights).
fn average_block(
    layer: &Layer,
    ml: &MergedLayer,
    block: &OutputBlock,
    layouts: &[GroupLayout],
    wa: &Weights,
    wb: &Weights,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let patch = ml.kind.patch();
    let cols = block.cols.len() - usize::from(ml.bias);
    let mut pos = vec![usize::MAX; ml.in_channels];
    for (i, &c) in block.cols[..cols].iter().enumerate().step_by(patch) {
        pos[c / patch] = i;
    }
    let per_unit = layer.in_channels * patch;
    let (ta, tb) = (wa[&layer.weight].data(), wb[&layer.weight].data());
    let ba = layer.bias.as_ref().map(|n| wa[n].data());
    let bb = layer.bias.as_ref().map(|n| wb[n].data());
    let unit_a = |o: usize| unit_weights(ta, ba, per_unit, o);
    let unit_b = |o: usize| unit_weights(tb, bb, per_unit, o);
    let place = |a: bool, i: usize| {
        let p = pos[input_slot(ml.input_rule, layouts, a, i)];
        (p != usize::MAX).then_some(p)
    };
    let place_a = |i: usize| place(true, i);
    let place_b = |i: usize| place(false, i);
    let mut w = vec![0.0f32; block.rows.len() * cols];
    let mut bias = ml.bias.then(|| vec![0.0f32; block.rows.len()]);
    for (r, row) in block.rows.clone().enumerate() {
        write_prior_row(
            row_source(ml.target_rule, |g| &layouts[g], row),
            [&unit_a, &unit_b],
            [&place_a, &place_b],
            patch,
            &mut w[r * cols..(r + 1) * cols],
            bias.as_mut().map(|b| &mut b[r]),
        );
    }
    (w, bias)
}

/// Batch-norm parameter of the merged channels: the layout of A's and B's, or their average.
fn merged_vector(rule: InputRule, layouts: &[GroupLayout], a: &[f32], b: &[f32]) -> Vec<f32> {
    match rule {
        InputRule::Layout(g) => {
            let mut out = vec![0.0; layouts[g].merged_width()];
            layouts[g]
                .apply(a, b, &mut out)
                .expect("group widths checked");
            out
        }
        InputRule::Average => a.iter().zip(b).map(|(x, y)| 0.5 * (x + y)).collect(),
    }
}

fn rule_of(group: Option<usize>) -> InputRule {
    group.map_or(InputRule::Average, InputRule::Layout)
}

/// The group layouts must match the groups; the models must have one output. Returns the
/// head node.
fn check_inputs(graph: &Graph, groups: &Groups, layouts: &[GroupLayout]) -> Result<NodeId, Error> {
    if layouts.len() != groups.len() {
        return Err(merge_err(format!(
            "{} layouts for {} groups",
            layouts.len(),
            groups.len()
        )));
    }
    for (g, (l, pg)) in layouts.iter().zip(groups.groups()).enumerate() {
        if l.original_width() != pg.width {
            return Err(merge_err(format!(
                "group {g} has width {}, its layout {}",
                pg.width,
                l.original_width()
            )));
        }
    }
    let outputs = graph.outputs();
    if outputs.len() != 1 {
        return Err(merge_err(format!(
            "the models have {} outputs; merging needs exactly one (the head)",
            outputs.len()
        )));
    }
    Ok(outputs[0].node)
}

/// The merged network under construction.
struct Builder<'a> {
    graph: &'a Graph,
    groups: &'a Groups,
    layers: &'a [Layer],
    layouts: &'a [GroupLayout],
    wa: &'a Weights,
    wb: &'a Weights,
    m: Graph,
    weights: Weights,
    merged_layers: Vec<MergedLayer>,
    source_node: Vec<NodeId>,
}

impl<'a> Builder<'a> {
    /// Merged width of node `id`'s output.
    fn width(&self, id: NodeId) -> usize {
        self.groups
            .of_node(id)
            .map_or(self.graph.node(id).shape.c, |g| {
                self.layouts[g].merged_width()
            })
    }

    /// The input side of original layer `li`.
    fn input_side(&self, li: usize) -> InputSide<'a> {
        let (layers, layouts) = (self.layers, self.layouts);
        let layer = &layers[li];
        InputSide {
            layout: layer.input_group.map(|g| &layouts[g]),
            channels: layer.in_channels,
            patch: layer.kind.patch(),
            bias: layer.bias.is_some(),
        }
    }

    /// The block-structured layer of original layer `li` with tensors under `prefix`, rows by
    /// `rule`, output `blocks` and `outputs` units: its permute-and-average weights go into
    /// the merged weights; returns the layer and its op.
    fn block_layer(
        &mut self,
        li: usize,
        prefix: &str,
        rule: TargetRule,
        blocks: Vec<OutputBlock>,
        outputs: usize,
    ) -> Result<(MergedLayer, Op), Error> {
        let (layers, layouts, wa, wb) = (self.layers, self.layouts, self.wa, self.wb);
        let layer = &layers[li];
        let tensors: Vec<(String, Option<String>)> = (0..blocks.len())
            .map(|b| {
                let p = format!("{prefix}.blocks.{b}");
                (
                    format!("{p}.weight"),
                    layer.bias.as_ref().map(|_| format!("{p}.bias")),
                )
            })
            .collect();
        let ml = MergedLayer {
            node: 0,
            source: li,
            input_rule: rule_of(layer.input_group),
            target_rule: rule,
            kind: layer.kind,
            in_channels: self.input_side(li).merged_channels(),
            outputs,
            bias: layer.bias.is_some(),
            blocks,
            tensors,
        };
        let mut wblocks = Vec::new();
        for (b, block) in ml.blocks.iter().enumerate() {
            let (w, bias) = average_block(layer, &ml, block, layouts, wa, wb);
            let inputs = channel_ranges(&block.cols, layer.kind.patch(), ml.bias);
            let cols: usize = inputs.iter().map(|r| r.len()).sum();
            let shape = match layer.kind {
                LayerKind::Linear => vec![block.rows.len(), cols],
                LayerKind::Conv { kernel, .. } => {
                    vec![block.rows.len(), cols, kernel[0], kernel[1]]
                }
            };
            let (wn, bn) = &ml.tensors[b];
            let tensor = Tensor::new(shape, w).map_err(|e| Error::core_at(STAGE, wn.clone(), e))?;
            self.weights.insert(wn.clone(), tensor);
            if let (Some(bn), Some(bv)) = (bn, bias) {
                let tensor = Tensor::new(vec![block.rows.len()], bv)
                    .map_err(|e| Error::core_at(STAGE, bn.clone(), e))?;
                self.weights.insert(bn.clone(), tensor);
            }
            wblocks.push(WeightBlock {
                weight: wn.clone(),
                bias: bn.clone(),
                rows: block.rows.len(),
                inputs,
            });
        }
        let op = match layer.kind {
            LayerKind::Linear => Op::BlockLinear {
                in_features: ml.in_channels,
                out_features: outputs,
                blocks: wblocks,
            },
            LayerKind::Conv {
                kernel,
                stride,
                padding,
            } => Op::BlockConv2d {
                in_channels: ml.in_channels,
                out_channels: outputs,
                kernel,
                stride,
                padding,
                blocks: wblocks,
            },
        };
        Ok((ml, op))
    }

    /// Appends node `name` to the merged graph as the counterpart of original node `source`.
    fn push(
        &mut self,
        name: String,
        op: Op,
        inputs: &[NodeId],
        source: NodeId,
    ) -> Result<NodeId, Error> {
        let id = self
            .m
            .push(name.clone(), op, inputs)
            .map_err(|e| Error::core_at(STAGE, format!("node `{name}`"), e))?;
        self.source_node.push(source);
        Ok(id)
    }

    /// The two heads of original layer `li` (node `id`): head A is pushed now, head B is
    /// returned to go last, once every other node is in place.
    fn two_heads(
        &mut self,
        id: NodeId,
        node: &Node,
        li: usize,
    ) -> Result<(MergedLayer, Op), Error> {
        let input = self.input_side(li);
        let n = self.layers[li].out_channels;
        let side = |a: bool, b: bool| {
            vec![OutputBlock {
                rows: 0..n,
                cols: input.columns_for(a, b),
            }]
        };
        let (blocks_a, blocks_b) = (side(true, false), side(false, true));
        let prefix = param_prefix(&self.layers[li].weight, &node.name);
        let (mut ma, op_a) =
            self.block_layer(li, &format!("{prefix}.a"), TargetRule::OnlyA, blocks_a, n)?;
        let head_b =
            self.block_layer(li, &format!("{prefix}.b"), TargetRule::OnlyB, blocks_b, n)?;
        ma.node = self.push(format!("{}.a", node.name), op_a, &node.inputs, id)?;
        self.merged_layers.push(ma);
        Ok(head_b)
    }

    /// The block-structured counterpart of original layer `li` (node `id`).
    fn layer(&mut self, id: NodeId, node: &Node, li: usize) -> Result<(), Error> {
        let (layers, layouts) = (self.layers, self.layouts);
        let layer = &layers[li];
        let out_layout = layer.output_group.map(|g| &layouts[g]);
        let blocks = output_blocks(self.input_side(li), out_layout, layer.out_channels);
        let rule = layer
            .output_group
            .map_or(TargetRule::Average, TargetRule::Layout);
        let prefix = param_prefix(&layer.weight, &node.name);
        let (mut ml, op) = self.block_layer(li, &prefix, rule, blocks, self.width(id))?;
        ml.node = self.push(node.name.clone(), op, &node.inputs, id)?;
        self.merged_layers.push(ml);
        Ok(())
    }

    /// The counterpart of a node that is not a conv or linear layer (batch-norm parameters
    /// merged through the layout; other ops as they are).
    fn other(&mut self, id: NodeId, node: &Node) -> Result<(), Error> {
        let op = match &node.op {
            Op::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
                ..
            } => {
                let rule = rule_of(self.groups.of_node(id));
                for t in [weight, bias, running_mean, running_var] {
                    let v = merged_vector(rule, self.layouts, self.wa[t].data(), self.wb[t].data());
                    let tensor = Tensor::new(vec![v.len()], v)
                        .map_err(|e| Error::core_at(STAGE, t.clone(), e))?;
                    self.weights.insert(t.clone(), tensor);
                }
                Op::BatchNorm {
                    weight: weight.clone(),
                    bias: bias.clone(),
                    running_mean: running_mean.clone(),
                    running_var: running_var.clone(),
                    channels: self.width(id),
                    eps: *eps,
                }
            }
            Op::Conv2d { .. } | Op::Linear { .. } | Op::Input => {
                return Err(merge_err(format!(
                    "node `{}` ({}) is not a plan layer",
                    node.name,
                    node.op.kind()
                )));
            }
            other => other.clone(),
        };
        self.push(node.name.clone(), op, &node.inputs, id)?;
        Ok(())
    }

    /// Head B (if any) last, then the graph outputs: `a` and `b`, or the original output.
    fn outputs(&mut self, head: NodeId, head_b: Option<(MergedLayer, Op)>) -> Result<(), Error> {
        let out_err = |e: GraphError| Error::core_at(STAGE, "graph outputs", e);
        match head_b {
            Some((mut mb, op)) => {
                let graph = self.graph;
                let head_node = graph.node(head);
                mb.node =
                    self.push(format!("{}.b", head_node.name), op, &head_node.inputs, head)?;
                let a_node = self
                    .merged_layers
                    .iter()
                    .find(|l| l.target_rule == TargetRule::OnlyA)
                    .map(|l| l.node)
                    .expect("head A pushed");
                self.merged_layers.push(mb);
                self.m.add_output("a", a_node).map_err(out_err)?;
                let last = self.m.nodes().len() - 1;
                self.m.add_output("b", last).map_err(out_err)?;
            }
            None => {
                let name = self.graph.outputs()[0].name.clone();
                self.m.add_output(name, head).map_err(out_err)?;
            }
        }
        Ok(())
    }
}

/// Builds the merged network of `graph` (the original architecture, batch-norm folded or not)
/// for the group `layouts`, with permute-and-average weights from A's and B's.
pub fn build(
    graph: &Graph,
    groups: &Groups,
    layers: &[Layer],
    layouts: &[GroupLayout],
    heads: Heads,
    wa: &Weights,
    wb: &Weights,
) -> Result<MergedModel, Error> {
    let head = check_inputs(graph, groups, layouts)?;
    let layer_of: std::collections::BTreeMap<NodeId, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.node, i))
        .collect();
    if heads == Heads::Separate && !layer_of.contains_key(&head) {
        return Err(merge_err(format!(
            "two heads need the output `{}` to be a conv or linear layer",
            graph.node(head).name
        )));
    }
    let mut b = Builder {
        graph,
        groups,
        layers,
        layouts,
        wa,
        wb,
        m: Graph::new(graph.input_shape()),
        weights: Weights::new(),
        merged_layers: Vec::new(),
        source_node: vec![0],
    };
    let mut head_b = None;
    for (id, node) in graph.nodes().iter().enumerate().skip(1) {
        match layer_of.get(&id) {
            Some(&li) if id == head && heads == Heads::Separate => {
                head_b = Some(b.two_heads(id, node, li)?);
            }
            Some(&li) => b.layer(id, node, li)?,
            None => b.other(id, node)?,
        }
    }
    b.outputs(head, head_b)?;
    Ok(MergedModel {
        graph: b.m,
        weights: b.weights,
        layers: b.merged_layers,
        source_node: b.source_node,
    })
}
