//! `pleas export` to ONNX, read back with the exporter's own prost messages: structure (input,
//! outputs, dynamic batch dimension, metadata, operator counts), initialisers against the
//! model's weights, and the multiply-adds counted from the graph: the split export's equal the
//! merged model's (so the FLOP ratio of `report.json`), the dense export's the dense layers'.
//! Bad input (unwritable output, unknown `--blocks` or `--format`, an opset out of range)
//! exits 2 and writes nothing. ONNX Runtime itself is the oracle of `scripts/onnx_check.py`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pleas::export::dense::dense_layer;
use pleas::export::onnx::proto::{ModelProto, TensorProto};
use pleas::export::onnx::{OnnxWriter, decode};
use pleas::export::{BlockMode, ExportSettings, ModelWriter};
use pleas::io::arch::resnet::{TorchvisionSpec, build_torchvision};
use pleas::model::Model;
use pleas_core::graph::{Op, cost};
use pleas_tests::cli::{args, pleas};
use pleas_tests::models::{block_resnet, fashion_eval, fixture_models, fixtures, random_weights};
use pleas_tests::onnx::{dense_macs, dims, floats};
use pleas_tests::scratch::TempDir;

/// The multiply-adds counted from the exported graph read back.
fn graph_macs(m: &ModelProto) -> u64 {
    pleas_tests::onnx::graph_macs(m).expect("every Conv and Gemm has its shapes")
}

fn export(model: &Model, blocks: BlockMode) -> ModelProto {
    let w = OnnxWriter::new(&ExportSettings::new(blocks, 17)).unwrap();
    decode(&w.encode(model).unwrap()).unwrap()
}

fn metadata(m: &ModelProto) -> BTreeMap<String, String> {
    m.metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect()
}

fn op_counts(m: &ModelProto) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for n in &m.graph.as_ref().unwrap().node {
        *c.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    c
}

/// Input `input` of `batch x C x H x W` (or `batch x D`), one output per head named after it
/// of `batch x classes`, and the metadata properties of the model.
fn check_interface(model: &Model, m: &ModelProto, blocks: &str) {
    let g = m.graph.as_ref().unwrap();
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name, "input");
    let s = model.graph.input_shape();
    let want: Vec<String> = if s.is_flat() {
        vec!["batch".into(), s.c.to_string()]
    } else {
        vec![
            "batch".into(),
            s.c.to_string(),
            s.h.to_string(),
            s.w.to_string(),
        ]
    };
    assert_eq!(dims(&g.input[0]), want);
    let names: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let heads: Vec<&str> = model.heads.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, heads);
    for (o, h) in g.output.iter().zip(&model.heads) {
        assert_eq!(
            dims(o),
            vec!["batch".to_string(), h.classes.len().to_string()]
        );
    }
    let meta = metadata(m);
    assert_eq!(meta["pleas.version"], pleas::VERSION);
    assert_eq!(meta["pleas.blocks"], blocks);
    assert_eq!(
        meta["normalize"],
        model
            .metadata
            .get("normalize")
            .cloned()
            .unwrap_or("none".into())
    );
    for h in &model.heads {
        let key = if model.heads.len() == 1 {
            "classes".to_string()
        } else {
            format!("classes.{}", h.name)
        };
        let classes: Vec<i64> = serde_json::from_str(&meta[&key]).unwrap();
        assert_eq!(classes, h.classes, "{key}");
    }
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!(m.opset_import[0].version, 17);
    assert_eq!(m.ir_version, 8);
}

#[test]
fn original_models_export_their_weights_and_layers_as_they_are() {
    for path in fixture_models() {
        let model = Model::load(&path, None).unwrap();
        for blocks in [BlockMode::Split, BlockMode::Dense] {
            let m = export(&model, blocks);
            check_interface(&model, &m, blocks.name());
            let g = m.graph.as_ref().unwrap();
            // No block layers: every tensor is an initialiser under its own name, as it is.
            let inits: HashMap<&str, &TensorProto> =
                g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
            for (name, t) in &model.weights {
                let init = inits[name.as_str()];
                let d: Vec<usize> = init.dims.iter().map(|&d| d as usize).collect();
                assert_eq!(d, t.shape(), "{name}");
                assert_eq!(floats(init), t.data(), "{name}");
            }
            assert_eq!(g.initializer.len(), model.weights.len());
            let kinds = |k: &str| {
                model
                    .graph
                    .nodes()
                    .iter()
                    .filter(|n| n.op.kind() == k)
                    .count()
            };
            let ops = op_counts(&m);
            let n = |op: &str| ops.get(op).copied().unwrap_or(0);
            assert_eq!(n("Conv"), kinds("conv2d"));
            assert_eq!(n("Gemm"), kinds("linear"));
            assert_eq!(n("BatchNormalization"), kinds("batchnorm"));
            assert_eq!(n("Relu"), kinds("relu"));
            assert_eq!(n("Add"), kinds("add"));
            assert_eq!(n("GlobalAveragePool"), kinds("global_avgpool"));
            assert_eq!(n("Identity"), model.heads.len());
            assert_eq!(n("Slice") + n("Concat"), 0);
            assert_eq!(graph_macs(&m), cost(&model.graph).macs);
        }
    }
}

#[test]
fn torchvision_resnets_export_with_max_pool_and_bottlenecks() {
    for (depth, convs, adds) in [(18, 20, 8), (50, 53, 16)] {
        let spec = TorchvisionSpec::standard(depth, 10).unwrap();
        let graph = build_torchvision(&spec, pleas_core::graph::Shape::new(3, 64, 64)).unwrap();
        let weights = random_weights(&graph, 7);
        let path = PathBuf::from(format!("resnet{depth}.safetensors"));
        let model = Model::from_parts(
            &path,
            "torchvision".into(),
            graph,
            weights,
            Default::default(),
        )
        .unwrap();
        let m = export(&model, BlockMode::Split);
        check_interface(&model, &m, "split");
        let ops = op_counts(&m);
        assert_eq!(ops["MaxPool"], 1);
        assert_eq!((ops["Conv"], ops["Add"]), (convs, adds), "resnet{depth}");
        assert_eq!(graph_macs(&m), cost(&model.graph).macs);
    }
}

#[test]
fn arbitrary_block_graph_exports_at_its_exact_cost() {
    // Blocks reading several ranges, a second output on pooled features, a block-conv
    // shortcut: the reorder handles what it can, the rest is gathered, and the multiply-adds
    // are the model's in split mode and the dense layers' in dense mode.
    let graph = block_resnet();
    let weights = random_weights(&graph, 3);
    let model = Model::from_parts(
        Path::new("block.safetensors"),
        "toml".into(),
        graph,
        weights,
        Default::default(),
    )
    .unwrap();
    let split = export(&model, BlockMode::Split);
    check_interface(&model, &split, "split");
    assert_eq!(graph_macs(&split), cost(&model.graph).macs);
    let dense = export(&model, BlockMode::Dense);
    check_interface(&model, &dense, "dense");
    assert_eq!(graph_macs(&dense), dense_macs(&model.graph));
    assert!(graph_macs(&dense) > graph_macs(&split));
}

fn merge(dir: &Path, pair: &str, names: [&str; 2], extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{pair}-merged"));
    let f = fixtures().join("fashion").join(pair);
    let a = f.join(format!("{}.safetensors", names[0]));
    let b = f.join(format!("{}.safetensors", names[1]));
    let mut v = args(&[
        &"merge",
        &a,
        &b,
        &"--data",
        &fashion_eval(),
        &"-o",
        &out,
        &"--quiet",
        &"--onnx",
    ]);
    v.extend(extra.iter().map(OsString::from));
    let (code, _, err) = pleas(&v);
    assert_eq!(code, 0, "{err}");
    out
}

/// Every Conv / Gemm of a split export reads the layer input or one Slice of it: never a
/// Concat (a gathered, non-contiguous range).
fn assert_contiguous_reads(m: &ModelProto) {
    let g = m.graph.as_ref().unwrap();
    let producer: HashMap<&str, &str> = g
        .node
        .iter()
        .flat_map(|n| {
            n.output
                .iter()
                .map(move |o| (o.as_str(), n.op_type.as_str()))
        })
        .collect();
    for n in &g.node {
        if n.op_type == "Conv" || n.op_type == "Gemm" {
            let from = producer
                .get(n.input[0].as_str())
                .copied()
                .unwrap_or("input");
            assert_ne!(from, "Concat", "{} reads a gathered input", n.name);
        }
    }
}

/// A merged model written beside merged.safetensors by `merge --onnx`, and both exports of it:
/// the split export's multiply-adds are exactly the report's FLOP ratio of the original's,
/// every block reads one contiguous range, its initialisers are the blocks' weights (as they
/// are, or with the columns reordered); the dense one costs the dense layers and holds the
/// dense expansion.
fn check_merged(dir: &Path, pair: &str, names: [&str; 2], extra: &[&str]) -> (f64, f64) {
    let out = merge(dir, pair, names, extra);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let model = Model::load(&out.join("merged.safetensors"), None).unwrap();
    let original = Model::load(
        &fixtures()
            .join("fashion")
            .join(pair)
            .join(format!("{}.safetensors", names[0])),
        None,
    )
    .unwrap();
    let original_macs = graph_macs(&export(&original, BlockMode::Split));
    let written = decode(&std::fs::read(out.join("merged.onnx")).unwrap()).unwrap();
    let split = export(&model, BlockMode::Split);
    assert!(written == split, "merge --onnx writes the split export");
    check_interface(&model, &split, "split");
    assert_contiguous_reads(&split);
    let macs = graph_macs(&split);
    assert_eq!(macs, cost(&model.graph).macs);
    let ratio = macs as f64 / original_macs as f64;
    assert_eq!(ratio, report["flop_ratio"].as_f64().unwrap(), "{pair}");
    let g = split.graph.as_ref().unwrap();
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for (name, t) in &model.weights {
        let init = inits
            .get(name.as_str())
            .or_else(|| inits.get(format!("{name}.perm").as_str()))
            .unwrap_or_else(|| panic!("no initialiser for {name}"));
        let mut got = floats(init);
        let mut want = t.data().to_vec();
        if init.name != *name {
            got.sort_by(f32::total_cmp);
            want.sort_by(f32::total_cmp);
        }
        assert_eq!(got, want, "{name}");
    }
    let dense = export(&model, BlockMode::Dense);
    check_interface(&model, &dense, "dense");
    let dm = graph_macs(&dense);
    assert_eq!(dm, dense_macs(&model.graph));
    let dg = dense.graph.as_ref().unwrap();
    let dinits: HashMap<&str, &TensorProto> = dg
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    for node in model.graph.nodes() {
        if let Op::BlockConv2d { .. } | Op::BlockLinear { .. } = node.op {
            let d = dense_layer(node, &model.weights).unwrap().unwrap();
            assert_eq!(
                floats(dinits[format!("{}.weight", node.name).as_str()]),
                d.weight.data()
            );
        }
    }
    let ops = op_counts(&dense);
    assert_eq!(ops.get("Slice"), None);
    assert_eq!(ops.get("Concat"), None);
    (ratio, dm as f64 / original_macs as f64)
}

#[test]
fn merged_mlp_exports_at_the_report_ratio() {
    let dir = TempDir::new("onnx", "mlp");
    let (split, dense) = check_merged(
        dir.path(),
        "mlp64_split",
        ["fashion_mlp_split_m0_s6", "fashion_mlp_split_m1_s7"],
        &["--budget", "1.2"],
    );
    assert!(dense > split && split > 1.0, "{split} {dense}");
}

#[test]
fn merged_resnet_exports_at_the_report_ratio_with_bn_kept_or_folded() {
    let dir = TempDir::new("onnx", "rn20");
    for bn in ["fold", "keep"] {
        let (split, dense) = check_merged(
            dir.path(),
            "rn20w1_biased",
            [
                "fashion_resnet20_w1_biased_m0_s4",
                "fashion_resnet20_w1_biased_m1_s5",
            ],
            &["--budget", "1.2", "--fit", "none", "--bn", bn],
        );
        assert!(dense > split && split > 1.0, "{split} {dense}");
    }
}

#[test]
fn opsets_13_and_21_set_their_ir_versions() {
    let model = Model::load(&fixture_models()[0], None).unwrap();
    for (opset, ir) in [(13, 7), (21, 10)] {
        let w = OnnxWriter::new(&ExportSettings::new(BlockMode::Split, opset)).unwrap();
        let m = decode(&w.encode(&model).unwrap()).unwrap();
        assert_eq!((m.opset_import[0].version, m.ir_version), (opset, ir));
    }
}

fn assert_fails_cleanly(a: &[OsString], dir: &Path, needles: &[&str]) {
    let (code, out, err) = pleas(a);
    assert_eq!(code, 2, "stdout {out} stderr {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in {err}");
    }
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_export_requests_exit_2_and_write_nothing() {
    let dir = TempDir::new("onnx", "bad");
    let model = fixture_models()[0].clone();
    let out = dir.path().join("m.onnx");
    let export = |extra: &[&str]| {
        let mut v = args(&[&"export", &model, &"-o", &out]);
        v.extend(extra.iter().map(OsString::from));
        v
    };
    assert_fails_cleanly(
        &export(&["--blocks", "sparse"]),
        dir.path(),
        &["--blocks `sparse`"],
    );
    assert_fails_cleanly(
        &export(&["--opset", "12"]),
        dir.path(),
        &["opset 12", "13 to 21"],
    );
    assert_fails_cleanly(&export(&["--opset", "22"]), dir.path(), &["opset 22"]);
    assert_fails_cleanly(
        &export(&["--format", "tflite"]),
        dir.path(),
        &["--format `tflite`"],
    );
    let missing = dir.path().join("no-such-dir").join("m.onnx");
    assert_fails_cleanly(
        &args(&[&"export", &model, &"-o", &missing]),
        dir.path(),
        &["cannot write", "no-such-dir"],
    );
    assert_fails_cleanly(
        &args(&[
            &"export",
            &dir.path().join("absent.safetensors"),
            &"-o",
            &out,
        ]),
        dir.path(),
        &["absent.safetensors"],
    );
    // A failed merge with --onnx leaves no OUT_DIR.
    let merged = dir.path().join("merged");
    let (code, _, _) = pleas(&args(&[
        &"merge",
        &model,
        &model,
        &"--data",
        &fashion_eval(),
        &"--budget",
        &"3",
        &"-o",
        &merged,
        &"--onnx",
    ]));
    assert_eq!(code, 2);
    assert!(!merged.exists());
    // And a good one writes the file.
    let (code, _, err) = pleas(&export(&["--quiet"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.exists());
}
