//! Model files in other dtypes, the TOML architecture file, save/load round trips,
//! `pleas inspect`, and data files read whole and streamed in chunks.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pleas::cli::run;
use pleas::io::data::{DataSource, DataSpec, Normalize, load};
use pleas::io::npy;
use pleas::io::safetensors::{
    Dtype, RawTensor, bf16_to_f32, f16_to_f32, load_weights, raw_to_bytes, read, save_weights,
};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_tests::models::{fashion_eval, fixture_models, max_rel_diff};
use pleas_tests::rng::Rng;

fn fixture(part: &str) -> PathBuf {
    fixture_models()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(part))
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = pleas_tests::scratch::dir("io-formats");
    dir.join(name)
}

fn logits(m: &Model, n: usize) -> Vec<f32> {
    let data = load(&DataSpec::unlabelled(
        fashion_eval(),
        "x_test",
        Normalize::Symmetric,
    ))
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

// Streaming data reads: `DataSource` in chunks against `load` and against values decoded here.

const NORMALIZATIONS: [Normalize; 4] = [
    Normalize::Identity,
    Normalize::Unit,
    Normalize::Symmetric,
    Normalize::MeanStd {
        mean: 0.5,
        std: 0.25,
    },
];

/// `numel` random finite values of `dtype` as little-endian bytes, and the f32 each stands for.
fn random_raw(dtype: &Dtype, numel: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    for _ in 0..numel {
        let bits = rng.next_u64();
        match dtype {
            Dtype::U8 => {
                bytes.push(bits as u8);
                values.push(f32::from(bits as u8));
            }
            Dtype::F32 => {
                let v = rng.normal_f32() * 100.0;
                bytes.extend_from_slice(&v.to_le_bytes());
                values.push(v);
            }
            Dtype::F64 => {
                let v = rng.normal() * 1e3;
                bytes.extend_from_slice(&v.to_le_bytes());
                values.push(v as f32);
            }
            Dtype::F16 => {
                // Every finite pattern (subnormals included): an all-ones exponent loses its top bit.
                let mut h = bits as u16;
                if (h >> 10) & 0x1f == 0x1f {
                    h &= !0x4000;
                }
                bytes.extend_from_slice(&h.to_le_bytes());
                values.push(f16_to_f32(h));
            }
            Dtype::BF16 => {
                // Magnitudes below 2, so every normalisation stays finite.
                let h = bits as u16 & !0x4000;
                bytes.extend_from_slice(&h.to_le_bytes());
                values.push(bf16_to_f32(h));
            }
            d => panic!("no random {d} values"),
        }
    }
    (bytes, values)
}

fn write_safetensors(name: &str, tensors: &[(&str, RawTensor)]) -> PathBuf {
    let map: BTreeMap<String, RawTensor> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    let path = tmp(name);
    std::fs::write(&path, raw_to_bytes(&map, &Default::default())).unwrap();
    path
}

fn write_npy(name: &str, t: &RawTensor) -> PathBuf {
    let path = tmp(name);
    std::fs::write(&path, npy::to_bytes(t)).unwrap();
    path
}

fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: value {i} is {}, expected {}", got[i], want[i]);
    }
}

/// Reads every sample of `src` in chunks of random sizes (some empty), then random ranges in
/// random order, and checks each against `want`.
fn read_in_random_chunks(src: &mut DataSource, want: &[f32], rng: &mut Rng, what: &str) {
    let (n, d) = (src.len(), src.sample_len());
    let mut got = vec![f32::NAN; n * d];
    let mut start = 0;
    while start < n {
        let count = rng.below((n - start).min(40) + 1);
        // The output may be longer than the read; only its front is written.
        src.read(start, count, &mut got[start * d..]).unwrap();
        start += count;
    }
    assert_same_bits(&got, want, what);
    let mut buf = vec![0.0; n * d + 3];
    for _ in 0..10 {
        let start = rng.below(n + 1);
        let count = rng.below(n - start + 1);
        buf.fill(-7.0);
        src.read(start, count, &mut buf).unwrap();
        assert_same_bits(
            &buf[..count * d],
            &want[start * d..(start + count) * d],
            what,
        );
        assert!(buf[count * d..].iter().all(|&v| v == -7.0), "{what}");
    }
}

#[test]
fn chunked_reads_equal_load_for_every_dtype_layout_and_normalisation() {
    let mut rng = Rng::new(11);
    // 97 x 784 F32 is more than one 256 KiB read, and the read boundary falls inside a sample.
    let shapes = [vec![97, 784], vec![29, 3, 5, 7]];
    for dtype in [Dtype::U8, Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
        for shape in &shapes {
            let numel = shape.iter().product();
            let (bytes, values) = random_raw(&dtype, numel, &mut rng);
            let x = RawTensor {
                dtype: dtype.clone(),
                shape: shape.clone(),
                bytes,
            };
            let n = shape[0];
            let labels = RawTensor {
                dtype: Dtype::I64,
                shape: vec![n],
                bytes: (0..n as i64).flat_map(|v| (v % 10).to_le_bytes()).collect(),
            };
            let other = RawTensor {
                dtype: Dtype::U8,
                shape: vec![2, 3],
                bytes: vec![9; 6],
            };
            let tag = format!("{dtype}-{}", shape.len());
            let mut files = vec![
                (
                    write_safetensors(
                        &format!("stream-{tag}.safetensors"),
                        &[("a", other), ("x_match", x.clone()), ("y_match", labels)],
                    ),
                    "x_match",
                ),
                // The only tensor of a file is the data whatever the key.
                (
                    write_safetensors(
                        &format!("stream-one-{tag}.safetensors"),
                        &[("t", x.clone())],
                    ),
                    "x_test",
                ),
            ];
            if dtype != Dtype::BF16 {
                files.push((write_npy(&format!("stream-{tag}.npy"), &x), "x_test"));
            }
            for (path, key) in &files {
                for normalize in NORMALIZATIONS {
                    let what = format!("{} {normalize:?}", path.display());
                    let want: Vec<f32> = values.iter().map(|&v| normalize.apply(v)).collect();
                    let spec = DataSpec::unlabelled(path, key, normalize);
                    let loaded = load(&spec).unwrap();
                    assert_eq!(loaded.n, n);
                    assert_eq!(loaded.sample_shape, shape[1..]);
                    assert_same_bits(&loaded.x, &want, &what);
                    let mut src = DataSource::open(&spec).unwrap();
                    assert_eq!(src.len(), n);
                    assert!(!src.is_empty());
                    assert_eq!(src.sample_shape(), &shape[1..]);
                    assert_eq!(src.sample_len(), numel / n);
                    read_in_random_chunks(&mut src, &loaded.x, &mut rng, &what);
                }
            }
            // Labels still come with the data.
            let mut spec = DataSpec::unlabelled(&files[0].0, "x_match", Normalize::Unit);
            spec.label_key = Some("y_match".into());
            let labels: Vec<i64> = (0..n as i64).map(|v| v % 10).collect();
            assert_eq!(load(&spec).unwrap().labels, Some(labels));
        }
    }
}

#[test]
fn fashion_match_data_in_chunks_of_seven_equals_load() {
    let spec = DataSpec::unlabelled(fashion_eval(), "x_match", Normalize::Symmetric);
    let loaded = load(&spec).unwrap();
    // Independently: the U8 bytes of the tensor, mapped here.
    let raw = &read(&fashion_eval()).unwrap().tensors["x_match"];
    let want: Vec<f32> = raw
        .bytes
        .iter()
        .map(|&b| f32::from(b) / 255.0 * 2.0 - 1.0)
        .collect();
    assert_same_bits(&loaded.x, &want, "load");
    let mut src = DataSource::open(&spec).unwrap();
    assert_eq!((src.len(), src.sample_shape()), (2000, &[784][..]));
    let mut chunk = vec![0.0; 7 * 784];
    let mut start = 0;
    while start < src.len() {
        let count = 7.min(src.len() - start);
        src.read(start, count, &mut chunk).unwrap();
        assert_same_bits(
            &chunk[..count * 784],
            &loaded.x[start * 784..(start + count) * 784],
            &format!("samples {start}.."),
        );
        start += count;
    }
    assert_eq!(start, 2000);
}

#[test]
fn out_of_range_reads_are_errors_naming_file_and_sample() {
    let x = RawTensor {
        dtype: Dtype::U8,
        shape: vec![10, 4],
        bytes: (0..40).collect(),
    };
    let path = write_npy("range.npy", &x);
    let mut src = DataSource::open(&DataSpec::unlabelled(&path, "x", Normalize::Identity)).unwrap();
    let mut out = vec![0.0; 64];
    for (start, count) in [(9, 2), (11, 0), (0, 11), (usize::MAX, 2), (3, usize::MAX)] {
        let err = src.read(start, count, &mut out).unwrap_err().to_string();
        assert!(err.contains("range.npy"), "{err}");
        assert!(err.contains(&format!("sample {start}")), "{err}");
    }
    // An output too short for the samples.
    let err = src.read(2, 3, &mut out[..11]).unwrap_err().to_string();
    assert!(
        err.contains("range.npy") && err.contains("sample 2"),
        "{err}"
    );
    // Empty reads at the end are fine, and errors leave the source usable.
    src.read(10, 0, &mut []).unwrap();
    src.read(8, 2, &mut out).unwrap();
    assert_eq!(out[..8], [32.0, 33.0, 34.0, 35.0, 36.0, 37.0, 38.0, 39.0]);
}

#[test]
fn truncated_files_are_errors_at_open() {
    let x = RawTensor {
        dtype: Dtype::F32,
        shape: vec![6, 5],
        bytes: vec![0; 120],
    };
    let labels = RawTensor {
        dtype: Dtype::U8,
        shape: vec![6],
        bytes: vec![1; 6],
    };
    let st = raw_to_bytes(
        &BTreeMap::from([
            ("x_match".to_string(), x.clone()),
            ("y_match".to_string(), labels),
        ]),
        &Default::default(),
    );
    let np = npy::to_bytes(&x);
    let header_len = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let cases: [(&str, &[u8], &str); 6] = [
        // The data tensor itself, a later tensor, the header, the header length.
        ("cut-data.safetensors", &st[..header_len + 100], "truncated"),
        ("cut-labels.safetensors", &st[..st.len() - 1], "truncated"),
        ("cut-header.safetensors", &st[..header_len - 1], "truncated"),
        ("cut-length.safetensors", &st[..5], "8-byte"),
        ("cut.npy", &np[..np.len() - 1], "truncated"),
        ("cut-header.npy", &np[..40], "truncated"),
    ];
    for (name, bytes, needle) in cases {
        let path = tmp(name);
        std::fs::write(&path, bytes).unwrap();
        let spec = DataSpec::unlabelled(&path, "x_match", Normalize::Identity);
        let err = DataSource::open(&spec).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(needle), "{err}");
        assert_eq!(load(&spec).unwrap_err().to_string(), err);
    }
    // Trailing bytes after a .npy array are an error too.
    let path = tmp("long.npy");
    std::fs::write(&path, [&np[..], &[0]].concat()).unwrap();
    let err = DataSource::open(&DataSpec::unlabelled(&path, "x", Normalize::Identity)).unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
}

#[test]
fn a_file_cut_after_open_is_a_read_error_naming_the_samples() {
    let x = RawTensor {
        dtype: Dtype::U8,
        shape: vec![10, 4],
        bytes: vec![3; 40],
    };
    let path = write_npy("shrinks.npy", &x);
    let mut src = DataSource::open(&DataSpec::unlabelled(&path, "x", Normalize::Identity)).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 6)
        .unwrap();
    let mut out = vec![0.0; 40];
    src.read(0, 8, &mut out).unwrap();
    let err = src.read(6, 4, &mut out).unwrap_err();
    let text = pleas::error::chain(&err);
    // The samples asked for, and (whatever the read size) a sample at or after the cut.
    assert!(
        text.contains("shrinks.npy") && text.contains("samples 6..10"),
        "{text}"
    );
    assert!(
        ["6", "7", "8"]
            .iter()
            .any(|s| text.contains(&format!("at sample {s}:"))),
        "{text}"
    );
}

#[test]
fn a_non_finite_value_is_an_error_naming_its_sample() {
    let mut values = vec![0.5f32; 12 * 5];
    values[7 * 5 + 3] = f32::NAN;
    let x = RawTensor {
        dtype: Dtype::F32,
        shape: vec![12, 5],
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let path = write_safetensors("nan.safetensors", &[("x_match", x)]);
    let spec = DataSpec::unlabelled(&path, "x_match", Normalize::Identity);
    let mut src = DataSource::open(&spec).unwrap();
    let mut out = vec![0.0; 60];
    src.read(0, 7, &mut out).unwrap();
    src.read(8, 4, &mut out).unwrap();
    for (start, count) in [(0, 12), (7, 1), (5, 3)] {
        let err = src.read(start, count, &mut out).unwrap_err().to_string();
        assert!(
            err.contains("nan.safetensors") && err.contains("sample 7"),
            "{err}"
        );
    }
    assert!(load(&spec).unwrap_err().to_string().contains("sample 7"));
    // An F16 infinity in a .npy file.
    let mut halves = [0x3c00u16; 4 * 3];
    halves[2 * 3] = 0xfc00;
    let h = RawTensor {
        dtype: Dtype::F16,
        shape: vec![4, 3],
        bytes: halves.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let path = write_npy("inf.npy", &h);
    let err = load(&DataSpec::unlabelled(&path, "x", Normalize::Unit))
        .unwrap_err()
        .to_string();
    assert!(err.contains("inf.npy") && err.contains("sample 2"), "{err}");
    // A finite value that normalisation takes out of range.
    let big = RawTensor {
        dtype: Dtype::F32,
        shape: vec![2, 1],
        bytes: [1.0f32, 3e38]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    };
    let path = write_npy("big.npy", &big);
    let spec = DataSpec::unlabelled(
        &path,
        "x",
        Normalize::MeanStd {
            mean: 0.0,
            std: 0.5,
        },
    );
    let err = load(&spec).unwrap_err().to_string();
    assert!(err.contains("big.npy") && err.contains("sample 1"), "{err}");
}

#[test]
fn open_checks_tensor_dtype_shape_and_layout() {
    let u8s = |shape: Vec<usize>| RawTensor {
        bytes: vec![0; shape.iter().product()],
        dtype: Dtype::U8,
        shape,
    };
    let open = |path: &Path, key: &str| {
        DataSource::open(&DataSpec::unlabelled(path, key, Normalize::Identity))
            .unwrap_err()
            .to_string()
    };
    let two = write_safetensors(
        "choose.safetensors",
        &[("x_a", u8s(vec![2, 3])), ("x_b", u8s(vec![2, 3]))],
    );
    let err = open(&two, "x_match");
    assert!(err.contains("x_match") && err.contains("x_a, x_b"), "{err}");
    let rank3 = write_npy("rank3.npy", &u8s(vec![2, 3, 4]));
    assert!(open(&rank3, "x").contains("N x D"));
    let ints = write_safetensors(
        "ints.safetensors",
        &[(
            "x",
            RawTensor {
                dtype: Dtype::I32,
                shape: vec![2, 1],
                bytes: vec![0; 8],
            },
        )],
    );
    let err = open(&ints, "x");
    assert!(
        err.contains("ints.safetensors") && err.contains("I32"),
        "{err}"
    );
    // .npy layouts: Fortran order and big-endian are rejected.
    let f4 = RawTensor {
        dtype: Dtype::F32,
        shape: vec![2, 2],
        bytes: vec![0; 16],
    };
    let bytes = npy::to_bytes(&f4);
    let edit = |from: &[u8], to: &[u8], name: &str| {
        let mut b = bytes.clone();
        let at = b.windows(from.len()).position(|w| w == from).unwrap();
        b[at..at + from.len()].copy_from_slice(to);
        let path = tmp(name);
        std::fs::write(&path, b).unwrap();
        path
    };
    let fortran = edit(b"False", b"True ", "fortran.npy");
    assert!(open(&fortran, "x").contains("Fortran"));
    let big = edit(b"<f4", b">f4", "big-endian.npy");
    assert!(open(&big, "x").contains("little-endian"));
    // An empty data set opens and reads nothing.
    let empty = write_npy("empty.npy", &u8s(vec![0, 3]));
    let mut src = DataSource::open(&DataSpec::unlabelled(&empty, "x", Normalize::Unit)).unwrap();
    assert!(src.is_empty());
    src.read(0, 0, &mut []).unwrap();
    // No samples of an absurd size: the tensor holds 0 values, but one sample's size overflows
    // usize. An error, not an arithmetic overflow (found by fuzzing `npy_read`).
    let huge = 1usize << 22;
    for path in [
        write_npy("huge-empty.npy", &u8s(vec![0, huge, huge, huge])),
        write_safetensors(
            "huge-empty.safetensors",
            &[("x", u8s(vec![0, huge, huge, huge]))],
        ),
    ] {
        let err = open(&path, "x");
        assert!(err.contains("overflows"), "{err}");
        assert!(load(&DataSpec::unlabelled(&path, "x", Normalize::Identity)).is_err());
    }
}

#[test]
fn data_source_is_send() {
    fn send<T: Send>() {}
    send::<DataSource>();
}
