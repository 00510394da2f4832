//! The merged network: the original graph with every group widened to its layout
//! `[merged | A-only | B-only]`, every conv and linear layer block-structured (the cross blocks
//! between A-only and B-only units are neither stored nor computed), and its initial weights by
//! permute-and-average (docs/ALGORITHM.md sections 3 and 4).
//!
//! Node ids mirror the original graph's. With two heads (different label spaces) the original
//! head node becomes head A (`{head}.a`, reading `[merged | A-only]`) and head B (`{head}.b`,
//! reading `[merged | B-only]`) is appended as the last node; the graph outputs are `a` and `b`.

use std::ops::Range;

use pleas_core::graph::{Graph, Groups, NodeId, Op, Tensor, WeightBlock, Weights};
use pleas_core::merge::blocks::{InputSide, OutputBlock, output_blocks};
use pleas_core::merge::layout::{GroupLayout, Slot};

use super::plan::{Layer, LayerKind};
use crate::error::Error;

/// One head or two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadMode {
    /// Shared label space: one head fitted to the mean of both models' logits.
    Shared,
    /// Different label spaces: head A on `[m | A]` and head B on `[m | B]`.
    Separate,
}

/// How a layer's merged input is formed from A's and B's inputs (non-sequential fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRule {
    /// Through the layout of this group.
    Layout(usize),
    /// Plain average (an axis in no group, e.g. the image).
    Average,
}

/// How a layer's regression targets are formed from A's and B's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetRule {
    /// Through the layout of this group.
    Layout(usize),
    /// Plain average (a shared head).
    Average,
    /// A's outputs only (head A).
    OnlyA,
    /// B's outputs only (head B).
    OnlyB,
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
        stage: "merged model",
        reason,
    }
}

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

/// Which original units feed an output row, with their weights.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowSource {
    /// A's unit and its weight.
    pub(crate) a: Option<(usize, f32)>,
    /// B's unit and its weight.
    pub(crate) b: Option<(usize, f32)>,
}

pub(crate) fn row_sources(
    rule: TargetRule,
    layouts: &[GroupLayout],
    rows: usize,
) -> Vec<RowSource> {
    match rule {
        TargetRule::Layout(g) => {
            let l = &layouts[g];
            let mut v: Vec<RowSource> = l
                .merged
                .iter()
                .map(|&(a, b)| RowSource {
                    a: Some((a, 0.5)),
                    b: Some((b, 0.5)),
                })
                .collect();
            v.extend(l.a_only.iter().map(|&a| RowSource {
                a: Some((a, 1.0)),
                b: None,
            }));
            v.extend(l.b_only.iter().map(|&b| RowSource {
                a: None,
                b: Some((b, 1.0)),
            }));
            v
        }
        TargetRule::Average => (0..rows)
            .map(|o| RowSource {
                a: Some((o, 0.5)),
                b: Some((o, 0.5)),
            })
            .collect(),
        TargetRule::OnlyA => (0..rows)
            .map(|o| RowSource {
                a: Some((o, 1.0)),
                b: None,
            })
            .collect(),
        TargetRule::OnlyB => (0..rows)
            .map(|o| RowSource {
                a: None,
                b: Some((o, 1.0)),
            })
            .collect(),
    }
}

/// Merged input channel of every original input unit of A and of B.
fn input_slots(
    rule: InputRule,
    layouts: &[GroupLayout],
    channels: usize,
) -> (Vec<usize>, Vec<usize>) {
    match rule {
        InputRule::Layout(g) => {
            let l = &layouts[g];
            let f = |s: Vec<Slot>| s.into_iter().map(Slot::index).collect();
            (f(l.slots_a()), f(l.slots_b()))
        }
        InputRule::Average => ((0..channels).collect(), (0..channels).collect()),
    }
}

/// Permute-and-average weights of one block: every output row takes its sources' rows, each
/// scaled by its weight, placed at the merged channels of their input units (merged input
/// channels thus get the average of A's and B's weights).
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
    let sources = row_sources(ml.target_rule, layouts, ml.outputs);
    let (slot_a, slot_b) = input_slots(ml.input_rule, layouts, layer.in_channels);
    let per_unit = layer.in_channels * patch;
    let mut w = vec![0.0f32; block.rows.len() * cols];
    let mut bias = ml.bias.then(|| vec![0.0f32; block.rows.len()]);
    for (r, row) in block.rows.clone().enumerate() {
        let src = sources[row];
        for (unit, (weights, slots)) in [(src.a, (wa, &slot_a)), (src.b, (wb, &slot_b))] {
            let Some((o, alpha)) = unit else { continue };
            let wt = &weights[&layer.weight].data()[o * per_unit..(o + 1) * per_unit];
            for i in 0..layer.in_channels {
                let p = pos[slots[i]];
                if p == usize::MAX {
                    continue;
                }
                for q in 0..patch {
                    w[r * cols + p + q] += alpha * wt[i * patch + q];
                }
            }
            if let (Some(bv), Some(bn)) = (bias.as_mut(), &layer.bias) {
                bv[r] += alpha * weights[bn].data()[o];
            }
        }
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

/// Builds the merged network of `graph` (the original architecture, batch-norm folded or not)
/// for the group `layouts`, with permute-and-average weights from A's and B's.
pub fn build(
    graph: &Graph,
    groups: &Groups,
    layers: &[Layer],
    layouts: &[GroupLayout],
    heads: HeadMode,
    wa: &Weights,
    wb: &Weights,
) -> Result<MergedModel, Error> {
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
    let head = outputs[0].node;
    let width = |id: NodeId| -> usize {
        groups
            .of_node(id)
            .map_or(graph.node(id).shape.c, |g| layouts[g].merged_width())
    };
    let layer_of: std::collections::BTreeMap<NodeId, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.node, i))
        .collect();
    if heads == HeadMode::Separate && !layer_of.contains_key(&head) {
        return Err(merge_err(format!(
            "two heads need the output `{}` to be a conv or linear layer",
            graph.node(head).name
        )));
    }
    let mut m = Graph::new(graph.input_shape());
    let mut weights = Weights::new();
    let mut merged_layers = Vec::new();
    let mut source_node = vec![0];
    let mut pending_b: Option<(MergedLayer, Op)> = None;
    for (id, node) in graph.nodes().iter().enumerate().skip(1) {
        let graph_err = |e: pleas_core::graph::GraphError| merge_err(e.to_string());
        if let Some(&li) = layer_of.get(&id) {
            let layer = &layers[li];
            let input = InputSide {
                layout: layer.input_group.map(|g| &layouts[g]),
                channels: layer.in_channels,
                patch: layer.kind.patch(),
                bias: layer.bias.is_some(),
            };
            let prefix = param_prefix(&layer.weight, &node.name);
            let mut make = |prefix: String,
                            rule: TargetRule,
                            blocks: Vec<OutputBlock>,
                            outputs: usize|
             -> Result<(MergedLayer, Op), Error> {
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
                    in_channels: input.merged_channels(),
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
                    weights.insert(
                        wn.clone(),
                        Tensor::new(shape, w).map_err(|e| merge_err(e.to_string()))?,
                    );
                    if let (Some(bn), Some(bv)) = (bn, bias) {
                        weights.insert(
                            bn.clone(),
                            Tensor::new(vec![block.rows.len()], bv)
                                .map_err(|e| merge_err(e.to_string()))?,
                        );
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
            };
            if id == head && heads == HeadMode::Separate {
                let n = layer.out_channels;
                let side = |a: bool, b: bool| {
                    vec![OutputBlock {
                        rows: 0..n,
                        cols: input.columns_for(a, b),
                    }]
                };
                let (mut ma, op_a) = make(
                    format!("{prefix}.a"),
                    TargetRule::OnlyA,
                    side(true, false),
                    n,
                )?;
                let (mb, op_b) = make(
                    format!("{prefix}.b"),
                    TargetRule::OnlyB,
                    side(false, true),
                    n,
                )?;
                ma.node = m
                    .push(format!("{}.a", node.name), op_a, &node.inputs)
                    .map_err(graph_err)?;
                source_node.push(id);
                merged_layers.push(ma);
                // Head B goes last, once every other node is in place.
                pending_b = Some((mb, op_b));
                continue;
            }
            let out_layout = layer.output_group.map(|g| &layouts[g]);
            let blocks = output_blocks(input, out_layout, layer.out_channels);
            let rule = layer
                .output_group
                .map_or(TargetRule::Average, TargetRule::Layout);
            let (mut ml, op) = make(prefix, rule, blocks, width(id))?;
            ml.node = m
                .push(node.name.clone(), op, &node.inputs)
                .map_err(graph_err)?;
            source_node.push(id);
            merged_layers.push(ml);
            continue;
        }
        let op = match &node.op {
            Op::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
                ..
            } => {
                let rule = rule_of(groups.of_node(id));
                for t in [weight, bias, running_mean, running_var] {
                    let v = merged_vector(rule, layouts, wa[t].data(), wb[t].data());
                    let len = v.len();
                    weights.insert(
                        t.clone(),
                        Tensor::new(vec![len], v).map_err(|e| merge_err(e.to_string()))?,
                    );
                }
                Op::BatchNorm {
                    weight: weight.clone(),
                    bias: bias.clone(),
                    running_mean: running_mean.clone(),
                    running_var: running_var.clone(),
                    channels: width(id),
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
        m.push(node.name.clone(), op, &node.inputs)
            .map_err(|e| merge_err(e.to_string()))?;
        source_node.push(id);
    }
    match pending_b {
        Some((mut mb, op)) => {
            let head_node = graph.node(head);
            mb.node = m
                .push(format!("{}.b", head_node.name), op, &head_node.inputs)
                .map_err(|e| merge_err(e.to_string()))?;
            source_node.push(head);
            let a_node = merged_layers
                .iter()
                .find(|l| l.target_rule == TargetRule::OnlyA)
                .map(|l| l.node)
                .expect("head A pushed");
            merged_layers.push(mb);
            m.add_output("a", a_node)
                .map_err(|e| merge_err(e.to_string()))?;
            m.add_output("b", m.nodes().len() - 1)
                .map_err(|e| merge_err(e.to_string()))?;
        }
        None => {
            m.add_output(outputs[0].name.clone(), head)
                .map_err(|e| merge_err(e.to_string()))?;
        }
    }
    Ok(MergedModel {
        graph: m,
        weights,
        layers: merged_layers,
        source_node,
    })
}
