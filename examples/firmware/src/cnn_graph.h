/* The architecture of the fashion CNN pair (tests/fixtures/fashion/cnn_split) as a compact
 * graph of the C API, and the order of its parameters: shared by the firmware (cnn_eval.c)
 * and the host tool that sizes its buffers (host/cnn_sizes.c).
 *
 *   conv1 1->8 3x3 -> bn1 -> ReLU -> conv2 8->16 3x3 stride 2 -> bn2 -> ReLU
 *   -> conv3 16->16 3x3 stride 2 -> bn3 -> ReLU -> global average pool -> head (linear, 5)
 *
 * Node 0 is the 1 x 28 x 28 image, node l + 1 the output of layer l; the logits are node 11.
 * Each model's parameters are one array in layer order (run.sh has gen_data.py join them):
 * conv1.weight, bn1.{weight,bias,running_mean,running_var}, conv2.weight, bn2.*, conv3.weight,
 * bn3.*, head.weight, head.bias.
 */
#ifndef CNN_GRAPH_H
#define CNN_GRAPH_H

#include "pleas.h"

#define CNN_CONV(in, c, s)                                                                   \
    {.op = PLEAS_CNN_OP_CONV2D, .input = (in), .out = (c), .kernel = {3, 3},                 \
     .stride = {(s), (s)}, .padding = {1, 1}}
#define CNN_BN(in) {.op = PLEAS_CNN_OP_BATCHNORM, .input = (in), .eps = 1e-5f}
#define CNN_RELU(in) {.op = PLEAS_CNN_OP_RELU, .input = (in)}

static const pleas_cnn_layer cnn_layers[] = {
    CNN_CONV(0, 8, 1),  CNN_BN(1), CNN_RELU(2),
    CNN_CONV(3, 16, 2), CNN_BN(4), CNN_RELU(5),
    CNN_CONV(6, 16, 2), CNN_BN(7), CNN_RELU(8),
    {.op = PLEAS_CNN_OP_GLOBAL_AVGPOOL, .input = 9},
    {.op = PLEAS_CNN_OP_LINEAR, .input = 10, .out = 5, .bias = 1},
};
static const size_t cnn_outputs[] = {11};

static const pleas_cnn_graph cnn_graph = {
    .channels = 1,
    .height = 28,
    .width = 28,
    .layers = cnn_layers,
    .layer_count = sizeof cnn_layers / sizeof cnn_layers[0],
    .outputs = cnn_outputs,
    .output_count = 1,
};

#endif
