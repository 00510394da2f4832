//! Reading an ONNX export back: value shapes, initialiser values, and the multiply-adds
//! counted from the graph itself (the exporter's `value_info` shapes and the initialisers'
//! dimensions), for the export tests and the `onnx_export` fuzz target.

use std::collections::HashMap;

use pleas::export::onnx::proto::{DimensionValue, ModelProto, TensorProto, ValueInfoProto};
use pleas_core::graph::{Graph, Op, node_macs};

/// A value's dimensions as text (`batch`, `16`, ...).
pub fn dims(v: &ValueInfoProto) -> Vec<String> {
    let t = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
    t.and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value.as_ref() {
                    Some(DimensionValue::DimValue(v)) => v.to_string(),
                    Some(DimensionValue::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A float initialiser's elements (little-endian `raw_data`).
pub fn floats(t: &TensorProto) -> Vec<f32> {
    t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Multiply-adds per sample of the Conv and Gemm nodes: a Conv's output elements per sample
/// (its `value_info` shape) times its weight's input channels and kernel; a Gemm's weight
/// elements. `None` if a node's weight or output shape is missing, a Conv is grouped, or the
/// graph holds another multiplying operator.
pub fn graph_macs(m: &ModelProto) -> Option<u64> {
    let g = m.graph.as_ref()?;
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let shapes: HashMap<&str, Vec<String>> = g
        .value_info
        .iter()
        .map(|v| (v.name.as_str(), dims(v)))
        .collect();
    let mut macs = 0u64;
    for n in &g.node {
        let weight = || -> Option<Vec<u64>> {
            let t = inits.get(n.input.get(1)?.as_str())?;
            Some(t.dims.iter().map(|&d| d as u64).collect())
        };
        match n.op_type.as_str() {
            "Conv" => {
                if n.attribute.iter().any(|a| a.name == "group" && a.i != 1) {
                    return None;
                }
                let out: u64 = shapes
                    .get(n.output.first()?.as_str())?
                    .get(1..)?
                    .iter()
                    .map(|d| d.parse::<u64>().ok())
                    .product::<Option<u64>>()?;
                let w = weight()?;
                macs += out * w.get(1..)?.iter().product::<u64>();
            }
            "Gemm" => macs += weight()?.iter().product::<u64>(),
            "MatMul" | "ConvTranspose" | "Einsum" => return None,
            _ => {}
        }
    }
    Some(macs)
}

/// Multiply-adds of `g` with every block-structured layer dense (zero cross blocks).
pub fn dense_macs(g: &Graph) -> u64 {
    g.nodes()
        .iter()
        .enumerate()
        .map(|(id, n)| match &n.op {
            Op::BlockConv2d {
                in_channels,
                out_channels,
                kernel,
                ..
            } => {
                (n.shape.h * n.shape.w * in_channels * out_channels * kernel[0] * kernel[1]) as u64
            }
            Op::BlockLinear {
                in_features,
                out_features,
                ..
            } => (in_features * out_features) as u64,
            _ => node_macs(g, id),
        })
        .sum()
}
