//! `pleas export --format torch`: a model as a PyTorch state_dict (`FILE.pt`, written as
//! `torch.save` writes it) plus the module that loads it (`FILE.py`, plain `torch.nn` layers,
//! no TorchScript).
//!
//! Block layers are written in their dense form ([`dense_layer`]: the cross blocks stored as
//! zeros), so every layer is one `nn.Conv2d` / `nn.Linear`. Tensor names are the graph's node
//! names (the original PyTorch module paths, e.g. `layers.3.conv1.weight`; merged split models
//! have `head.a` / `head.b`); batch-norm layers carry `num_batches_tracked` as PyTorch's do, so
//! `load_state_dict(strict=True)` accepts the file. A merged model with batch-norm folded has
//! convolutions with a bias and no batch-norm layer: that is exactly what it computes, with no
//! invented statistics (an identity batch-norm would need `running_var = 1 - eps`, which does
//! not round-trip exactly in f32, and would be renormalised if the model were trained).
//!
//! The module file describes the graph as data (`GRAPH`: one entry per node, in order) and a
//! short interpreter (`Model.forward`), plus the heads' classes and the input normalisation.

use std::path::{Path, PathBuf};

use pleas_core::graph::{Graph, Op, Tensor, Weights};
use serde_json::{Value, json};

use super::ExportError;
use super::dense::dense_layer;
use crate::error::Error;
use crate::io::atomic::write_atomically;
use crate::io::safetensors::{Dtype, RawTensor};
use crate::io::torch::write;
use crate::model::Model;

fn get<'w>(weights: &'w Weights, name: &str) -> Result<&'w Tensor, ExportError> {
    weights.get(name).ok_or_else(|| ExportError::Torch {
        reason: format!("tensor `{name}` is missing"),
    })
}

/// The module path of each node with parameters (`None` for the others): its name, or, if one
/// name is a dotted prefix of another (a module cannot be both a layer and a container) or a
/// name has an empty part, every name with `.` replaced by `_`.
fn module_paths(g: &Graph) -> Vec<Option<String>> {
    let names: Vec<Option<&str>> = g
        .nodes()
        .iter()
        .map(|n| (!n.op.params().is_empty()).then_some(n.name.as_str()))
        .collect();
    let all: Vec<&str> = names.iter().flatten().copied().collect();
    let clash = all.iter().any(|a| {
        a.split('.').any(str::is_empty)
            || all
                .iter()
                .any(|b| b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'.')
    });
    names
        .into_iter()
        .map(|n| {
            n.map(|s| {
                if clash {
                    s.replace('.', "_")
                } else {
                    s.to_string()
                }
            })
        })
        .collect()
}

fn raw_f32(t: &Tensor) -> RawTensor {
    RawTensor {
        dtype: Dtype::F32,
        shape: t.shape().to_vec(),
        bytes: t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// The state_dict of the dense model, in graph order, under the module paths.
pub fn state_dict(model: &Model) -> Result<Vec<(String, RawTensor)>, ExportError> {
    let paths = module_paths(&model.graph);
    let mut out = Vec::new();
    for (node, path) in model.graph.nodes().iter().zip(&paths) {
        let Some(path) = path else { continue };
        if let Op::BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            ..
        } = &node.op
        {
            for (suffix, name) in [
                ("weight", weight),
                ("bias", bias),
                ("running_mean", running_mean),
                ("running_var", running_var),
            ] {
                let t = get(&model.weights, name)?;
                out.push((format!("{path}.{suffix}"), raw_f32(t)));
            }
            let count = RawTensor {
                dtype: Dtype::I64,
                shape: vec![],
                bytes: 0i64.to_le_bytes().to_vec(),
            };
            out.push((format!("{path}.num_batches_tracked"), count));
            continue;
        }
        let layer = dense_layer(node, &model.weights)?.ok_or_else(|| ExportError::Torch {
            reason: format!("node `{}` has weights of no known layer", node.name),
        })?;
        out.push((format!("{path}.weight"), raw_f32(&layer.weight)));
        if let Some(b) = &layer.bias {
            out.push((format!("{path}.bias"), raw_f32(b)));
        }
    }
    Ok(out)
}

/// The JSON description of one node for the module file.
fn node_json(g: &Graph, id: usize, module: &Option<String>) -> Value {
    let n = g.node(id);
    let mut v = json!({"name": n.name, "op": n.op.kind(), "inputs": n.inputs, "module": module});
    let extra = match &n.op {
        Op::Conv2d {
            in_channels: i,
            out_channels: o,
            kernel,
            stride,
            padding,
            bias,
            ..
        } => json!({"in": i, "out": o, "kernel": kernel, "stride": stride,
                    "padding": padding, "bias": bias.is_some()}),
        Op::BlockConv2d {
            in_channels: i,
            out_channels: o,
            kernel,
            stride,
            padding,
            blocks,
        } => json!({"op": "conv2d", "in": i, "out": o, "kernel": kernel, "stride": stride,
                    "padding": padding, "bias": blocks.iter().any(|b| b.bias.is_some())}),
        Op::Linear {
            in_features: i,
            out_features: o,
            bias,
            ..
        } => json!({"in": i, "out": o, "bias": bias.is_some()}),
        Op::BlockLinear {
            in_features: i,
            out_features: o,
            blocks,
        } => json!({"op": "linear", "in": i, "out": o,
                    "bias": blocks.iter().any(|b| b.bias.is_some())}),
        Op::BatchNorm { channels, eps, .. } => json!({"channels": channels, "eps": eps,
            "flat": g.node(n.inputs[0]).shape.is_flat()}),
        Op::MaxPool {
            kernel,
            stride,
            padding,
        }
        | Op::AvgPool {
            kernel,
            stride,
            padding,
        } => json!({"kernel": kernel, "stride": stride, "padding": padding}),
        _ => json!({}),
    };
    if let (Value::Object(v), Value::Object(e)) = (&mut v, extra) {
        v.extend(e);
    }
    v
}

/// A Python expression that evaluates to `v`: its JSON in a raw triple-quoted string, one
/// array element per line. (A `'` is written as the JSON escape `\u0027`, so the string cannot
/// end early.)
fn py_json(v: &Value) -> String {
    let text = match v {
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            let lines: Vec<String> = items.iter().map(|i| format!("    {i}")).collect();
            format!("[\n{}\n]", lines.join(",\n"))
        }
        _ => v.to_string(),
    };
    format!("json.loads(r'''{}''')", text.replace('\'', "\\u0027"))
}

/// The module file: the graph as data, the heads, the input, and the interpreter.
pub fn module_source(model: &Model, pt_name: &str) -> String {
    let g = &model.graph;
    let paths = module_paths(g);
    let nodes: Vec<Value> = (0..g.nodes().len())
        .map(|i| node_json(g, i, &paths[i]))
        .collect();
    let outputs: Vec<Value> = g
        .outputs()
        .iter()
        .map(|o| json!([o.name, o.node]))
        .collect();
    let heads: serde_json::Map<String, Value> = model
        .heads
        .iter()
        .map(|h| (h.name.clone(), json!(h.classes)))
        .collect();
    let s = g.input_shape();
    let input = if s.is_flat() {
        json!([s.c])
    } else {
        json!([s.c, s.h, s.w])
    };
    let normalize = model
        .metadata
        .get("normalize")
        .map_or("none", String::as_str);
    MODULE_TEMPLATE
        .replace("{VERSION}", crate::VERSION)
        .replace("{PT}", pt_name)
        .replace("{GRAPH}", &py_json(&Value::Array(nodes)))
        .replace("{OUTPUTS}", &py_json(&Value::Array(outputs)))
        .replace("{HEADS}", &py_json(&Value::Object(heads)))
        .replace("{INPUT}", &py_json(&input))
        .replace(
            "{NORMALIZE}",
            &Value::String(normalize.to_string()).to_string(),
        )
}

const MODULE_TEMPLATE: &str = include_str!("torch_module.py.in");

/// The module file's path beside the state_dict: `FILE.pt` -> `FILE.py`.
pub fn module_path(pt: &Path) -> PathBuf {
    pt.with_extension("py")
}

/// Writes `model` as `pt` (the dense state_dict) and the module file beside it
/// ([`module_path()`]). Both are written atomically; if the second fails the first is removed, so
/// an error leaves neither.
pub fn export(model: &Model, pt: &Path) -> Result<(PathBuf, usize), Error> {
    let bad = |reason: String| Error::Export {
        path: pt.to_path_buf(),
        format: "torch",
        source: crate::export::ExportError::Torch { reason },
    };
    if pt.extension().is_some_and(|e| e == "py") {
        return Err(bad(
            "the state_dict file cannot end in .py (the module file does)".into(),
        ));
    }
    let tensors = state_dict(model).map_err(|source| Error::Export {
        path: pt.to_path_buf(),
        format: "torch",
        source,
    })?;
    let bytes = write::to_bytes(&tensors).map_err(bad)?;
    let py = module_path(pt);
    let pt_name = pt
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    write_atomically(&py, module_source(model, &pt_name).as_bytes())?;
    if let Err(e) = write_atomically(pt, &bytes) {
        let _ = std::fs::remove_file(&py);
        return Err(e);
    }
    Ok((py, tensors.len()))
}
