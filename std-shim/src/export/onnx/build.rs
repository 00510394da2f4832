//! Building the ONNX graph of a model, node by node (see the module docs of [`super`]).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use pleas_core::graph::{Graph, Node, NodeId, Op, Pair, Shape, Weights};

use super::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    TypeProtoTensor, ValueInfoProto, attribute_type, data_type,
};
use super::{BATCH_DIM, INPUT_NAME, ir_version};
use crate::export::dense::dense_layer;
use crate::export::reorder::ChannelOrder;
use crate::export::{BlockMode, ExportError};
use crate::model::Model;

/// An ONNX value: its name, rank (2: `batch x len`, 4: `batch x C x H x W`) and per-sample
/// shape.
#[derive(Debug, Clone)]
struct Value {
    name: String,
    rank: u8,
    shape: Shape,
}

/// One output block of a layer, ready to write: its old input channel per weight column and
/// its weights (`rows x cols x patch`, row-major) and bias.
struct SourceBlock {
    rows: usize,
    channels: Vec<usize>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    weight_name: String,
    bias_name: Option<String>,
}

/// What every block of one layer shares: its node, conv geometry (`None` for a linear layer),
/// columns per input channel, and the export positions of its input and output channels.
struct LayerGeometry<'g> {
    node: &'g Node,
    conv: Option<(Pair, Pair, Pair)>,
    patch: usize,
    in_pos: Option<Vec<usize>>,
    out_pos: Option<Vec<usize>>,
}

struct Builder<'m> {
    graph: &'m Graph,
    weights: &'m Weights,
    mode: BlockMode,
    order: ChannelOrder,
    taken: HashSet<String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    value_info: Vec<ValueInfoProto>,
    slices: HashMap<(String, usize, usize), Value>,
    /// Rank conversions already made: (value, rank) -> converted value.
    reshaped: HashMap<(String, u8), Value>,
    values: Vec<Option<Value>>,
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: attribute_type::INT,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.iter().map(|&v| v as i64).collect(),
        r#type: attribute_type::INTS,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: attribute_type::FLOAT,
        ..Default::default()
    }
}

fn window_attrs(kernel: Pair, stride: Pair, padding: Pair) -> Vec<AttributeProto> {
    vec![
        attr_ints("kernel_shape", &kernel),
        attr_ints("strides", &stride),
        attr_ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
    ]
}

/// `batch x len` or `batch x C x H x W` as a tensor type.
fn value_type(rank: u8, shape: Shape) -> TypeProto {
    let fixed: Vec<usize> = if rank == 4 {
        vec![shape.c, shape.h, shape.w]
    } else {
        vec![shape.len()]
    };
    let mut dim = vec![Dimension {
        value: Some(DimensionValue::DimParam(BATCH_DIM.into())),
    }];
    dim.extend(fixed.into_iter().map(|d| Dimension {
        value: Some(DimensionValue::DimValue(d as i64)),
    }));
    TypeProto {
        tensor_type: Some(TypeProtoTensor {
            elem_type: data_type::FLOAT,
            shape: Some(TensorShapeProto { dim }),
        }),
    }
}

fn value_info(name: &str, rank: u8, shape: Shape) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(value_type(rank, shape)),
    }
}

/// Maximal runs of consecutive values in an ascending list, as `(first index, range)`.
fn runs(sorted: &[usize]) -> Vec<(usize, Range<usize>)> {
    let mut out: Vec<(usize, Range<usize>)> = Vec::new();
    for (i, &v) in sorted.iter().enumerate() {
        match out.last_mut() {
            Some((_, r)) if r.end == v => r.end += 1,
            _ => out.push((i, v..v + 1)),
        }
    }
    out
}

impl<'m> Builder<'m> {
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.taken.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    fn emit(
        &mut self,
        op_type: &str,
        hint: &str,
        inputs: Vec<String>,
        attribute: Vec<AttributeProto>,
        rank: u8,
        shape: Shape,
    ) -> Value {
        let name = self.fresh(hint);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![name.clone()],
            name: name.clone(),
            op_type: op_type.into(),
            attribute,
            ..Default::default()
        });
        self.value_info.push(value_info(&name, rank, shape));
        Value { name, rank, shape }
    }

    fn init_f32(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn init_i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn value(&self, id: NodeId) -> Value {
        self.values[id]
            .clone()
            .expect("nodes are built in topological order")
    }

    fn input(&self, id: NodeId, k: usize) -> Value {
        self.value(self.graph.node(id).inputs[k])
    }

    /// `v` as `batch x len` (Flatten of a rank-4 value, made once per value).
    fn rank2(&mut self, v: Value) -> Value {
        if v.rank == 2 {
            return v;
        }
        let key = (v.name.clone(), 2);
        if let Some(done) = self.reshaped.get(&key) {
            return done.clone();
        }
        let attrs = vec![attr_int("axis", 1)];
        let hint = format!("{}.flat", v.name);
        let out = self.emit(
            "Flatten",
            &hint,
            vec![v.name],
            attrs,
            2,
            Shape::flat(v.shape.len()),
        );
        self.reshaped.insert(key, out.clone());
        out
    }

    /// `v` as `batch x C x 1 x 1` (Unsqueeze of a rank-2 value, made once per value).
    fn rank4(&mut self, v: Value) -> Value {
        if v.rank == 4 {
            return v;
        }
        let key = (v.name.clone(), 4);
        if let Some(done) = self.reshaped.get(&key) {
            return done.clone();
        }
        let axes = self.init_i64(&format!("{}.unsqueeze_axes", v.name), &[2, 3]);
        let hint = format!("{}.map", v.name);
        let out = self.emit("Unsqueeze", &hint, vec![v.name, axes], vec![], 4, v.shape);
        self.reshaped.insert(key, out.clone());
        out
    }

    /// Channels `r` of `x` (axis 1), one Slice per distinct range.
    fn slice(&mut self, x: &Value, r: Range<usize>) -> Value {
        if r == (0..x.shape.c) {
            return x.clone();
        }
        let key = (x.name.clone(), r.start, r.end);
        if let Some(v) = self.slices.get(&key) {
            return v.clone();
        }
        let hint = format!("{}.ch{}-{}", x.name, r.start, r.end);
        let starts = self.init_i64(&format!("{hint}.starts"), &[r.start as i64]);
        let ends = self.init_i64(&format!("{hint}.ends"), &[r.end as i64]);
        let axes = self.init_i64(&format!("{hint}.axes"), &[1]);
        let shape = Shape::new(r.len(), x.shape.h, x.shape.w);
        let v = self.emit(
            "Slice",
            &hint,
            vec![x.name.clone(), starts, ends, axes],
            vec![],
            x.rank,
            shape,
        );
        self.slices.insert(key, v.clone());
        v
    }

    /// The channels `ranges` of `x` (ascending, disjoint) as one value.
    fn gather(&mut self, x: &Value, ranges: Vec<Range<usize>>, hint: &str) -> Value {
        let parts: Vec<Value> = ranges.into_iter().map(|r| self.slice(x, r)).collect();
        if parts.len() == 1 {
            return parts.into_iter().next().expect("one part");
        }
        let c = parts.iter().map(|p| p.shape.c).sum();
        let shape = Shape::new(c, x.shape.h, x.shape.w);
        let names = parts.into_iter().map(|p| p.name).collect();
        self.emit(
            "Concat",
            hint,
            names,
            vec![attr_int("axis", 1)],
            x.rank,
            shape,
        )
    }

    fn tensor(&self, node: &Node, name: &str, len: usize) -> Result<Vec<f32>, ExportError> {
        self.weights
            .get(name)
            .filter(|t| t.len() == len)
            .map(|t| t.data().to_vec())
            .ok_or_else(|| ExportError::Tensor {
                node: node.name.clone(),
                tensor: name.into(),
            })
    }

    /// The layer's output blocks as written: its stored blocks in split mode, else one dense
    /// block over all input channels.
    fn source_blocks(&self, id: NodeId, patch: usize) -> Result<Vec<SourceBlock>, ExportError> {
        let node = self.graph.node(id);
        let blocks = match &node.op {
            Op::BlockLinear { blocks, .. } | Op::BlockConv2d { blocks, .. }
                if self.mode == BlockMode::Split =>
            {
                blocks
            }
            _ => {
                let dense =
                    dense_layer(node, self.weights)?.ok_or_else(|| ExportError::Unsupported {
                        node: node.name.clone(),
                        reason: "not a conv or linear layer".into(),
                    })?;
                let (weight_name, bias_name) = match &node.op {
                    Op::Linear { weight, bias, .. } | Op::Conv2d { weight, bias, .. } => {
                        (weight.clone(), bias.clone())
                    }
                    _ => (
                        format!("{}.weight", node.name),
                        Some(format!("{}.bias", node.name)),
                    ),
                };
                let rows = dense.weight.shape()[0];
                let cols = dense.weight.shape()[1];
                return Ok(vec![SourceBlock {
                    rows,
                    channels: (0..cols).collect(),
                    weight: dense.weight.into_parts().1,
                    bias: dense.bias.map(|b| b.into_parts().1),
                    weight_name,
                    bias_name,
                }]);
            }
        };
        blocks
            .iter()
            .map(|b| {
                let channels: Vec<usize> = b.inputs.iter().flat_map(|r| r.clone()).collect();
                Ok(SourceBlock {
                    rows: b.rows,
                    weight: self.tensor(node, &b.weight, b.rows * channels.len() * patch)?,
                    bias: b
                        .bias
                        .as_ref()
                        .map(|n| self.tensor(node, n, b.rows))
                        .transpose()?,
                    channels,
                    weight_name: b.weight.clone(),
                    bias_name: b.bias.clone(),
                })
            })
            .collect()
    }

    /// A conv or linear layer: per output block, its input (one Slice of the reordered input,
    /// or the whole input) and one Conv / Gemm per run of its rows in the export order; the
    /// pieces concatenated in that order.
    fn layer(&mut self, id: NodeId) -> Result<Value, ExportError> {
        let node = self.graph.node(id);
        let conv = match &node.op {
            Op::Conv2d {
                kernel,
                stride,
                padding,
                ..
            }
            | Op::BlockConv2d {
                kernel,
                stride,
                padding,
                ..
            } => Some((*kernel, *stride, *padding)),
            _ => None,
        };
        let patch = conv.map_or(1, |(k, _, _)| k[0] * k[1]);
        let blocks = self.source_blocks(id, patch)?;
        let x = self.input(id, 0);
        let x = if conv.is_some() {
            self.rank4(x)
        } else {
            self.rank2(x)
        };
        let layer = LayerGeometry {
            node,
            conv,
            patch,
            in_pos: self.order.position(node.inputs[0]).map(<[usize]>::to_vec),
            out_pos: self.order.position(id).map(<[usize]>::to_vec),
        };
        let mut pieces: Vec<(usize, Value)> = Vec::new();
        let mut row0 = 0;
        for (bi, b) in blocks.iter().enumerate() {
            let hint = if blocks.len() > 1 {
                format!("{}.blocks.{bi}", node.name)
            } else {
                node.name.clone()
            };
            pieces.extend(self.block(&layer, b, row0, &x, &hint));
            row0 += b.rows;
        }
        pieces.sort_by_key(|(start, _)| *start);
        if pieces.len() == 1 {
            return Ok(pieces.pop().expect("one piece").1);
        }
        let rank = pieces[0].1.rank;
        let names = pieces.into_iter().map(|(_, v)| v.name).collect();
        let axis = vec![attr_int("axis", 1)];
        Ok(self.emit("Concat", &node.name, names, axis, rank, node.shape))
    }

    /// One output block (rows from `row0`) of a layer: its input gathered from `x` in the
    /// export order, then one Conv / Gemm per run of its rows in that order, each with its
    /// first export position.
    fn block(
        &mut self,
        layer: &LayerGeometry<'_>,
        b: &SourceBlock,
        row0: usize,
        x: &Value,
        hint: &str,
    ) -> Vec<(usize, Value)> {
        let moved = |pos: &Option<Vec<usize>>, c: usize| pos.as_ref().map_or(c, |p| p[c]);
        let new_col: Vec<usize> = b
            .channels
            .iter()
            .map(|&c| moved(&layer.in_pos, c))
            .collect();
        let mut cols: Vec<usize> = (0..b.channels.len()).collect();
        cols.sort_by_key(|&j| new_col[j]);
        let sorted: Vec<usize> = cols.iter().map(|&j| new_col[j]).collect();
        let ranges = runs(&sorted).into_iter().map(|(_, r)| r).collect();
        let xin = self.gather(x, ranges, &format!("{hint}.input"));
        let new_row: Vec<usize> = (row0..row0 + b.rows)
            .map(|r| moved(&layer.out_pos, r))
            .collect();
        let mut rows: Vec<usize> = (0..b.rows).collect();
        rows.sort_by_key(|&r| new_row[r]);
        let sorted_rows: Vec<usize> = rows.iter().map(|&r| new_row[r]).collect();
        let row_runs = runs(&sorted_rows);
        let cols_kept = cols.iter().enumerate().all(|(i, &j)| i == j);
        let mut pieces = Vec::new();
        for (first, run) in &row_runs {
            let picked = &rows[*first..*first + run.len()];
            let whole = row_runs.len() == 1;
            let kept = cols_kept && whole && picked.iter().enumerate().all(|(i, &r)| i == r);
            let suffix = match (kept, whole) {
                (true, _) => String::new(),
                (false, true) => ".perm".into(),
                (false, false) => format!(".rows{}-{}", run.start, run.end),
            };
            let piece_hint = if whole {
                hint.to_string()
            } else {
                format!("{hint}.rows{}-{}", run.start, run.end)
            };
            let v = self.piece(layer, b, picked, &cols, &suffix, &xin, &piece_hint);
            pieces.push((run.start, v));
        }
        pieces
    }

    /// One Conv / Gemm: rows `picked` of block `b`, its columns in the order `cols`, on `xin`.
    fn piece(
        &mut self,
        layer: &LayerGeometry<'_>,
        b: &SourceBlock,
        picked: &[usize],
        cols: &[usize],
        suffix: &str,
        xin: &Value,
        hint: &str,
    ) -> Value {
        let (ncols, patch) = (b.channels.len(), layer.patch);
        let mut w = Vec::with_capacity(picked.len() * ncols * patch);
        for &r in picked {
            for &j in cols {
                let src = (r * ncols + j) * patch;
                w.extend_from_slice(&b.weight[src..src + patch]);
            }
        }
        let mut dims = vec![picked.len(), ncols];
        if let Some((k, _, _)) = layer.conv {
            dims.extend(k);
        }
        let wn = self.init_f32(&format!("{}{suffix}", b.weight_name), &dims, &w);
        let mut inputs = vec![xin.name.clone(), wn];
        if let (Some(bias), Some(bn)) = (&b.bias, &b.bias_name) {
            let bv: Vec<f32> = picked.iter().map(|&r| bias[r]).collect();
            inputs.push(self.init_f32(&format!("{bn}{suffix}"), &[picked.len()], &bv));
        }
        let s = layer.node.shape;
        match layer.conv {
            Some((k, st, p)) => {
                let shape = Shape::new(picked.len(), s.h, s.w);
                self.emit("Conv", hint, inputs, window_attrs(k, st, p), 4, shape)
            }
            None => {
                let attrs = vec![attr_int("transB", 1)];
                self.emit("Gemm", hint, inputs, attrs, 2, Shape::flat(picked.len()))
            }
        }
    }

    fn batch_norm(&mut self, id: NodeId) -> Result<Value, ExportError> {
        let node = self.graph.node(id);
        let Op::BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            channels,
            eps,
        } = &node.op
        else {
            unreachable!("called for batch-norm nodes")
        };
        let order = self.order.order(id).map(<[usize]>::to_vec);
        let mut inputs = vec![self.input(id, 0).name];
        for t in [weight, bias, running_mean, running_var] {
            let data = self.tensor(node, t, *channels)?;
            let name = match &order {
                Some(o) => {
                    let p: Vec<f32> = o.iter().map(|&old| data[old]).collect();
                    self.init_f32(&format!("{t}.perm"), &[*channels], &p)
                }
                None => self.init_f32(t, &[*channels], &data),
            };
            inputs.push(name);
        }
        let x = self.input(id, 0);
        let attrs = vec![attr_float("epsilon", *eps)];
        Ok(self.emit(
            "BatchNormalization",
            &node.name,
            inputs,
            attrs,
            x.rank,
            node.shape,
        ))
    }

    fn add(&mut self, id: NodeId) -> Value {
        let node = self.graph.node(id);
        let mut xs: Vec<Value> = (0..node.inputs.len()).map(|k| self.input(id, k)).collect();
        if xs.iter().any(|v| v.rank != xs[0].rank) {
            xs = xs.into_iter().map(|v| self.rank2(v)).collect();
        }
        let rank = xs[0].rank;
        let op = if xs.len() == 2 { "Add" } else { "Sum" };
        let names = xs.into_iter().map(|v| v.name).collect();
        self.emit(op, &node.name, names, vec![], rank, node.shape)
    }

    fn pool(&mut self, id: NodeId, op_type: &str, attrs: Vec<AttributeProto>) -> Value {
        let node = self.graph.node(id);
        let x = self.input(id, 0);
        let x = self.rank4(x);
        self.emit(op_type, &node.name, vec![x.name], attrs, 4, node.shape)
    }

    fn node(&mut self, id: NodeId) -> Result<Value, ExportError> {
        let node = self.graph.node(id);
        Ok(match &node.op {
            Op::Linear { .. }
            | Op::Conv2d { .. }
            | Op::BlockLinear { .. }
            | Op::BlockConv2d { .. } => self.layer(id)?,
            Op::BatchNorm { .. } => self.batch_norm(id)?,
            Op::Relu => {
                let x = self.input(id, 0);
                self.emit("Relu", &node.name, vec![x.name], vec![], x.rank, node.shape)
            }
            Op::Add => self.add(id),
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => self.pool(id, "MaxPool", window_attrs(*kernel, *stride, *padding)),
            Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let mut attrs = window_attrs(*kernel, *stride, *padding);
                attrs.push(attr_int("count_include_pad", 1));
                self.pool(id, "AveragePool", attrs)
            }
            Op::GlobalAvgPool => self.pool(id, "GlobalAveragePool", vec![]),
            Op::Flatten => {
                let x = self.input(id, 0);
                self.rank2(x)
            }
            other => {
                return Err(ExportError::Unsupported {
                    node: node.name.clone(),
                    reason: format!("operation `{}` has no ONNX translation", other.kind()),
                });
            }
        })
    }
}

fn metadata(model: &Model, mode: BlockMode) -> Vec<StringStringEntryProto> {
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: key.into(),
        value,
    };
    let mut out = vec![
        entry("pleas.version", crate::VERSION.into()),
        // The file's own `arch` (e.g. `pleas-merged`) before the family it was read as.
        entry(
            "pleas.arch",
            model
                .metadata
                .get("arch")
                .cloned()
                .unwrap_or_else(|| model.arch.clone()),
        ),
        entry("pleas.blocks", mode.name().into()),
        entry(
            "normalize",
            model
                .metadata
                .get("normalize")
                .cloned()
                .unwrap_or_else(|| "none".into()),
        ),
    ];
    let single = model.heads.len() == 1;
    for h in &model.heads {
        let key = if single {
            "classes".to_string()
        } else {
            format!("classes.{}", h.name)
        };
        out.push(entry(
            &key,
            serde_json::to_string(&h.classes).expect("integers"),
        ));
    }
    out
}

/// The ONNX model of `model` with block layers written as `mode` says, at `opset`.
pub(super) fn model_proto(
    model: &Model,
    mode: BlockMode,
    opset: i64,
) -> Result<ModelProto, ExportError> {
    let graph = &model.graph;
    let mut taken = HashSet::new();
    for out in graph.outputs() {
        if out.name == INPUT_NAME || !taken.insert(out.name.clone()) {
            return Err(ExportError::Unsupported {
                node: out.name.clone(),
                reason: format!(
                    "output name `{}` is used twice (or is the input's)",
                    out.name
                ),
            });
        }
    }
    taken.insert(INPUT_NAME.to_string());
    let order = match mode {
        BlockMode::Split => ChannelOrder::contiguous(graph),
        BlockMode::Dense => ChannelOrder::identity(graph),
    };
    let mut b = Builder {
        graph,
        weights: &model.weights,
        mode,
        order,
        taken,
        nodes: Vec::new(),
        initializers: Vec::new(),
        value_info: Vec::new(),
        slices: HashMap::new(),
        reshaped: HashMap::new(),
        values: vec![None; graph.nodes().len()],
    };
    let in_shape = graph.input_shape();
    let in_rank = if in_shape.is_flat() { 2 } else { 4 };
    b.values[graph.input()] = Some(Value {
        name: INPUT_NAME.into(),
        rank: in_rank,
        shape: in_shape,
    });
    for id in 1..graph.nodes().len() {
        let v = b.node(id)?;
        b.values[id] = Some(v);
    }
    let mut outputs = Vec::new();
    for out in graph.outputs() {
        let v = b.value(out.node);
        let v = b.rank2(v);
        b.nodes.push(NodeProto {
            input: vec![v.name],
            output: vec![out.name.clone()],
            name: out.name.clone(),
            op_type: "Identity".into(),
            ..Default::default()
        });
        outputs.push(value_info(&out.name, 2, v.shape));
    }
    let graph_proto = GraphProto {
        node: b.nodes,
        name: "pleas".into(),
        initializer: b.initializers,
        input: vec![value_info(INPUT_NAME, in_rank, in_shape)],
        output: outputs,
        value_info: b.value_info,
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: ir_version(opset),
        producer_name: "pleas".into(),
        producer_version: crate::VERSION.into(),
        graph: Some(graph_proto),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        metadata_props: metadata(model, mode),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_split_at_gaps() {
        assert_eq!(
            runs(&[0, 1, 2, 5, 6, 9]),
            vec![(0, 0..3), (3, 5..7), (5, 9..10)]
        );
        assert!(runs(&[]).is_empty());
    }
}
