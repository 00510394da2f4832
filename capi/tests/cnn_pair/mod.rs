//! The fixtures' CNN pair (tests/fixtures/fashion/cnn_split) as the C API's CNN tests give it:
//! its graph as C layers and as the core's, its parameter order, the byte table.

use pleas_capi::cnn::*;
use pleas_core::forward::compact::{Layer, LayerOp, Window};

use crate::common::Tensors;

/// The parameter tensors in the order `pleas_cnn_forward_f32()` reads them.
pub const PARAMS: [&str; 17] = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "conv2.weight",
    "bn2.weight",
    "bn2.bias",
    "bn2.running_mean",
    "bn2.running_var",
    "conv3.weight",
    "bn3.weight",
    "bn3.bias",
    "bn3.running_mean",
    "bn3.running_var",
    "head.weight",
    "head.bias",
];

/// The head, the graph's only output.
pub const HEAD: usize = 11;

/// (out channels, stride) of the three 3x3 convs.
const CONVS: [(usize, usize); 3] = [(8, 1), (16, 2), (16, 2)];

/// One model's parameters as one buffer.
pub fn params(t: &Tensors) -> Vec<f32> {
    PARAMS
        .iter()
        .flat_map(|n| t.f32[*n].iter().copied())
        .collect()
}

/// A layer without parameters (batch-norm's `eps` 1e-5) reading `input`.
pub fn simple(op: u32, input: usize) -> pleas_cnn_layer {
    pleas_cnn_layer {
        op,
        input,
        eps: 1e-5,
        ..Default::default()
    }
}

/// The pair's architecture as C layers (examples/firmware/src/cnn_graph.h): three
/// conv -> batch-norm -> ReLU, global average pooling, a linear head of 5 classes.
pub fn c_layers() -> Vec<pleas_cnn_layer> {
    let mut l = Vec::new();
    for (k, (out, s)) in CONVS.into_iter().enumerate() {
        l.push(pleas_cnn_layer {
            op: PLEAS_CNN_OP_CONV2D,
            input: 3 * k,
            out,
            kernel: [3, 3],
            stride: [s, s],
            padding: [1, 1],
            ..Default::default()
        });
        l.push(simple(PLEAS_CNN_OP_BATCHNORM, 3 * k + 1));
        l.push(simple(PLEAS_CNN_OP_RELU, 3 * k + 2));
    }
    l.push(pleas_cnn_layer {
        op: PLEAS_CNN_OP_GLOBAL_AVGPOOL,
        input: 9,
        ..Default::default()
    });
    l.push(pleas_cnn_layer {
        op: PLEAS_CNN_OP_LINEAR,
        input: 10,
        out: 5,
        bias: 1,
        ..Default::default()
    });
    l
}

/// The same architecture as the core's layers.
pub fn core_layers() -> Vec<Layer> {
    let mut l = Vec::new();
    for (k, (out, s)) in CONVS.into_iter().enumerate() {
        let window = Window {
            kernel: [3, 3],
            stride: [s, s],
            padding: [1, 1],
        };
        let ops = [
            LayerOp::Conv2d {
                out_channels: out,
                window,
                bias: false,
            },
            LayerOp::BatchNorm { eps: 1e-5 },
            LayerOp::Relu,
        ];
        for (j, op) in ops.into_iter().enumerate() {
            l.push(Layer {
                op,
                input: 3 * k + j,
            });
        }
    }
    l.push(Layer {
        op: LayerOp::GlobalAvgPool,
        input: 9,
    });
    l.push(Layer {
        op: LayerOp::Linear {
            out_features: 5,
            bias: true,
        },
        input: 10,
    });
    l
}

/// A graph of 1 x 28 x 28 inputs over `layers` and `outputs`.
pub fn graph(layers: &[pleas_cnn_layer], outputs: &[usize]) -> pleas_cnn_graph {
    pleas_cnn_graph {
        channels: 1,
        height: 28,
        width: 28,
        layers: layers.as_ptr(),
        layer_count: layers.len(),
        outputs: outputs.as_ptr(),
        output_count: outputs.len(),
    }
}
