//! The forward pass against naive f64 twins written here from the definitions: convolution
//! (direct loops, any kernel / stride / padding, with and without bias), max and average
//! pooling with padding, global average pooling, flatten + linear, batch-norm, add and ReLU.

use pleas_core::forward::Forward;
use pleas_core::graph::{Graph, Op, Shape, Weights};
use pleas_tests::models::{max_rel_diff, random_input, random_weights};
use pleas_tests::tolerance::NET_VS_NAIVE_REL;
use proptest::prelude::*;

/// NCHW activations of one node for the whole batch, in f64.
type Act = Vec<f64>;

fn naive(graph: &Graph, w: &Weights, x: &[f32], n: usize) -> Vec<Vec<f64>> {
    let mut acts: Vec<Act> = Vec::new();
    for node in graph.nodes() {
        let out = node.shape;
        let inp = |k: usize| &acts[node.inputs[k]];
        let ins = |k: usize| graph.node(node.inputs[k]).shape;
        let t = |name: &str| -> Vec<f64> { w[name].data().iter().map(|&v| v as f64).collect() };
        let a: Act = match &node.op {
            Op::Input => x.iter().map(|&v| v as f64).collect(),
            Op::Conv2d {
                weight,
                bias,
                in_channels,
                kernel,
                stride,
                padding,
                ..
            } => {
                let (wt, s) = (t(weight), ins(0));
                let b = bias.as_ref().map(|b| t(b));
                let x = inp(0);
                let mut y = vec![0.0; n * out.len()];
                for i in 0..n {
                    for o in 0..out.c {
                        for oy in 0..out.h {
                            for ox in 0..out.w {
                                let mut acc = b.as_ref().map_or(0.0, |b| b[o]);
                                for c in 0..*in_channels {
                                    for ky in 0..kernel[0] {
                                        for kx in 0..kernel[1] {
                                            let iy = (oy * stride[0] + ky) as isize
                                                - padding[0] as isize;
                                            let ix = (ox * stride[1] + kx) as isize
                                                - padding[1] as isize;
                                            if iy < 0
                                                || ix < 0
                                                || iy as usize >= s.h
                                                || ix as usize >= s.w
                                            {
                                                continue;
                                            }
                                            let xv = x[((i * s.c + c) * s.h + iy as usize) * s.w
                                                + ix as usize];
                                            let wv = wt[((o * in_channels + c) * kernel[0] + ky)
                                                * kernel[1]
                                                + kx];
                                            acc += xv * wv;
                                        }
                                    }
                                }
                                y[((i * out.c + o) * out.h + oy) * out.w + ox] = acc;
                            }
                        }
                    }
                }
                y
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
                let (s, x) = (ins(0), inp(0));
                let is_max = matches!(node.op, Op::MaxPool { .. });
                let mut y = vec![0.0; n * out.len()];
                for p in 0..n * s.c {
                    for oy in 0..out.h {
                        for ox in 0..out.w {
                            let mut acc = if is_max { f64::NEG_INFINITY } else { 0.0 };
                            for ky in 0..kernel[0] {
                                for kx in 0..kernel[1] {
                                    let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                                    let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy as usize >= s.h || ix as usize >= s.w
                                    {
                                        continue;
                                    }
                                    let v = x[(p * s.h + iy as usize) * s.w + ix as usize];
                                    acc = if is_max { acc.max(v) } else { acc + v };
                                }
                            }
                            let area = (kernel[0] * kernel[1]) as f64;
                            y[(p * out.h + oy) * out.w + ox] =
                                if is_max { acc } else { acc / area };
                        }
                    }
                }
                y
            }
            Op::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
                ..
            } => {
                let (g, b, m, v) = (t(weight), t(bias), t(running_mean), t(running_var));
                let s = ins(0);
                let plane = s.h * s.w;
                inp(0)
                    .iter()
                    .enumerate()
                    .map(|(idx, &x)| {
                        let c = (idx / plane) % s.c;
                        (x - m[c]) / (v[c] + *eps as f64).sqrt() * g[c] + b[c]
                    })
                    .collect()
            }
            Op::Relu => inp(0).iter().map(|v| v.max(0.0)).collect(),
            Op::Add => {
                let mut y = inp(0).clone();
                for k in 1..node.inputs.len() {
                    for (a, b) in y.iter_mut().zip(inp(k)) {
                        *a += b;
                    }
                }
                y
            }
            Op::GlobalAvgPool => {
                let s = ins(0);
                let plane = s.h * s.w;
                inp(0)
                    .chunks(plane)
                    .map(|c| c.iter().sum::<f64>() / plane as f64)
                    .collect()
            }
            Op::Flatten => inp(0).clone(),
            Op::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => {
                let (wt, x) = (t(weight), inp(0));
                let b = bias.as_ref().map(|b| t(b));
                let mut y = vec![0.0; n * out_features];
                for i in 0..n {
                    for o in 0..*out_features {
                        let mut acc = b.as_ref().map_or(0.0, |b| b[o]);
                        for k in 0..*in_features {
                            acc += x[i * in_features + k] * wt[o * in_features + k];
                        }
                        y[i * out_features + o] = acc;
                    }
                }
                y
            }
            other => panic!("no naive twin for {other:?}"),
        };
        acts.push(a);
    }
    graph
        .outputs()
        .iter()
        .map(|o| acts[o.node].clone())
        .collect()
}

/// A small network using every op: conv (k, s, p) + BN + ReLU, a residual branch, max and avg
/// pools with padding, a strided 1x1 conv, flatten + linear head and a GAP head.
fn net(c: usize, h: usize, w: usize, k: usize, s: usize, p: usize, width: usize) -> Option<Graph> {
    let mut g = Graph::new(Shape::new(c, h, w));
    let conv = |name: &str, ic, oc, k, s, p, bias: bool| Op::Conv2d {
        weight: format!("{name}.weight"),
        bias: bias.then(|| format!("{name}.bias")),
        in_channels: ic,
        out_channels: oc,
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
    };
    let bn = |name: &str, ch| Op::BatchNorm {
        weight: format!("{name}.weight"),
        bias: format!("{name}.bias"),
        running_mean: format!("{name}.running_mean"),
        running_var: format!("{name}.running_var"),
        channels: ch,
        eps: 1e-5,
    };
    let a = g
        .push("c1", conv("c1", c, width, k, s, p, true), &[0])
        .ok()?;
    let a = g.push("bn1", bn("bn1", width), &[a]).ok()?;
    let a = g.push("r1", Op::Relu, &[a]).ok()?;
    let b = g
        .push("c2", conv("c2", width, width, 3, 1, 1, false), &[a])
        .ok()?;
    let b = g.push("add", Op::Add, &[a, b]).ok()?;
    let mp = g
        .push(
            "mp",
            Op::MaxPool {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
            },
            &[b],
        )
        .ok()?;
    let ap = g
        .push(
            "ap",
            Op::AvgPool {
                kernel: [2, 2],
                stride: [1, 1],
                padding: [1, 1],
            },
            &[mp],
        )
        .ok()?;
    let d = g
        .push("c3", conv("c3", width, 3, 1, 2, 0, true), &[ap])
        .ok()?;
    let f = g.push("flat", Op::Flatten, &[d]).ok()?;
    let features = g.node(f).shape.c;
    let h1 = g
        .push(
            "fc",
            Op::Linear {
                weight: "fc.weight".into(),
                bias: Some("fc.bias".into()),
                in_features: features,
                out_features: 5,
            },
            &[f],
        )
        .ok()?;
    g.add_output("fc", h1).ok()?;
    let gp = g.push("gap", Op::GlobalAvgPool, &[ap]).ok()?;
    g.add_output("gap", gp).ok()?;
    Some(g)
}

fn check(g: &Graph, n: usize, seed: u64) {
    let w = random_weights(g, seed);
    let x = random_input(g, n, seed + 1);
    let got = Forward::new(g, &w).unwrap().logits(&x, n).unwrap();
    let want = naive(g, &w, &x, n);
    for (o, (a, b)) in want.iter().zip(&got).enumerate() {
        let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        let d = max_rel_diff(&a32, b);
        assert!(d <= NET_VS_NAIVE_REL, "output {o}: rel diff {d}");
    }
}

#[test]
fn fixed_geometries_match_the_naive_twin() {
    for (c, h, w, k, s, p, width) in [
        (1, 9, 9, 3, 1, 1, 4),
        (3, 11, 7, 3, 2, 1, 6),
        (2, 12, 12, 7, 2, 3, 5),
        (4, 6, 10, 1, 1, 0, 8),
        (2, 5, 5, 5, 1, 2, 3),
    ] {
        let g = net(c, h, w, k, s, p, width).unwrap();
        check(&g, 3, (c * 100 + k) as u64);
    }
}

proptest! {
    #![proptest_config(pleas_tests::config(24))]
    #[test]
    fn random_geometries_match_the_naive_twin(
        c in 1usize..4, h in 3usize..14, w in 3usize..14, k in 1usize..6,
        s in 1usize..4, p in 0usize..3, width in 1usize..9, n in 1usize..4, seed in 0u64..1000,
    ) {
        // Geometries that do not fit (kernel beyond the padded input) are rejected by shape
        // inference; the rest must match.
        if let Some(g) = net(c, h, w, k, s, p.min(k.saturating_sub(1)), width) {
            check(&g, n, seed);
        }
    }
}

proptest! {
    #![proptest_config(pleas_tests::config(64))]

    /// The row-major patch matrix is exactly the transpose of the scalar im2col twin, and
    /// leaves the columns past the patch untouched.
    #[test]
    fn im2row_is_the_transposed_im2col(
        c in 1usize..5, h in 1usize..9, w in 1usize..9, kh in 1usize..4, kw in 1usize..4,
        sh in 1usize..3, sw in 1usize..3, ph in 0usize..2, pw in 0usize..2, n in 1usize..4,
        extra in 0usize..3, seed in 0u64..1000,
    ) {
        use pleas_core::forward::im2col::{ConvGeometry, im2col_len, im2col_reference, im2row, im2row_len};
        let Some(geom) = ConvGeometry::new(c, h, w, [kh, kw], [sh, sw], [ph, pw]) else {
            return Ok(());
        };
        let x: Vec<f32> = (0..n * geom.input_len())
            .map(|i| ((i as u64 * 2654435761 + seed) % 1000) as f32 / 10.0 - 50.0)
            .collect();
        let k = geom.patch_len();
        let cols_n = n * geom.positions();
        let mut cols = vec![0.0f32; im2col_len(&geom, n)];
        im2col_reference(&geom, &x, n, &mut cols);
        let row_len = k + extra;
        let mut rows = vec![7.0f32; im2row_len(&geom, n, row_len)];
        im2row(&geom, &x, n, row_len, &mut rows);
        for r in 0..cols_n {
            for j in 0..k {
                prop_assert_eq!(rows[r * row_len + j], cols[j * cols_n + r]);
            }
            for j in k..row_len {
                prop_assert_eq!(rows[r * row_len + j], 7.0);
            }
        }
    }
}
