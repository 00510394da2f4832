//! The explicit architecture file (TOML) for models no family recognises.
//!
//! ```toml
//! # per-sample input shape: [D] or [C, H, W]
//! input = [1, 28, 28]
//! # graph outputs (heads), by node name; default: the last node
//! outputs = ["head"]
//!
//! [[node]]
//! name = "conv1"        # unique node name
//! op = "conv2d"         # conv2d | linear | batchnorm | relu | add | maxpool | avgpool
//!                       # | global_avgpool | flatten
//! inputs = ["input"]    # default: the previous node; "input" is the graph input
//! params = "conv1"      # tensor-name prefix; default: the node name
//! stride = 1            # conv2d and pools: an integer or [h, w]; default 1 (pools: kernel)
//! padding = 1           # conv2d and pools; default 0
//! kernel = 3            # pools only (a conv's kernel comes from its weight's shape)
//! bias = true           # conv2d / linear; default: used if `{params}.bias` is in the file
//! eps = 1e-5            # batchnorm; default 1e-5
//! ```
//!
//! Tensors are PyTorch-named: `{params}.weight` (conv `[out, in, kh, kw]`, linear
//! `[out, in]`), `{params}.bias`, and for batch-norm `{params}.weight`, `.bias`,
//! `.running_mean`, `.running_var`. Channel counts and kernel sizes are read from the weight
//! shapes, so the file only says how layers connect.

use std::path::Path;

use pleas_core::graph::{Graph, NodeId, Op, Pair, Shape, Weights};

use super::resnet::BN_EPS;
use crate::error::Error;

fn err(path: &Path, reason: String) -> Error {
    Error::ArchFile {
        path: path.to_path_buf(),
        reason,
    }
}

fn pair(v: Option<&toml::Value>, default: Pair, what: &str) -> Result<Pair, String> {
    let as_usize = |x: &toml::Value| x.as_integer().and_then(|i| usize::try_from(i).ok());
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

/// Builds the graph an architecture file describes, reading channel counts from `weights`.
pub fn load(path: &Path, weights: &Weights) -> Result<Graph, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, weights).map_err(|reason| err(path, reason))
}

/// Builds the graph from the file's text; the error is the reason, without the path.
pub fn parse(text: &str, weights: &Weights) -> Result<Graph, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let e = e.to_string();
        e.lines().next().unwrap_or("invalid TOML").to_string()
    })?;
    let input: Vec<usize> = table
        .get("input")
        .and_then(|v| v.as_array())
        .ok_or("missing `input = [D]` or `[C, H, W]`")?
        .iter()
        .map(|v| v.as_integer().and_then(|i| usize::try_from(i).ok()))
        .collect::<Option<_>>()
        .ok_or("`input` must hold non-negative integers")?;
    let shape = match input.as_slice() {
        [d] => Shape::flat(*d),
        [c, h, w] => Shape::new(*c, *h, *w),
        _ => return Err(format!("`input` {input:?} must be [D] or [C, H, W]")),
    };
    let nodes = table
        .get("node")
        .and_then(|v| v.as_array())
        .ok_or("no `[[node]]` entries")?;
    let mut g = Graph::new(shape);
    let mut prev: NodeId = g.input();
    for (i, node) in nodes.iter().enumerate() {
        let t = node
            .as_table()
            .ok_or_else(|| format!("node {i} is not a table"))?;
        let name = t
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("node {i} has no `name`"))?
            .to_string();
        let ctx = |m: String| format!("node `{name}`: {m}");
        let op_name = t
            .get("op")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ctx("missing `op`".into()))?;
        let inputs: Vec<NodeId> = match t.get("inputs") {
            None => vec![prev],
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    let s = v
                        .as_str()
                        .ok_or_else(|| ctx("`inputs` must be names".into()))?;
                    g.find(s)
                        .ok_or_else(|| ctx(format!("input `{s}` is not an earlier node")))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ctx("`inputs` must be a list of node names".into())),
        };
        let prefix = t
            .get("params")
            .and_then(|v| v.as_str())
            .unwrap_or(&name)
            .to_string();
        let wname = format!("{prefix}.weight");
        let bname = format!("{prefix}.bias");
        let wshape = || {
            weights
                .get(&wname)
                .map(|w| w.shape().to_vec())
                .ok_or_else(|| ctx(format!("tensor `{wname}` is missing")))
        };
        let bias = match t.get("bias").map(|v| v.as_bool()) {
            None => weights.contains_key(&bname).then(|| bname.clone()),
            Some(Some(true)) => Some(bname.clone()),
            Some(Some(false)) => None,
            Some(None) => return Err(ctx("`bias` must be true or false".into())),
        };
        let stride = |d| pair(t.get("stride"), d, "stride").map_err(ctx);
        let padding = || pair(t.get("padding"), [0, 0], "padding").map_err(ctx);
        let op = match op_name {
            "conv2d" => {
                let s = wshape()?;
                let [o, c, kh, kw] = s[..] else {
                    return Err(ctx(format!(
                        "conv weight `{wname}` has shape {s:?}, not 4-D"
                    )));
                };
                Op::Conv2d {
                    weight: wname.clone(),
                    bias,
                    in_channels: c,
                    out_channels: o,
                    kernel: [kh, kw],
                    stride: stride([1, 1])?,
                    padding: padding()?,
                }
            }
            "linear" => {
                let s = wshape()?;
                let [o, c] = s[..] else {
                    return Err(ctx(format!(
                        "linear weight `{wname}` has shape {s:?}, not 2-D"
                    )));
                };
                Op::Linear {
                    weight: wname.clone(),
                    bias,
                    in_features: c,
                    out_features: o,
                }
            }
            "batchnorm" => {
                let s = wshape()?;
                let eps = match t.get("eps") {
                    None => BN_EPS,
                    Some(v) => v
                        .as_float()
                        .or_else(|| v.as_integer().map(|i| i as f64))
                        .ok_or_else(|| ctx("`eps` must be a number".into()))?
                        as f32,
                };
                Op::BatchNorm {
                    weight: wname.clone(),
                    bias: bname.clone(),
                    running_mean: format!("{prefix}.running_mean"),
                    running_var: format!("{prefix}.running_var"),
                    channels: s.first().copied().unwrap_or(0),
                    eps,
                }
            }
            "relu" => Op::Relu,
            "add" => Op::Add,
            "maxpool" | "avgpool" => {
                let kernel = pair(t.get("kernel"), [0, 0], "kernel").map_err(ctx)?;
                if kernel == [0, 0] {
                    return Err(ctx("pools need a `kernel`".into()));
                }
                let (stride, padding) = (stride(kernel)?, padding()?);
                if op_name == "maxpool" {
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
                }
            }
            "global_avgpool" => Op::GlobalAvgPool,
            "flatten" => Op::Flatten,
            other => return Err(ctx(format!("unknown op `{other}`"))),
        };
        prev = g
            .push(name.clone(), op, &inputs)
            .map_err(|e| e.to_string())?;
    }
    match table.get("outputs") {
        None => {
            let last = g.node(prev).name.clone();
            g.add_output(last, prev).map_err(|e| e.to_string())?;
        }
        Some(toml::Value::Array(a)) => {
            for v in a {
                let s = v.as_str().ok_or("`outputs` must be node names")?;
                let id = g
                    .find(s)
                    .ok_or_else(|| format!("output `{s}` is not a node"))?;
                g.add_output(s, id).map_err(|e| e.to_string())?;
            }
        }
        Some(_) => return Err("`outputs` must be a list of node names".into()),
    }
    Ok(g)
}
