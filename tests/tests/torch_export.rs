//! `pleas export --format torch`: the written file is a `torch.save` state_dict that the
//! checkpoint reader reads back; its dense layers, run as plain convs / linears, give the
//! merged (block-structured) model's logits; batch-norm layers carry `num_batches_tracked`;
//! refusals write nothing. (PyTorch itself loading the file with strict=True and reproducing
//! `pleas eval`'s accuracies is scripts/torch_check.py, run by hand: see the README.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pleas::io::safetensors::{self, Dtype, raw_to_bytes};
use pleas::io::torch::checkpoint;
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::graph::{Graph, Op, Tensor, Weights};
use pleas_tests::cli::{args, pleas};
use pleas_tests::models::{fashion_eval, fixtures, max_rel_diff, random_input};
use pleas_tests::scratch::TempDir;
use pleas_tests::tolerance::PERMUTATION_INVARIANCE_REL;

fn pair(folder: &str, stem: &str, seeds: (usize, usize)) -> (PathBuf, PathBuf) {
    let f = |i: usize, s: usize| {
        fixtures().join(format!("fashion/{folder}/{stem}_m{i}_s{s}.safetensors"))
    };
    (f(0, seeds.0), f(1, seeds.1))
}

/// Merges a fixture pair at budget 1.2 (`extra` flags) into `dir/name`; returns merged.safetensors.
fn merged(dir: &TempDir, name: &str, (a, b): (PathBuf, PathBuf), extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let data = match_subset(dir, 200);
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"merge",
        &a,
        &b,
        &"--data",
        &data,
        &"--budget",
        &"1.2",
        &"-o",
        &out,
        &"--quiet",
    ];
    args.extend(extra.iter().map(|e| e as &dyn AsRef<std::ffi::OsStr>));
    let (code, _, err) = pleas(&args);
    assert_eq!(code, 0, "{err}");
    out.join("merged.safetensors")
}

/// The first `n` merge samples of the fashion eval file (`x_match`), as a new file.
fn match_subset(dir: &TempDir, n: usize) -> PathBuf {
    let file = safetensors::read(&fashion_eval()).unwrap();
    let mut x = file.tensors["x_match"].clone();
    x.bytes.truncate(n * x.bytes.len() / x.shape[0]);
    x.shape[0] = n;
    let cut = BTreeMap::from([("x_match".to_string(), x)]);
    let path = dir.join("match.safetensors");
    std::fs::write(&path, raw_to_bytes(&cut, &Default::default())).unwrap();
    path
}

/// The merged graph with every weight layer a plain conv / linear named `{node}.weight` /
/// `.bias` and batch-norms `{node}.*`: the layout the export writes.
fn dense_graph(g: &Graph, tensors: &Weights) -> Graph {
    let mut d = Graph::new(g.input_shape());
    for n in &g.nodes()[1..] {
        let w = format!("{}.weight", n.name);
        let b = format!("{}.bias", n.name);
        let bias = tensors.contains_key(&b).then(|| b.clone());
        let op = match &n.op {
            Op::BlockConv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                ..
            }
            | Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                ..
            } => Op::Conv2d {
                weight: w,
                bias,
                in_channels: *in_channels,
                out_channels: *out_channels,
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
            },
            Op::BlockLinear {
                in_features,
                out_features,
                ..
            }
            | Op::Linear {
                in_features,
                out_features,
                ..
            } => Op::Linear {
                weight: w,
                bias,
                in_features: *in_features,
                out_features: *out_features,
            },
            Op::BatchNorm { channels, eps, .. } => Op::BatchNorm {
                weight: w,
                bias: b,
                running_mean: format!("{}.running_mean", n.name),
                running_var: format!("{}.running_var", n.name),
                channels: *channels,
                eps: *eps,
            },
            other => other.clone(),
        };
        d.push(n.name.clone(), op, &n.inputs).unwrap();
    }
    for o in g.outputs() {
        d.add_output(o.name.clone(), o.node).unwrap();
    }
    d
}

/// Exports `model_path`, reads the .pt back, and compares the dense graph's logits with the
/// model's on random inputs.
fn export_runs_as_the_model(dir: &TempDir, model_path: &Path, name: &str) -> Weights {
    let pt = dir.join(format!("{name}.pt"));
    let (code, out, err) = pleas(&args(&[&"export", &model_path, &"-o", &pt]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(torch, blocks dense)"), "{out}");
    let py = std::fs::read_to_string(dir.join(format!("{name}.py"))).unwrap();
    assert!(py.contains("class Model(nn.Module)") && py.contains(&format!("{name}.pt")));
    let ck = checkpoint::parse(&std::fs::read(&pt).unwrap()).unwrap();
    let mut tensors = Weights::new();
    for (k, raw) in ck.tensors {
        if k.ends_with(".num_batches_tracked") {
            assert_eq!((raw.dtype, raw.shape.len()), (Dtype::I64, 0), "{k}");
            continue;
        }
        let t = Tensor::new(raw.shape.clone(), raw.float_to_f32().unwrap()).unwrap();
        tensors.insert(k, t);
    }
    let model = Model::load(model_path, None).unwrap();
    let dense = dense_graph(&model.graph, &tensors);
    assert!(
        dense.unused_tensors(&tensors).is_empty(),
        "{name}: extra tensors"
    );
    let x = random_input(&model.graph, 8, 7);
    let want = Forward::new(&model.graph, &model.weights)
        .unwrap()
        .logits(&x, 8)
        .unwrap();
    let got = Forward::new(&dense, &tensors)
        .unwrap()
        .logits(&x, 8)
        .unwrap();
    // Block against dense layers: per layer the same products summed in another order
    // (BLOCK_VS_DENSE_REL), compounded over the network as for a permuted one.
    for (w, g) in want.iter().zip(&got) {
        let d = max_rel_diff(w, g);
        assert!(
            d <= PERMUTATION_INVARIANCE_REL,
            "{name}: dense logits differ by {d}"
        );
    }
    tensors
}

#[test]
fn merged_models_export_as_dense_state_dicts() {
    let dir = TempDir::new("texport", "merged");
    let mlp = merged(
        &dir,
        "mlp",
        pair("mlp64_split", "fashion_mlp_split", (6, 7)),
        &[],
    );
    let t = export_runs_as_the_model(&dir, &mlp, "mlp");
    assert!(t.contains_key("head.a.weight") && t.contains_key("layers.1.bias"));
    let rn = merged(
        &dir,
        "rn20",
        pair("rn20w1_biased", "fashion_resnet20_w1_biased", (4, 5)),
        &["--bn", "keep"],
    );
    let t = export_runs_as_the_model(&dir, &rn, "rn20");
    assert!(t.contains_key("layers.3.shortcut.1.running_var"));
}

#[test]
fn originals_export_under_their_own_names() {
    let dir = TempDir::new("texport", "originals");
    let (a, _) = pair("rn20w1_split", "fashion_resnet20_w1_split", (2, 3));
    let t = export_runs_as_the_model(&dir, &a, "rn20");
    let (orig, _) = pleas::io::model_file::load_weights(&a).unwrap();
    // Same names, same values: the original state_dict (plus num_batches_tracked).
    assert_eq!(t, orig);
}

#[test]
fn refused_exports_write_nothing() {
    let dir = TempDir::new("texport", "refused");
    let (a, _) = pair("mlp64_split", "fashion_mlp_split", (6, 7));
    let cases: [(PathBuf, &[&str], &str); 2] = [
        (
            dir.join("m.pt"),
            &["--format", "tflite"],
            "--format `tflite`",
        ),
        (dir.join("m.py"), &["--format", "torch"], ".py"),
    ];
    for (out, extra, needle) in cases {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"export", &a, &"-o", &out];
        args.extend(extra.iter().map(|e| e as &dyn AsRef<std::ffi::OsStr>));
        let (code, _, err) = pleas(&args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(needle), "`{needle}` not in {err}");
    }
    let missing = dir.join("no/such/dir/m.pt");
    let (code, _, err) = pleas(&args(&[&"export", &a, &"-o", &missing]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot write"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "something was written"
    );
}
