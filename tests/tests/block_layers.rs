//! Block-structured (merged) conv and linear layers: each equals the dense layer whose weight is
//! zero outside its blocks and a scalar f64 twin written here from the definition (random
//! blocks, ranges, strides, paddings, kernels, biases and batches); shape inference rejects bad
//! blocks naming the node; costs count only the stored blocks; `Forward::compute_node` partial
//! execution reproduces `run`; permutation groups stop at block layers; batch-norm folds into
//! blocks.

// Blocks read lists of channel ranges; a list of one range is the common case, not a mistake.
#![allow(clippy::single_range_in_vec_init)]

use pleas_core::forward::{
    Activations, Forward, ForwardError, ForwardParams, Observer, fold_batchnorm,
};
use pleas_core::graph::{
    BlockFault, Graph, GraphError, NodeId, Op, Shape, Tensor, WeightBlock, Weights,
    apply_permutations, cost, node_macs, permutation_groups,
};
use pleas_tests::conv_blocks::random_ranges;
use pleas_tests::models::{
    block_conv_op, block_linear_op, block_resnet, bn_op, max_rel_diff, random_input,
    random_weights, weight_block,
};
use pleas_tests::rng::Rng;
use pleas_tests::tolerance::{
    BLOCK_VS_DENSE_REL, BN_FOLD_REL, KERNEL_VS_NAIVE_REL, PERMUTATION_INVARIANCE_REL,
};
use proptest::prelude::*;

/// Channel counts drawn for inputs and block rows (1 and 17 on purpose: a single channel, and
/// one more than a SIMD-friendly 16).
const CHANNELS: [usize; 6] = [1, 2, 3, 5, 8, 17];

/// 1-3 random blocks over `in_c` inputs: rows from [`CHANNELS`], each block reading a random
/// non-empty subset of the segments of `0..in_c` cut at random points (ascending, disjoint,
/// sometimes touching); with `bias`, each block has a bias with probability 1/2.
fn random_blocks(rng: &mut Rng, in_c: usize, prefix: &str, bias: bool) -> Vec<WeightBlock> {
    let count = 1 + rng.below(3);
    (0..count)
        .map(|k| {
            let inputs = random_ranges(rng, in_c);
            WeightBlock {
                weight: format!("{prefix}.blocks.{k}.weight"),
                bias: (bias && rng.below(2) == 0).then(|| format!("{prefix}.blocks.{k}.bias")),
                rows: CHANNELS[rng.below(CHANNELS.len())],
                inputs,
            }
        })
        .collect()
}

fn rows(blocks: &[WeightBlock]) -> usize {
    blocks.iter().map(|b| b.rows).sum()
}

/// The dense weight (`[out, in_c, kh * kw]` flattened) equal to `blocks` with zeros elsewhere,
/// and the dense bias (zeros for blocks without one; `None` if no block has a bias).
fn densify(
    blocks: &[WeightBlock],
    w: &Weights,
    in_c: usize,
    khw: usize,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let out = rows(blocks);
    let mut dense = vec![0.0f32; out * in_c * khw];
    let mut bias = vec![0.0f32; out];
    let mut r0 = 0;
    for b in blocks {
        let wt = w[&b.weight].data();
        let cols = b.cols();
        for o in 0..b.rows {
            let mut col = 0;
            for r in &b.inputs {
                for c in r.clone() {
                    let src = &wt[(o * cols + col) * khw..][..khw];
                    dense[((r0 + o) * in_c + c) * khw..][..khw].copy_from_slice(src);
                    col += 1;
                }
            }
            if let Some(bn) = &b.bias {
                bias[r0 + o] = w[bn].data()[o];
            }
        }
        r0 += b.rows;
    }
    let any_bias = blocks.iter().any(|b| b.bias.is_some());
    (dense, any_bias.then_some(bias))
}

/// Scalar f64 twin of a block convolution from the definition (also a linear layer: a `1 x 1`
/// map with a `1 x 1` kernel).
fn reference(
    blocks: &[WeightBlock],
    w: &Weights,
    x: &[f32],
    n: usize,
    s_in: Shape,
    s_out: Shape,
    k: usize,
    stride: usize,
    pad: usize,
) -> Vec<f32> {
    let mut y = vec![0.0f64; n * s_out.len()];
    for i in 0..n {
        let mut r0 = 0;
        for b in blocks {
            let wt = w[&b.weight].data();
            let cols = b.cols();
            for o in 0..b.rows {
                for oy in 0..s_out.h {
                    for ox in 0..s_out.w {
                        let mut acc = b.bias.as_ref().map_or(0.0, |t| w[t].data()[o] as f64);
                        let mut col = 0;
                        for r in &b.inputs {
                            for c in r.clone() {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (oy * stride + ky) as isize - pad as isize;
                                        let ix = (ox * stride + kx) as isize - pad as isize;
                                        if iy < 0
                                            || ix < 0
                                            || iy as usize >= s_in.h
                                            || ix as usize >= s_in.w
                                        {
                                            continue;
                                        }
                                        let xv = x[((i * s_in.c + c) * s_in.h + iy as usize)
                                            * s_in.w
                                            + ix as usize];
                                        let wv = wt[((o * cols + col) * k + ky) * k + kx];
                                        acc += xv as f64 * wv as f64;
                                    }
                                }
                                col += 1;
                            }
                        }
                        y[((i * s_out.c + r0 + o) * s_out.h + oy) * s_out.w + ox] = acc;
                    }
                }
            }
            r0 += b.rows;
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}

fn params(conv_columns: usize) -> ForwardParams {
    let mut p = ForwardParams::default();
    p.conv_columns = conv_columns;
    p
}

/// A one-layer graph computing `op` on an input of shape `input`.
fn one_layer(input: Shape, op: Op) -> Result<Graph, GraphError> {
    let mut g = Graph::new(input);
    let id = g.push("layer", op, &[0])?;
    g.add_output("layer", id)?;
    Ok(g)
}

/// A block conv over a `in_c x h x w` input against the dense conv and the scalar twin.
fn check_conv(
    in_c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    bias: bool,
    n: usize,
    conv_columns: usize,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let blocks = random_blocks(&mut rng, in_c, "layer", bias);
    let out_c = rows(&blocks);
    let input = Shape::new(in_c, h, w);
    let g = one_layer(input, block_conv_op(in_c, k, stride, pad, blocks.clone())).unwrap();
    let wts = random_weights(&g, seed ^ 1);
    let x = random_input(&g, n, seed ^ 2);
    let got = Forward::with_params(&g, &wts, params(conv_columns))
        .unwrap()
        .logits(&x, n)
        .unwrap()
        .remove(0);
    let s_out = g.node(1).shape;
    let want = reference(&blocks, &wts, &x, n, input, s_out, k, stride, pad);
    let d = max_rel_diff(&want, &got);
    assert!(d <= KERNEL_VS_NAIVE_REL, "vs scalar twin: rel diff {d}");

    let (dense_w, dense_b) = densify(&blocks, &wts, in_c, k * k);
    let dense_op = Op::Conv2d {
        weight: "dense.weight".into(),
        bias: dense_b.as_ref().map(|_| "dense.bias".into()),
        in_channels: in_c,
        out_channels: out_c,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [pad, pad],
    };
    let dg = one_layer(input, dense_op).unwrap();
    let mut dw = Weights::new();
    dw.insert(
        "dense.weight".into(),
        Tensor::new(vec![out_c, in_c, k, k], dense_w).unwrap(),
    );
    if let Some(b) = dense_b {
        dw.insert("dense.bias".into(), Tensor::new(vec![out_c], b).unwrap());
    }
    let dense = Forward::with_params(&dg, &dw, params(conv_columns))
        .unwrap()
        .logits(&x, n)
        .unwrap()
        .remove(0);
    let d = max_rel_diff(&dense, &got);
    assert!(d <= BLOCK_VS_DENSE_REL, "vs dense conv: rel diff {d}");
}

/// A block linear layer over `in_f` features against the dense linear and the scalar twin.
fn check_linear(in_f: usize, bias: bool, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let blocks = random_blocks(&mut rng, in_f, "layer", bias);
    let out_f = rows(&blocks);
    let input = Shape::flat(in_f);
    let g = one_layer(input, block_linear_op(in_f, blocks.clone())).unwrap();
    let wts = random_weights(&g, seed ^ 1);
    let x = random_input(&g, n, seed ^ 2);
    let got = Forward::new(&g, &wts)
        .unwrap()
        .logits(&x, n)
        .unwrap()
        .remove(0);
    let want = reference(&blocks, &wts, &x, n, input, Shape::flat(out_f), 1, 1, 0);
    let d = max_rel_diff(&want, &got);
    assert!(d <= KERNEL_VS_NAIVE_REL, "vs scalar twin: rel diff {d}");

    let (dense_w, dense_b) = densify(&blocks, &wts, in_f, 1);
    let dense_op = Op::Linear {
        weight: "dense.weight".into(),
        bias: dense_b.as_ref().map(|_| "dense.bias".into()),
        in_features: in_f,
        out_features: out_f,
    };
    let dg = one_layer(input, dense_op).unwrap();
    let mut dw = Weights::new();
    dw.insert(
        "dense.weight".into(),
        Tensor::new(vec![out_f, in_f], dense_w).unwrap(),
    );
    if let Some(b) = dense_b {
        dw.insert("dense.bias".into(), Tensor::new(vec![out_f], b).unwrap());
    }
    let dense = Forward::new(&dg, &dw)
        .unwrap()
        .logits(&x, n)
        .unwrap()
        .remove(0);
    let d = max_rel_diff(&dense, &got);
    assert!(d <= BLOCK_VS_DENSE_REL, "vs dense linear: rel diff {d}");
}

#[test]
fn fixed_block_convs_match_dense_and_the_scalar_twin() {
    // (in_c, h, w, k, stride, pad, bias, batch, conv_columns): the batched-and-scattered path,
    // the per-sample direct path (>= 256 output positions), one sample per GEMM, 1 and 17
    // channels.
    for (i, &(c, h, w, k, s, p, bias, n, cols)) in [
        (1, 5, 5, 3, 1, 1, true, 2, 4096),
        (17, 7, 6, 3, 2, 1, true, 3, 4096),
        (17, 18, 17, 3, 1, 1, true, 2, 4096),
        (5, 16, 16, 1, 1, 0, false, 5, 4096),
        (8, 9, 9, 3, 1, 0, true, 4, 1),
        (3, 20, 20, 3, 2, 1, false, 1, 1),
    ]
    .iter()
    .enumerate()
    {
        for seed in 0..4 {
            check_conv(c, h, w, k, s, p, bias, n, cols, (i * 10 + seed) as u64);
        }
    }
}

#[test]
fn fixed_block_linears_match_dense_and_the_scalar_twin() {
    for (i, &in_f) in [1, 2, 17, 40].iter().enumerate() {
        for seed in 0..4 {
            check_linear(in_f, seed % 2 == 0, 1 + seed, (i * 10 + seed) as u64);
        }
    }
}

proptest! {
    #![proptest_config(pleas_tests::config(48))]

    #[test]
    fn random_block_convs_match_dense_and_the_scalar_twin(
        ci in 0usize..CHANNELS.len(), h in 3usize..20, w in 3usize..20, k3: bool, s2: bool,
        pad: bool, bias: bool, n in 1usize..=5, one_per_gemm: bool, seed: u64,
    ) {
        let k = if k3 { 3 } else { 1 };
        // Padding 1 needs a 3x3 kernel (a window of padding only is rejected).
        let p = usize::from(pad && k3);
        let cols = if one_per_gemm { 1 } else { 4096 };
        check_conv(CHANNELS[ci], h, w, k, if s2 { 2 } else { 1 }, p, bias, n, cols, seed);
    }

    #[test]
    fn random_block_linears_match_dense_and_the_scalar_twin(
        in_f in 1usize..48, bias: bool, n in 1usize..=5, seed: u64,
    ) {
        check_linear(in_f, bias, n, seed);
    }
}

fn block_error(in_c: usize, out_c: usize, blocks: Vec<WeightBlock>) -> GraphError {
    let mut g = Graph::new(Shape::new(in_c, 5, 5));
    let op = Op::BlockConv2d {
        in_channels: in_c,
        out_channels: out_c,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        blocks,
    };
    g.push("merged", op, &[0]).unwrap_err()
}

#[test]
fn shape_inference_rejects_bad_blocks_naming_the_node() {
    let cases: Vec<(usize, Vec<WeightBlock>, BlockFault)> = vec![
        (0, vec![], BlockFault::NoBlocks),
        (
            5,
            vec![weight_block("m", 0, 2, &[0..4], false)],
            BlockFault::RowSum {
                expected: 5,
                found: 2,
            },
        ),
        (
            3,
            vec![
                weight_block("m", 0, 3, &[0..4], false),
                weight_block("m", 1, 0, &[0..1], false),
            ],
            BlockFault::NoRows { block: 1 },
        ),
        (
            3,
            vec![weight_block("m", 0, 3, &[], false)],
            BlockFault::NoInputs { block: 0 },
        ),
        (
            3,
            vec![weight_block("m", 0, 3, &[2..5], false)],
            BlockFault::Range {
                block: 0,
                range: 2..5,
                channels: 4,
            },
        ),
        (
            4,
            vec![
                weight_block("m", 0, 1, &[0..4], false),
                weight_block("m", 1, 3, &[0..2, 1..3], false),
            ],
            BlockFault::Range {
                block: 1,
                range: 1..3,
                channels: 4,
            },
        ),
        (
            4,
            vec![weight_block("m", 0, 4, &[2..4, 0..1], false)],
            BlockFault::Range {
                block: 0,
                range: 0..1,
                channels: 4,
            },
        ),
        (
            4,
            vec![weight_block("m", 0, 4, &[1..1], false)],
            BlockFault::Range {
                block: 0,
                range: 1..1,
                channels: 4,
            },
        ),
    ];
    for (out_c, blocks, fault) in cases {
        let e = block_error(4, out_c, blocks);
        assert_eq!(
            e,
            GraphError::Block {
                node: "merged".into(),
                fault: fault.clone()
            }
        );
        assert!(e.to_string().contains("`merged`"), "{e}");
    }
    // The layer's own input channels must match its input, as for a dense conv.
    let mut g = Graph::new(Shape::new(4, 5, 5));
    let op = block_conv_op(3, 3, 1, 1, vec![weight_block("m", 0, 2, &[0..3], false)]);
    assert!(matches!(
        g.push("merged", op, &[0]),
        Err(GraphError::ChannelMismatch { ref node, expected: 3, found: 4 }) if node == "merged"
    ));
    // A block linear layer needs a flat input and valid blocks too.
    let mut g = Graph::new(Shape::flat(6));
    let op = block_linear_op(6, vec![weight_block("m", 0, 2, &[0..3, 3..7], false)]);
    assert!(matches!(
        g.push("head", op, &[0]),
        Err(GraphError::Block { ref node, fault: BlockFault::Range { block: 0, .. } }) if node == "head"
    ));
    let mut g = Graph::new(Shape::new(6, 2, 2));
    let op = block_linear_op(6, vec![weight_block("m", 0, 2, &[0..3], false)]);
    assert!(matches!(
        g.push("head", op, &[0]),
        Err(GraphError::NotFlat { .. })
    ));
}

#[test]
fn costs_count_only_the_stored_blocks() {
    // Conv: 6 inputs, blocks of 4 rows over 0..2 + 4..6 (4 cols, bias) and 3 rows over
    // 0..6 (6 cols); 3x3 kernel, 8x8 output positions.
    let blocks = vec![
        weight_block("c", 0, 4, &[0..2, 4..6], true),
        weight_block("c", 1, 3, &[0..6], false),
    ];
    let mut g = Graph::new(Shape::new(6, 8, 8));
    let c = g
        .push("c", block_conv_op(6, 3, 1, 1, blocks), &[0])
        .unwrap();
    let p = g.push("pool", Op::GlobalAvgPool, &[c]).unwrap();
    let head_blocks = vec![
        weight_block("head", 0, 2, &[0..4], true),
        weight_block("head", 1, 5, &[3..7], true),
    ];
    let h = g
        .push("head", block_linear_op(7, head_blocks), &[p])
        .unwrap();
    g.add_output("head", h).unwrap();
    let conv_macs = (4 * 4 + 3 * 6) * 9 * 64;
    let head_macs = 2 * 4 + 5 * 4;
    assert_eq!(node_macs(&g, c), conv_macs);
    assert_eq!(node_macs(&g, h), head_macs);
    let total = cost(&g);
    assert_eq!(total.macs, conv_macs + head_macs);
    // Weights and biases of the blocks only.
    assert_eq!(
        total.params,
        (4 * 4 + 3 * 6) * 9 + 4 + (2 * 4 + 5 * 4) + 2 + 5
    );
    assert_eq!(total.buffers, 0);
    // The dense layers of the same shapes cost more: the zeros are not counted.
    let mut d = Graph::new(Shape::new(6, 8, 8));
    let dc = d
        .push(
            "c",
            Op::Conv2d {
                weight: "c.weight".into(),
                bias: None,
                in_channels: 6,
                out_channels: 7,
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1, 1],
            },
            &[0],
        )
        .unwrap();
    assert_eq!(node_macs(&d, dc), 7 * 6 * 9 * 64);
    assert!(node_macs(&d, dc) > conv_macs);
}

#[derive(Default)]
struct Record(Vec<Vec<f32>>);

impl Observer for Record {
    fn observe(&mut self, _node: NodeId, a: Activations<'_>) {
        self.0.push(a.data.to_vec());
    }
}

#[test]
fn compute_node_reproduces_run_node_by_node() {
    let g = block_resnet();
    let w = random_weights(&g, 11);
    let n = 3;
    let x = random_input(&g, n, 12);
    let mut f = Forward::new(&g, &w).unwrap();
    let mut rec = Record::default();
    let outs = f.run(&x, n, &mut rec).unwrap();
    assert_eq!(rec.0.len(), g.nodes().len());

    // Every node in order from caller-held activations. The same kernels on the same data:
    // the values are identical, not merely close.
    let mut acts: Vec<Option<Vec<f32>>> = vec![None; g.nodes().len()];
    acts[0] = Some(x.clone());
    for id in 0..g.nodes().len() {
        let y = f.compute_node(id, &mut acts, n).unwrap();
        assert_eq!(y, rec.0[id], "node {} ({})", id, g.node(id).name);
        acts[id] = Some(y);
    }
    for (o, want) in g.outputs().iter().zip(&outs) {
        assert_eq!(acts[o.node].as_ref().unwrap(), want, "output {}", o.name);
    }
    // An input read only by the node is taken for in-place use; one read again later stays.
    let relu = g.find("b1.relu1").unwrap();
    let bn1 = g.find("b1.bn1").unwrap();
    let stem_relu = g.find("stem.relu").unwrap();
    assert!(acts[bn1].is_none(), "b1.bn1 was taken by its only reader");
    assert!(acts[stem_relu].is_some(), "stem.relu is read by b1.add too");
    assert!(acts[relu].is_some());

    // One node from just its inputs (a residual add in the middle of the graph).
    let add = g.find("b2.add").unwrap();
    let mut partial: Vec<Option<Vec<f32>>> = vec![None; g.nodes().len()];
    for &i in &g.node(add).inputs {
        partial[i] = Some(rec.0[i].clone());
    }
    let y = f.compute_node(add, &mut partial, n).unwrap();
    assert_eq!(y, rec.0[add]);
    f.recycle(y);

    // Bad calls are errors, not panics.
    let mut missing = partial.clone();
    let second = g.node(add).inputs[1];
    missing[second] = None;
    missing[g.node(add).inputs[0]] = Some(rec.0[g.node(add).inputs[0]].clone());
    assert_eq!(
        f.compute_node(add, &mut missing, n),
        Err(ForwardError::MissingInput {
            node: add,
            input: second
        })
    );
    let head = g.find("head").unwrap();
    let pool = g.find("pool").unwrap();
    let mut short: Vec<Option<Vec<f32>>> = vec![None; g.nodes().len()];
    short[pool] = Some(vec![0.0; 5]);
    assert_eq!(
        f.compute_node(head, &mut short, n),
        Err(ForwardError::ActivationLength {
            node: pool,
            expected: n * 12,
            found: 5
        })
    );
    assert_eq!(
        f.compute_node(head, &mut short[..2], n),
        Err(ForwardError::MissingInput {
            node: head,
            input: pool
        })
    );
    let past = g.nodes().len();
    assert_eq!(
        f.compute_node(past, &mut short, n),
        Err(ForwardError::UnknownNode { node: past })
    );
    let mut none: Vec<Option<Vec<f32>>> = Vec::new();
    assert_eq!(
        f.compute_node(0, &mut none, n),
        Err(ForwardError::MissingInput { node: 0, input: 0 })
    );
    // The pool (with the recycled buffers) serves later runs unchanged.
    let mut again = Record::default();
    assert_eq!(f.run(&x, n, &mut again).unwrap(), outs);
    assert_eq!(again.0, rec.0);
}

#[test]
fn permutation_groups_stop_at_block_layers() {
    // Dense conv a (its group survives: only dense layers read it), dense conv b read by a
    // block conv (poisoned), the block conv's output (poisoned), GAP, dense head.
    let mut g = Graph::new(Shape::new(3, 6, 6));
    let conv = |name: &str, ic: usize, oc: usize| Op::Conv2d {
        weight: format!("{name}.weight"),
        bias: None,
        in_channels: ic,
        out_channels: oc,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    let a = g.push("a", conv("a", 3, 6), &[0]).unwrap();
    let a = g.push("a.bn", bn_op("a.bn", 6), &[a]).unwrap();
    let a = g.push("a.relu", Op::Relu, &[a]).unwrap();
    let b = g.push("b", conv("b", 6, 5), &[a]).unwrap();
    let b = g.push("b.relu", Op::Relu, &[b]).unwrap();
    let cb = vec![
        weight_block("c", 0, 2, &[0..3], false),
        weight_block("c", 1, 4, &[2..5], true),
    ];
    let c = g.push("c", block_conv_op(5, 3, 1, 1, cb), &[b]).unwrap();
    let c = g.push("c.bn", bn_op("c.bn", 6), &[c]).unwrap();
    let c = g.push("c.relu", Op::Relu, &[c]).unwrap();
    let p = g.push("pool", Op::GlobalAvgPool, &[c]).unwrap();
    let h = g
        .push(
            "head",
            Op::Linear {
                weight: "head.weight".into(),
                bias: Some("head.bias".into()),
                in_features: 6,
                out_features: 4,
            },
            &[p],
        )
        .unwrap();
    g.add_output("head", h).unwrap();
    let groups = permutation_groups(&g);
    assert_eq!(groups.len(), 1, "{:?}", groups.groups());
    let only = &groups.groups()[0];
    assert_eq!(only.name, "a");
    assert_eq!(only.width, 6);
    for name in ["b", "b.relu", "c", "c.bn", "c.relu", "pool"] {
        assert_eq!(groups.of_node(g.find(name).unwrap()), None, "{name}");
    }
    for m in &only.members {
        assert!(
            !m.tensor.starts_with("c."),
            "block tensor {} in a group",
            m.tensor
        );
    }
    // The surviving group is a true symmetry of the network with block layers in it.
    let w = random_weights(&g, 5);
    let x = random_input(&g, 2, 6);
    let want = Forward::new(&g, &w).unwrap().logits(&x, 2).unwrap();
    let perm = Rng::new(9).permutation(6);
    let pw = apply_permutations(&groups, &w, &[perm]).unwrap();
    let got = Forward::new(&g, &pw).unwrap().logits(&x, 2).unwrap();
    let d = max_rel_diff(&want[0], &got[0]);
    assert!(d <= PERMUTATION_INVARIANCE_REL, "rel diff {d}");
    // The ResNet-like graph, with block layers everywhere, has no group at all (every stream
    // reaches a block layer) and does not panic.
    assert!(permutation_groups(&block_resnet()).is_empty());
}

#[test]
fn batchnorm_folds_into_each_block() {
    let g = block_resnet();
    let w = random_weights(&g, 21);
    let folded = fold_batchnorm(&g, &w).unwrap();
    // b1.bn1, b1.bn2 and b2.short.bn follow block convs read only by them; stem.bn a dense
    // conv: all four are folded.
    assert!(
        folded
            .graph
            .nodes()
            .iter()
            .all(|n| n.op.kind() != "batchnorm"),
        "{:?}",
        folded
            .graph
            .nodes()
            .iter()
            .map(|n| &n.name)
            .collect::<Vec<_>>()
    );
    // Blocks without a bias got `{stem}.bias`; blocks with one kept its name.
    let conv1 = folded.graph.find("b1.conv1").unwrap();
    let Op::BlockConv2d { blocks, .. } = &folded.graph.node(conv1).op else {
        panic!("b1.conv1 is still a block conv");
    };
    let biases: Vec<Option<&str>> = blocks.iter().map(|b| b.bias.as_deref()).collect();
    assert_eq!(
        biases,
        [
            Some("b1.conv1.blocks.0.bias"),
            Some("b1.conv1.blocks.1.bias")
        ]
    );
    assert!(folded.weights.contains_key("b1.conv2.blocks.1.bias"));
    assert!(!folded.weights.contains_key("b1.bn1.weight"));
    // Folding keeps the function.
    let x = random_input(&g, 4, 22);
    let want = Forward::new(&g, &w).unwrap().logits(&x, 4).unwrap();
    let got = Forward::new(&folded.graph, &folded.weights)
        .unwrap()
        .logits(&x, 4)
        .unwrap();
    for (a, b) in want.iter().zip(&got) {
        let d = max_rel_diff(a, b);
        assert!(d <= BN_FOLD_REL, "rel diff {d}");
    }
    // A batch-norm after a block linear layer folds too.
    let mut l = Graph::new(Shape::flat(7));
    let hb = vec![
        weight_block("fc", 0, 3, &[0..2, 5..7], false),
        weight_block("fc", 1, 4, &[1..7], true),
    ];
    let h = l.push("fc", block_linear_op(7, hb), &[0]).unwrap();
    let h = l.push("fc.bn", bn_op("fc.bn", 7), &[h]).unwrap();
    let r = l.push("relu", Op::Relu, &[h]).unwrap();
    l.add_output("relu", r).unwrap();
    let lw = random_weights(&l, 31);
    let lf = fold_batchnorm(&l, &lw).unwrap();
    assert_eq!(lf.graph.nodes().len(), 3);
    let x = random_input(&l, 5, 32);
    let want = Forward::new(&l, &lw).unwrap().logits(&x, 5).unwrap();
    let got = Forward::new(&lf.graph, &lf.weights)
        .unwrap()
        .logits(&x, 5)
        .unwrap();
    let d = max_rel_diff(&want[0], &got[0]);
    assert!(d <= BN_FOLD_REL, "rel diff {d}");
}

#[test]
fn kernels_called_directly_reject_bad_blocks_with_errors() {
    use pleas_core::forward::im2col::ConvGeometry;
    use pleas_core::forward::layers::{
        BlockRef, block_conv2d, block_conv2d_scratch_len, block_linear, block_linear_scratch_len,
    };
    let geom = ConvGeometry::new(3, 4, 4, [3, 3], [1, 1], [1, 1]).unwrap();
    let x = vec![1.0f32; 2 * geom.input_len()];
    let w = vec![0.5f32; 2 * 2 * 9];
    let bias = [1.0f32, -2.0];
    let ranges = [0..1, 2..3];
    let good = BlockRef {
        weight: &w,
        bias: Some(&bias),
        rows: 2,
        inputs: &ranges,
    };
    let mut out = vec![0.0f32; 2 * 2 * 16];
    let mut scratch = vec![0.0f32; block_conv2d_scratch_len(&geom, &[good], 2)];
    block_conv2d(&geom, &[good], &x, 2, 2, &mut out, &mut scratch).unwrap();
    // Centre pixel: 2 channels x 9 taps of 1 * 0.5, plus the bias.
    assert_eq!(out[5], 9.0 + 1.0);
    assert_eq!(out[16 + 5], 9.0 - 2.0);

    let beyond = [0..1, 2..4];
    let bad = BlockRef {
        inputs: &beyond,
        ..good
    };
    assert_eq!(
        block_conv2d(&geom, &[bad], &x, 2, 2, &mut out, &mut scratch),
        Err(ForwardError::BlockInputs {
            block: 0,
            range: 2..4,
            channels: 3
        })
    );
    let short = BlockRef {
        weight: &w[..10],
        ..good
    };
    assert!(matches!(
        block_conv2d(
            &geom,
            &[good, short],
            &x,
            2,
            2,
            &mut vec![0.0; 4 * 32],
            &mut scratch
        ),
        Err(ForwardError::Buffer {
            what: "block weight",
            ..
        })
    ));
    assert!(matches!(
        block_conv2d(&geom, &[good], &x, 2, 2, &mut out, &mut scratch[..5]),
        Err(ForwardError::Buffer { .. })
    ));
    assert!(matches!(
        block_conv2d(&geom, &[good], &x, 2, 2, &mut out[..40], &mut scratch),
        Err(ForwardError::Buffer {
            what: "conv output",
            ..
        })
    ));
    // Absurd rows over no input: an error, not an overflow.
    let huge = BlockRef {
        weight: &[],
        bias: None,
        rows: usize::MAX,
        inputs: &[],
    };
    assert!(block_conv2d(&geom, &[huge], &x, 2, 2, &mut out, &mut scratch).is_err());
    assert!(block_linear(&[huge, huge], 3, &x, 2, &mut out, &mut scratch).is_err());

    // A block reading nothing outputs its bias; an empty range is skipped.
    let nothing = BlockRef {
        weight: &[],
        bias: Some(&bias),
        rows: 2,
        inputs: &[],
    };
    let empty_then = [1..1, 0..3];
    let lw = [1.0f32, 2.0, 3.0];
    let dense = BlockRef {
        weight: &lw,
        bias: None,
        rows: 1,
        inputs: &empty_then,
    };
    let blocks = [nothing, dense];
    let lx = [1.0f32, 1.0, 1.0, 2.0, 0.0, -1.0];
    let mut y = vec![f32::NAN; 6];
    let mut s = vec![0.0; block_linear_scratch_len(2, &blocks)];
    block_linear(&blocks, 3, &lx, 2, &mut y, &mut s).unwrap();
    assert_eq!(y, [1.0, -2.0, 6.0, 1.0, -2.0, -1.0]);
}
