//! The explicit architecture file (TOML) for models no family recognises.
//!
//! ```toml
//! # per-sample input shape: [D] or [C, H, W]
//! input = [1, 28, 28]
//! # graph outputs (heads), by node name; default: the last node. An output named otherwise
//! # than its node is a table: { name = "task_a", node = "head" }
//! outputs = ["head"]
//!
//! [[node]]
//! name = "conv1"        # unique node name
//! op = "conv2d"         # conv2d | linear | batchnorm | relu | add | maxpool | avgpool
//!                       # | global_avgpool | flatten | block_conv2d | block_linear
//! inputs = ["input"]    # default: the previous node; "input" is the graph input
//! params = "conv1"      # tensor-name prefix; default: the node name
//! stride = 1            # conv2d, block_conv2d and pools: an integer or [h, w]; default 1
//!                       # (pools: kernel)
//! padding = 1           # conv2d, block_conv2d and pools; default 0
//! kernel = 3            # pools only (a conv's kernel comes from its weight's shape)
//! bias = true           # conv2d / linear; default: used if `{params}.bias` is in the file
//! eps = 1e-5            # batchnorm; default 1e-5
//!
//! [[node]]
//! name = "merged"
//! op = "block_conv2d"   # or block_linear: output blocks, each reading input channel ranges
//! blocks = [
//!   { params = "merged.blocks.0", inputs = [[0, 12], [16, 20]] },
//!   { params = "merged.blocks.1", inputs = [[0, 16]], bias = false },
//! ]
//! ```
//!
//! Tensors are PyTorch-named: `{params}.weight` (conv `[out, in, kh, kw]`, linear
//! `[out, in]`), `{params}.bias`, and for batch-norm `{params}.weight`, `.bias`,
//! `.running_mean`, `.running_var`. Channel counts and kernel sizes are read from the weight
//! shapes, so the file only says how layers connect. A block's `inputs` are half-open
//! `[start, end]` channel ranges of the layer input (ascending, disjoint); its weight is
//! `[rows, cols, kh, kw]` (block conv, every block with the same kernel) or `[rows, cols]`
//! (block linear) with `cols` the total length of the ranges; its bias `{params}.bias` is used
//! if present unless the block says `bias = false`.
//!
//! [`to_toml`] writes any graph this parser reads back in this format.

use std::path::Path;

use std::fmt::Write as _;
use std::ops::Range;

use pleas_core::graph::{Graph, GraphError, NodeId, Op, Pair, Shape, WeightBlock, Weights};

use super::resnet::BN_EPS;
use crate::error::Error;

/// Why an architecture file (or the architecture text of a model's metadata) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchFileError {
    /// The text is not what the format says (what is wrong, and where).
    #[error("{0}")]
    Invalid(String),
    /// The graph refused a node or an output the text describes.
    #[error("{what}")]
    Graph {
        /// The node or output (e.g. "node `conv1`").
        what: String,
        /// The graph's refusal.
        #[source]
        source: GraphError,
    },
}

impl From<String> for ArchFileError {
    fn from(reason: String) -> Self {
        ArchFileError::Invalid(reason)
    }
}

impl From<&str> for ArchFileError {
    fn from(reason: &str) -> Self {
        ArchFileError::Invalid(reason.into())
    }
}

fn pair(v: Option<&toml::Value>, default: Pair, what: &str) -> Result<Pair, String> {
    match v {
        None => Ok(default),
        Some(x) if as_usize(x).is_some() => {
            let n = as_usize(x).expect("checked");
            Ok([n, n])
        }
        Some(toml::Value::Array(a)) if a.len() == 2 => match (as_usize(&a[0]), as_usize(&a[1])) {
            (Some(h), Some(w)) => Ok([h, w]),
            _ => Err(format!("`{what}` must be a non-negative integer or [h, w]")),
        },
        Some(_) => Err(format!("`{what}` must be a non-negative integer or [h, w]")),
    }
}

fn as_usize(v: &toml::Value) -> Option<usize> {
    v.as_integer().and_then(|i| usize::try_from(i).ok())
}

/// The `bias` key of a layer or block: an explicit `true` / `false`, else whether the tensor is
/// in `weights`.
fn bias_of(
    t: &toml::Table,
    bname: &str,
    weights: &Weights,
) -> Result<Option<String>, &'static str> {
    match t.get("bias").map(|v| v.as_bool()) {
        None => Ok(weights.contains_key(bname).then(|| bname.to_string())),
        Some(Some(true)) => Ok(Some(bname.to_string())),
        Some(Some(false)) => Ok(None),
        Some(None) => Err("`bias` must be true or false"),
    }
}

/// The `blocks` of a block layer: each block's rows (and, for a conv, its kernel) from its
/// weight's shape, which must have `dims` dimensions; returns the blocks and the common kernel.
fn blocks(
    t: &toml::Table,
    weights: &Weights,
    dims: usize,
) -> Result<(Vec<WeightBlock>, Pair), String> {
    let list = t
        .get("blocks")
        .and_then(|v| v.as_array())
        .ok_or("missing `blocks = [{ params = ..., inputs = [[start, end], ...] }, ...]`")?;
    if list.is_empty() {
        return Err("`blocks` is empty".into());
    }
    let mut out = Vec::with_capacity(list.len());
    let mut kernel: Option<Pair> = None;
    for (k, b) in list.iter().enumerate() {
        let bt = b
            .as_table()
            .ok_or_else(|| format!("block {k} is not a table"))?;
        let prefix = bt
            .get("params")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("block {k} has no `params` (its tensor-name prefix)"))?;
        let bad_ranges = || format!("block {k}: `inputs` must be a list of [start, end] pairs");
        let inputs: Vec<Range<usize>> = bt
            .get("inputs")
            .and_then(|v| v.as_array())
            .ok_or_else(bad_ranges)?
            .iter()
            .map(|r| match r.as_array().map(Vec::as_slice) {
                Some([a, b]) => Some(as_usize(a)?..as_usize(b)?),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(bad_ranges)?;
        let wname = format!("{prefix}.weight");
        let shape = weights
            .get(&wname)
            .map(|w| w.shape().to_vec())
            .ok_or_else(|| format!("block {k}: tensor `{wname}` is missing"))?;
        if shape.len() != dims {
            return Err(format!(
                "block {k}: weight `{wname}` has shape {shape:?}, not {dims}-D"
            ));
        }
        let cols = inputs
            .iter()
            .fold(0usize, |acc, r| acc.saturating_add(r.len()));
        if shape[1] != cols {
            return Err(format!(
                "block {k}: weight `{wname}` has {} input columns, its `inputs` ranges hold {cols} \
                 channels",
                shape[1]
            ));
        }
        if dims == 4 {
            let kk = [shape[2], shape[3]];
            if kernel.is_some_and(|first| first != kk) {
                return Err(format!(
                    "block {k}: kernel {}x{} differs from block 0's",
                    kk[0], kk[1]
                ));
            }
            kernel = Some(kk);
        }
        let bias = bias_of(bt, &format!("{prefix}.bias"), weights)
            .map_err(|e| format!("block {k}: {e}"))?;
        out.push(WeightBlock {
            weight: wname,
            bias,
            rows: shape[0],
            inputs,
        });
    }
    Ok((out, kernel.unwrap_or([1, 1])))
}

/// Builds the graph an architecture file describes, reading channel counts from `weights`.
pub fn load(path: &Path, weights: &Weights) -> Result<Graph, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, weights).map_err(|source| Error::ArchFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Builds the graph from the file's text; the error is the reason, without the path.
pub fn parse(text: &str, weights: &Weights) -> Result<Graph, ArchFileError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let e = e.to_string();
        e.lines().next().unwrap_or("invalid TOML").to_string()
    })?;
    let nodes = table
        .get("node")
        .and_then(|v| v.as_array())
        .ok_or("no `[[node]]` entries");
    let mut g = Graph::new(input_shape(&table)?);
    let mut prev: NodeId = g.input();
    for (i, node) in nodes?.iter().enumerate() {
        let t = node
            .as_table()
            .ok_or_else(|| format!("node {i} is not a table"))?;
        let name = t
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("node {i} has no `name`"))?;
        let node = NodeEntry {
            t,
            name,
            prefix: t.get("params").and_then(|v| v.as_str()).unwrap_or(name),
            weights,
        };
        let op_name = t
            .get("op")
            .and_then(|v| v.as_str())
            .ok_or_else(|| node.ctx("missing `op`".into()))?;
        let inputs = node.inputs(&g, prev)?;
        let op = node.op(op_name, &g, &inputs)?;
        prev = g
            .push(name.to_string(), op, &inputs)
            .map_err(|source| ArchFileError::Graph {
                what: format!("node `{name}`"),
                source,
            })?;
    }
    add_outputs(&table, &mut g, prev)?;
    Ok(g)
}

/// The `input` key: `[D]` or `[C, H, W]`.
fn input_shape(table: &toml::Table) -> Result<Shape, String> {
    let input: Vec<usize> = table
        .get("input")
        .and_then(|v| v.as_array())
        .ok_or("missing `input = [D]` or `[C, H, W]`")?
        .iter()
        .map(|v| v.as_integer().and_then(|i| usize::try_from(i).ok()))
        .collect::<Option<_>>()
        .ok_or("`input` must hold non-negative integers")?;
    match input.as_slice() {
        [d] => Ok(Shape::flat(*d)),
        [c, h, w] => Ok(Shape::new(*c, *h, *w)),
        _ => Err(format!("`input` {input:?} must be [D] or [C, H, W]")),
    }
}

/// The `outputs` key (default: the last node, `last`).
fn add_outputs(table: &toml::Table, g: &mut Graph, last: NodeId) -> Result<(), ArchFileError> {
    let refused = |name: &str| {
        let what = format!("output `{name}`");
        move |source| ArchFileError::Graph { what, source }
    };
    let list = match table.get("outputs") {
        None => {
            let name = g.node(last).name.clone();
            return g.add_output(name.clone(), last).map_err(refused(&name));
        }
        Some(toml::Value::Array(a)) => a,
        Some(_) => return Err("`outputs` must be a list of node names".into()),
    };
    const BAD: &str =
        "`outputs` entries must be node names or { name = \"...\", node = \"...\" } tables";
    for v in list {
        let (name, node) = match v {
            toml::Value::String(s) => (s.as_str(), s.as_str()),
            toml::Value::Table(t) => match (
                t.get("name").and_then(|v| v.as_str()),
                t.get("node").and_then(|v| v.as_str()),
            ) {
                (Some(name), Some(node)) => (name, node),
                _ => return Err(BAD.into()),
            },
            _ => return Err(BAD.into()),
        };
        let id = g
            .find(node)
            .ok_or_else(|| format!("output `{name}`: `{node}` is not a node"))?;
        g.add_output(name, id).map_err(refused(name))?;
    }
    Ok(())
}

/// One `[[node]]` table being read: its keys, name, tensor-name prefix and the weights its
/// shapes come from.
struct NodeEntry<'a> {
    t: &'a toml::Table,
    name: &'a str,
    prefix: &'a str,
    weights: &'a Weights,
}

impl NodeEntry<'_> {
    /// `m` prefixed with the node's name.
    fn ctx(&self, m: String) -> String {
        format!("node `{}`: {m}", self.name)
    }

    /// The `inputs` key (default: the previous node, `prev`).
    fn inputs(&self, g: &Graph, prev: NodeId) -> Result<Vec<NodeId>, String> {
        match self.t.get("inputs") {
            None => Ok(vec![prev]),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    let s = v
                        .as_str()
                        .ok_or_else(|| self.ctx("`inputs` must be names".into()))?;
                    g.find(s)
                        .ok_or_else(|| self.ctx(format!("input `{s}` is not an earlier node")))
                })
                .collect(),
            Some(_) => Err(self.ctx("`inputs` must be a list of node names".into())),
        }
    }

    fn weight_name(&self) -> String {
        format!("{}.weight", self.prefix)
    }

    fn bias_name(&self) -> String {
        format!("{}.bias", self.prefix)
    }

    /// The shape of `{params}.weight`.
    fn weight_shape(&self) -> Result<Vec<usize>, String> {
        let wname = self.weight_name();
        self.weights
            .get(&wname)
            .map(|w| w.shape().to_vec())
            .ok_or_else(|| self.ctx(format!("tensor `{wname}` is missing")))
    }

    fn bias(&self) -> Result<Option<String>, String> {
        bias_of(self.t, &self.bias_name(), self.weights).map_err(|e| self.ctx(e.into()))
    }

    fn stride(&self, default: Pair) -> Result<Pair, String> {
        pair(self.t.get("stride"), default, "stride").map_err(|e| self.ctx(e))
    }

    fn padding(&self) -> Result<Pair, String> {
        pair(self.t.get("padding"), [0, 0], "padding").map_err(|e| self.ctx(e))
    }

    /// The layer op `op_name` of this node, reading `inputs` of `g`.
    fn op(&self, op_name: &str, g: &Graph, inputs: &[NodeId]) -> Result<Op, String> {
        match op_name {
            "conv2d" => self.conv2d(),
            "linear" => self.linear(),
            "batchnorm" => self.batchnorm(),
            "relu" => Ok(Op::Relu),
            "add" => Ok(Op::Add),
            "maxpool" | "avgpool" => self.pool(op_name == "maxpool"),
            "global_avgpool" => Ok(Op::GlobalAvgPool),
            "flatten" => Ok(Op::Flatten),
            "block_conv2d" | "block_linear" => {
                // The layer reads all its input's channels; a wrong input count is the graph's
                // error.
                let in_c = inputs.first().map_or(0, |&i| g.node(i).shape.c);
                self.block_layer(op_name == "block_conv2d", in_c)
            }
            other => Err(self.ctx(format!("unknown op `{other}`"))),
        }
    }

    fn conv2d(&self) -> Result<Op, String> {
        let s = self.weight_shape()?;
        let [o, c, kh, kw] = s[..] else {
            return Err(self.ctx(format!(
                "conv weight `{}` has shape {s:?}, not 4-D",
                self.weight_name()
            )));
        };
        Ok(Op::Conv2d {
            weight: self.weight_name(),
            bias: self.bias()?,
            in_channels: c,
            out_channels: o,
            kernel: [kh, kw],
            stride: self.stride([1, 1])?,
            padding: self.padding()?,
        })
    }

    fn linear(&self) -> Result<Op, String> {
        let s = self.weight_shape()?;
        let [o, c] = s[..] else {
            return Err(self.ctx(format!(
                "linear weight `{}` has shape {s:?}, not 2-D",
                self.weight_name()
            )));
        };
        Ok(Op::Linear {
            weight: self.weight_name(),
            bias: self.bias()?,
            in_features: c,
            out_features: o,
        })
    }

    fn batchnorm(&self) -> Result<Op, String> {
        let s = self.weight_shape()?;
        let eps = match self.t.get("eps") {
            None => BN_EPS,
            Some(v) => v
                .as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .ok_or_else(|| self.ctx("`eps` must be a number".into()))?
                as f32,
        };
        Ok(Op::BatchNorm {
            weight: self.weight_name(),
            bias: self.bias_name(),
            running_mean: format!("{}.running_mean", self.prefix),
            running_var: format!("{}.running_var", self.prefix),
            channels: s.first().copied().unwrap_or(0),
            eps,
        })
    }

    fn pool(&self, is_max: bool) -> Result<Op, String> {
        let kernel = pair(self.t.get("kernel"), [0, 0], "kernel").map_err(|e| self.ctx(e))?;
        if kernel == [0, 0] {
            return Err(self.ctx("pools need a `kernel`".into()));
        }
        let (stride, padding) = (self.stride(kernel)?, self.padding()?);
        Ok(if is_max {
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
        } else {
            Op::AvgPool {
                kernel,
                stride,
                padding,
            }
        })
    }

    /// A `block_conv2d` (`conv`) or `block_linear` layer over `in_c` input channels.
    fn block_layer(&self, conv: bool, in_c: usize) -> Result<Op, String> {
        let (blocks, kernel) =
            blocks(self.t, self.weights, if conv { 4 } else { 2 }).map_err(|e| self.ctx(e))?;
        let out_c = blocks
            .iter()
            .fold(0usize, |acc, b| acc.saturating_add(b.rows));
        Ok(if conv {
            Op::BlockConv2d {
                in_channels: in_c,
                out_channels: out_c,
                kernel,
                stride: self.stride([1, 1])?,
                padding: self.padding()?,
                blocks,
            }
        } else {
            Op::BlockLinear {
                in_features: in_c,
                out_features: out_c,
                blocks,
            }
        })
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML float that reads back (as f64, then rounded to f32 like the parser does) as `x`.
fn float(x: f32) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    // The shortest f32 form unless rounding it through f64 lands elsewhere; the exact value
    // otherwise.
    let short = format!("{x:?}");
    if short.parse::<f64>().map(|v| v as f32) == Ok(x) {
        short
    } else {
        format!("{:?}", x as f64)
    }
}

fn pair_text(p: Pair) -> String {
    format!("[{}, {}]", p[0], p[1])
}

/// The tensor-name prefix of a layer: its weight name without `.weight`; its bias, if any, must
/// be `{prefix}.bias`.
fn prefix<'g>(node: &str, weight: &'g str, bias: Option<&str>) -> Result<&'g str, String> {
    let p = weight.strip_suffix(".weight").ok_or_else(|| {
        format!("node `{node}`: weight tensor `{weight}` is not named `{{prefix}}.weight`")
    })?;
    if let Some(b) = bias
        && b != format!("{p}.bias")
    {
        return Err(format!(
            "node `{node}`: bias tensor `{b}` is not named `{p}.bias` after its weight"
        ));
    }
    Ok(p)
}

/// The `blocks = [...]` line of a block layer.
fn blocks_text(node: &str, blocks: &[WeightBlock]) -> Result<String, String> {
    let mut s = String::from("blocks = [\n");
    for b in blocks {
        let p = prefix(node, &b.weight, b.bias.as_deref())?;
        let ranges: Vec<String> = b
            .inputs
            .iter()
            .map(|r| format!("[{}, {}]", r.start, r.end))
            .collect();
        let _ = writeln!(
            s,
            "  {{ params = {}, inputs = [{}], bias = {} }},",
            quote(p),
            ranges.join(", "),
            b.bias.is_some()
        );
    }
    s.push_str("]\n");
    Ok(s)
}

/// Writes `graph` as an architecture file that [`parse`] reads back into an equal graph (given
/// the weights the graph reads): every node with its op, inputs, tensor prefix, strides,
/// paddings, pooling kernels, biases and epsilons, the outputs and the input shape.
///
/// Fails (with the reason) on a graph the format cannot express: a tensor not named
/// `{prefix}.weight` / `.bias` / `.running_mean` / `.running_var`, an input node not named
/// `input`, or an op the format does not know.
pub fn to_toml(graph: &Graph) -> Result<String, String> {
    let nodes = graph.nodes();
    if nodes[0].name != "input" {
        return Err(format!(
            "the graph input is named `{}`, the format names it `input`",
            nodes[0].name
        ));
    }
    let mut s = String::new();
    let shape = graph.input_shape();
    if shape.is_flat() {
        let _ = writeln!(s, "input = [{}]", shape.c);
    } else {
        let _ = writeln!(s, "input = [{}, {}, {}]", shape.c, shape.h, shape.w);
    }
    let mut outputs = Vec::new();
    for o in graph.outputs() {
        let node = &graph.node(o.node).name;
        outputs.push(if &o.name == node {
            quote(node)
        } else {
            format!("{{ name = {}, node = {} }}", quote(&o.name), quote(node))
        });
    }
    let _ = writeln!(s, "outputs = [{}]", outputs.join(", "));
    for node in &nodes[1..] {
        let name = node.name.as_str();
        let _ = write!(
            s,
            "\n[[node]]\nname = {}\nop = {}\n",
            quote(name),
            quote(node.op.kind())
        );
        let ins: Vec<String> = node.inputs.iter().map(|&i| quote(&nodes[i].name)).collect();
        let _ = writeln!(s, "inputs = [{}]", ins.join(", "));
        match &node.op {
            Op::Conv2d {
                weight,
                bias,
                stride,
                padding,
                ..
            } => {
                let p = prefix(name, weight, bias.as_deref())?;
                let _ = writeln!(
                    s,
                    "params = {}\nbias = {}\nstride = {}\npadding = {}",
                    quote(p),
                    bias.is_some(),
                    pair_text(*stride),
                    pair_text(*padding)
                );
            }
            Op::Linear { weight, bias, .. } => {
                let p = prefix(name, weight, bias.as_deref())?;
                let _ = writeln!(s, "params = {}\nbias = {}", quote(p), bias.is_some());
            }
            Op::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
                ..
            } => {
                let p = prefix(name, weight, Some(bias))?;
                for (t, suffix) in [(running_mean, "running_mean"), (running_var, "running_var")] {
                    if *t != format!("{p}.{suffix}") {
                        return Err(format!(
                            "node `{name}`: tensor `{t}` is not named `{p}.{suffix}`"
                        ));
                    }
                }
                let _ = writeln!(s, "params = {}\neps = {}", quote(p), float(*eps));
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let _ = writeln!(
                    s,
                    "kernel = {}\nstride = {}\npadding = {}",
                    pair_text(*kernel),
                    pair_text(*stride),
                    pair_text(*padding)
                );
            }
            Op::BlockConv2d {
                stride,
                padding,
                blocks,
                ..
            } => {
                let _ = writeln!(
                    s,
                    "stride = {}\npadding = {}",
                    pair_text(*stride),
                    pair_text(*padding)
                );
                s.push_str(&blocks_text(name, blocks)?);
            }
            Op::BlockLinear { blocks, .. } => s.push_str(&blocks_text(name, blocks)?),
            Op::Relu | Op::Add | Op::GlobalAvgPool | Op::Flatten => {}
            other => {
                return Err(format!(
                    "node `{name}`: op `{}` has no architecture-file form",
                    other.kind()
                ));
            }
        }
    }
    Ok(s)
}
