//! Model files in other dtypes, the TOML architecture file, save/load round trips and
//! `pleas inspect`.

use std::ffi::OsString;
use std::path::PathBuf;

use pleas::cli::run;
use pleas::io::data::{DataSpec, Normalize, load};
use pleas::io::safetensors::{Dtype, load_weights, raw_to_bytes, read, save_weights};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_tests::models::{fashion_eval, fixture_models, max_rel_diff};

fn fixture(part: &str) -> PathBuf {
    fixture_models()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(part))
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pleas-io-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn logits(m: &Model, n: usize) -> Vec<f32> {
    let data = load(&DataSpec {
        path: fashion_eval(),
        data_key: "x_test".into(),
        label_key: None,
        labels_path: None,
        normalize: Normalize::Symmetric,
    })
    .unwrap();
    let x = &data.x[..n * 784];
    let g = m.graph.clone();
    let mut f = Forward::new(&g, &m.weights).unwrap();
    f.logits(x, n).unwrap().remove(0)
}

/// Rounds f32 to the nearest half / bfloat16 bit pattern (ties to even).
fn to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = b & 0x7f_ffff;
    assert!(exp < 31, "test weights stay in the f16 range: {x}");
    if exp < 1 {
        // Subnormal: a multiple of 2^-24 (the encoding carries into the smallest normal).
        return sign | (x.abs() as f64 * (1u64 << 24) as f64).round() as u16;
    }
    let m = mant >> 13;
    let rest = mant & 0x1fff;
    let mut h = (sign as u32) | ((exp as u32) << 10) | m;
    if rest > 0x1000 || (rest == 0x1000 && (m & 1) == 1) {
        h += 1;
    }
    h as u16
}

fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rest = b & 0xffff;
    let mut h = b >> 16;
    if rest > 0x8000 || (rest == 0x8000 && (h & 1) == 1) {
        h += 1;
    }
    h as u16
}

#[test]
fn half_precision_models_load_as_f32() {
    let src = fixture("mlp64_split/fashion_mlp_split_m0");
    let reference = Model::load(&src, None).unwrap();
    let want = logits(&reference, 32);
    for (dtype, conv, rel) in [
        (Dtype::F16, to_f16 as fn(f32) -> u16, 2e-3f32),
        (Dtype::BF16, to_bf16 as fn(f32) -> u16, 2e-2),
    ] {
        let mut f = read(&src).unwrap();
        for t in f.tensors.values_mut() {
            let v = t.float_to_f32().unwrap();
            t.bytes = v.iter().flat_map(|&x| conv(x).to_le_bytes()).collect();
            t.dtype = dtype.clone();
        }
        let path = tmp(&format!("{dtype}.safetensors"));
        std::fs::write(&path, raw_to_bytes(&f.tensors, &f.metadata)).unwrap();
        let m = Model::load(&path, None).unwrap();
        // Each weight is within half an ulp of its f32 value.
        for (name, t) in &m.weights {
            let r = &reference.weights[name];
            let d = max_rel_diff(r.data(), t.data());
            assert!(d < rel, "{dtype} {name}: {d}");
        }
        let got = logits(&m, 32);
        let d = max_rel_diff(&want, &got);
        assert!(d < 20.0 * rel, "{dtype}: logits differ by {d}");
    }
}

#[test]
fn save_then_load_is_exact() {
    let m = Model::load(&fixture("rn20w1_split"), None).unwrap();
    let path = tmp("saved.safetensors");
    save_weights(&path, &m.weights, &m.metadata).unwrap();
    let (w, meta) = load_weights(&path).unwrap();
    assert_eq!(w, m.weights);
    assert_eq!(meta, m.metadata);
    // Saving again replaces the file whole; no temporary file is left beside it.
    save_weights(&path, &m.weights, &m.metadata).unwrap();
    assert_eq!(load_weights(&path).unwrap().0, m.weights);
    let dir = path.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("saved.safetensors.tmp-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn saving_into_a_missing_directory_fails_cleanly() {
    let m = Model::load(&fixture("mlp64_split/fashion_mlp_split_m1"), None).unwrap();
    let dir = tmp("no-such-dir");
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("out.safetensors");
    let err = save_weights(&path, &m.weights, &m.metadata).unwrap_err();
    assert!(err.to_string().contains("out.safetensors"), "{err}");
    assert!(!dir.exists());
}

#[test]
fn toml_architecture_file_describes_the_mlp() {
    let path = fixture("mlp64_split/fashion_mlp_split_m1");
    let arch = tmp("mlp.toml");
    std::fs::write(
        &arch,
        r#"
input = [784]
outputs = ["head"]

[[node]]
name = "layers.0"
op = "linear"

[[node]]
name = "relu0"
op = "relu"

[[node]]
name = "layers.1"
op = "linear"

[[node]]
name = "relu1"
op = "relu"

[[node]]
name = "head"
op = "linear"
"#,
    )
    .unwrap();
    let auto = Model::load(&path, None).unwrap();
    let from_file = Model::load(&path, Some(&arch)).unwrap();
    assert_eq!(from_file.arch, "toml");
    assert_eq!(logits(&auto, 16), logits(&from_file, 16));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args: Vec<OsString> = vec![
        "pleas".into(),
        "eval".into(),
        path.into_os_string(),
        "--arch".into(),
        arch.into_os_string(),
        "--data".into(),
        fashion_eval().into_os_string(),
    ];
    assert_eq!(
        run(args, &mut out, &mut err),
        0,
        "{}",
        String::from_utf8_lossy(&err)
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(&format!("accuracy {}", auto.metadata["test_acc"])),
        "{text}"
    );
}

#[test]
fn toml_architecture_file_describes_a_resnet_block() {
    // The stem and first block of the ResNet-20 fixture, pooled into the head is not
    // possible (the head expects 64 features), so check the graph itself.
    let (w, _) = load_weights(&fixture("rn20w1_split")).unwrap();
    let text = r#"
input = [1, 28, 28]
[[node]]
name = "conv1"
op = "conv2d"
padding = 1
[[node]]
name = "bn1"
op = "batchnorm"
[[node]]
name = "relu"
op = "relu"
[[node]]
name = "b0"
op = "conv2d"
params = "layers.0.conv1"
padding = 1
[[node]]
name = "add"
op = "add"
inputs = ["b0", "relu"]
[[node]]
name = "pool"
op = "maxpool"
kernel = 2
"#;
    let g = pleas::io::arch::toml_file::parse(text, &w).unwrap();
    let pool = g.node(g.find("pool").unwrap());
    assert_eq!((pool.shape.c, pool.shape.h, pool.shape.w), (16, 14, 14));
    assert_eq!(g.outputs()[0].name, "pool");
    let groups = pleas_core::graph::permutation_groups(&g);
    // conv1/bn1/relu and b0 are tied by the add, but the pool output is the graph output.
    assert_eq!(groups.len(), 0);
}

#[test]
fn inspect_json_lists_groups_flops_and_params() {
    let path = fixture("rn20w1_biased");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args: Vec<OsString> = vec![
        "pleas".into(),
        "inspect".into(),
        path.into_os_string(),
        "--json".into(),
    ];
    assert_eq!(run(args, &mut out, &mut err), 0);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["groups"].as_array().unwrap().len(), 12);
    assert_eq!(v["params"], 272_186);
    assert_eq!(v["input"], serde_json::json!([1, 28, 28]));
    let g0 = &v["groups"][0];
    assert_eq!(g0["name"], "conv1");
    assert_eq!(g0["width"], 16);
    assert!(
        g0["members"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"tensor": "bn1.weight", "axis": 0}))
    );
    assert!(v["flops"].as_u64().unwrap() > 30_000_000);
    // Text mode names the groups and the counts too.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args: Vec<OsString> = vec![
        "pleas".into(),
        "inspect".into(),
        fixture("rn20w1_biased").into_os_string(),
    ];
    assert_eq!(run(args, &mut out, &mut err), 0);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("permutation groups (12)") && text.contains("parameters:   272,186"),
        "{text}"
    );
}

/// Writes `weights` as a PyTorch-style state_dict: F32 tensors, an I64 `num_batches_tracked`
/// beside every batch-norm and, with `prefix`, every name under `module.`.
fn write_state_dict(weights: &pleas_core::graph::Weights, prefix: &str, name: &str) -> PathBuf {
    use pleas::io::safetensors::RawTensor;
    let mut raw = std::collections::BTreeMap::new();
    for (k, t) in weights {
        raw.insert(
            format!("{prefix}{k}"),
            RawTensor {
                dtype: Dtype::F32,
                shape: t.shape().to_vec(),
                bytes: t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        );
        if let Some(stem) = k.strip_suffix(".running_var") {
            raw.insert(
                format!("{prefix}{stem}.num_batches_tracked"),
                RawTensor {
                    dtype: Dtype::I64,
                    shape: vec![],
                    bytes: 7i64.to_le_bytes().to_vec(),
                },
            );
        }
    }
    let path = tmp(name);
    std::fs::write(&path, raw_to_bytes(&raw, &Default::default())).unwrap();
    path
}

#[test]
fn torchvision_and_wide_cifar_state_dicts_are_recognised() {
    use pleas::io::arch::resnet::{CifarSpec, TorchvisionSpec, build_cifar, build_torchvision};
    use pleas_core::graph::permutation_groups;
    use pleas_tests::models::random_weights;

    // Thin variants (fewer channels) keep the files small; recognition reads widths from shapes.
    let thin = |depth: usize| {
        let mut s = TorchvisionSpec::standard(depth, 7).unwrap();
        s.stem = 8;
        s.planes = [8, 16, 32, 64];
        s
    };
    for (depth, groups, arch) in [
        (18, 12, "resnet18 (torchvision)"),
        (50, 37, "resnet50 (torchvision)"),
    ] {
        let spec = thin(depth);
        let g = build_torchvision(&spec, spec.default_input()).unwrap();
        let w = random_weights(&g, depth as u64);
        let path = write_state_dict(&w, "module.", &format!("tv{depth}.safetensors"));
        let m = Model::load(&path, None).unwrap();
        assert_eq!(m.arch, arch);
        assert_eq!(m.graph, g);
        assert_eq!(m.weights, w);
        assert_eq!(permutation_groups(&m.graph).len(), groups);
        assert_eq!(m.heads[0].name, "fc");
        assert_eq!(m.heads[0].classes, (0..7).collect::<Vec<i64>>());
    }
    let spec = CifarSpec::resnet20(4, 3, 100);
    let g = build_cifar(&spec, spec.default_input()).unwrap();
    let w = random_weights(&g, 4);
    let path = write_state_dict(&w, "", "rn20w4.safetensors");
    let m = Model::load(&path, None).unwrap();
    assert_eq!(m.graph, g);
    assert_eq!(
        m.graph.input_shape(),
        pleas_core::graph::Shape::new(3, 32, 32)
    );
    let groups = permutation_groups(&m.graph);
    assert_eq!(groups.len(), 12);
    assert_eq!(groups.groups().iter().map(|g| g.width).max(), Some(256));
}
