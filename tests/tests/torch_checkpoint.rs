//! PyTorch checkpoints (`torch.save`'s zip container) as model files: the fixtures in
//! tests/fixtures/torch were written by real `torch.save` (tests/fixtures/torch/make_fixtures.py)
//! from the bundled safetensors models, so `pleas` must see the same weights, print the same
//! `inspect`, evaluate to the same accuracies and merge to the same bytes as from the safetensors
//! files. Plain, wrapped (`state_dict`, `model_state_dict`, `model`), DataParallel-prefixed, F16,
//! BF16, non-contiguous views and shared storages. Hostile and broken checkpoints fail with one
//! error line, exit code 2, and nothing runs or is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pleas::io::model_file::load_weights;
use pleas::io::safetensors::{self, Dtype, RawTensor, raw_to_bytes};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::graph::Shape;
use pleas_tests::cli::{args, pleas};
use pleas_tests::models::{fashion_eval, fixtures, max_rel_diff};
use pleas_tests::scratch::TempDir;
use pleas_tests::tolerance::TORCH_LOGIT_REL;

fn torch_fixture(name: &str) -> PathBuf {
    fixtures().join("torch").join(name)
}

fn rn20(i: usize) -> PathBuf {
    fixtures().join(format!(
        "fashion/rn20w1_split/fashion_resnet20_w1_split_m{i}_s{}.safetensors",
        2 + i
    ))
}

fn mlp64() -> PathBuf {
    fixtures().join("fashion/mlp64_split/fashion_mlp_split_m0_s6.safetensors")
}

/// `pleas inspect --json`, without the `model` path.
fn inspect_json(model: &Path) -> serde_json::Value {
    let (code, out, err) = pleas(&args(&[&"inspect", &model, &"--json"]));
    assert_eq!(code, 0, "{err}");
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_object_mut().unwrap().remove("model");
    v
}

/// `pleas eval --json` on `data` with the fixtures' normalisation.
fn eval_json(model: &Path, data: &Path) -> String {
    let a = args(&[
        &"eval",
        &model,
        &"--data",
        &data,
        &"--normalize",
        &"x/255*2-1",
        &"--json",
    ]);
    let (code, out, err) = pleas(&a);
    assert_eq!(code, 0, "{err}");
    out
}

/// The first `n` samples of every tensor of the fashion eval file, as a new file.
fn eval_subset(dir: &TempDir, n: usize) -> PathBuf {
    let file = safetensors::read(&fashion_eval()).unwrap();
    let cut: BTreeMap<String, RawTensor> = file
        .tensors
        .into_iter()
        .map(|(k, mut t)| {
            let row = t.bytes.len() / t.shape[0];
            t.shape[0] = n;
            t.bytes.truncate(n * row);
            (k, t)
        })
        .collect();
    let path = dir.join(format!("eval{n}.safetensors"));
    std::fs::write(&path, raw_to_bytes(&cut, &Default::default())).unwrap();
    path
}

#[test]
fn checkpoints_hold_the_weights_of_their_safetensors_twins() {
    let same = [
        ("mlp64_m0_plain.pth", mlp64()),
        ("mlp64_m0_model_state_dict.bin", mlp64()),
        ("mlp64_m0_views.pth", mlp64()),
        (
            "mlp64_m0_f16.pth",
            torch_fixture("mlp64_m0_f16.safetensors"),
        ),
        (
            "mlp64_m0_bf16.pth",
            torch_fixture("mlp64_m0_bf16.safetensors"),
        ),
        ("rn20_split_m0_wrapped.pth", rn20(0)),
        (
            "tv_resnet18_tiny.pth",
            torch_fixture("tv_resnet18_tiny.safetensors"),
        ),
    ];
    for (pth, twin) in same {
        let (w, meta) = load_weights(&torch_fixture(pth)).unwrap();
        let (want, want_meta) = load_weights(&twin).unwrap();
        // Bit-identical: Tensor's PartialEq compares shapes and f32 values (no NaNs here).
        assert_eq!(w, want, "{pth}");
        if pth.contains("wrapped") {
            assert_eq!(meta, want_meta, "{pth}");
        } else {
            assert!(meta.is_empty(), "{pth}");
        }
    }
    // DataParallel's `module.` prefix is stripped by the model loader.
    let dp = Model::load(&torch_fixture("rn20_split_m1_dataparallel.pt"), None).unwrap();
    let b = Model::load(&rn20(1), None).unwrap();
    assert_eq!(dp.weights, b.weights);
    assert_eq!(dp.metadata, b.metadata);
    assert_eq!(dp.heads, b.heads);
}

#[test]
fn half_checkpoints_are_the_f32_weights_rounded() {
    let (f16, _) = load_weights(&torch_fixture("mlp64_m0_f16.pth")).unwrap();
    let (f32w, _) = load_weights(&mlp64()).unwrap();
    for (name, t) in &f32w {
        let h = &f16[name];
        for (&x, &y) in t.data().iter().zip(h.data()) {
            // Round to nearest: within half an f16 ulp (2^-11 relative) for normal values.
            assert!(
                (x - y).abs() <= x.abs() * 2f32.powi(-11) + 2f32.powi(-25),
                "{name}"
            );
        }
    }
    let raw = safetensors::read(&torch_fixture("mlp64_m0_f16.safetensors")).unwrap();
    assert!(raw.tensors.values().all(|t| t.dtype == Dtype::F16));
}

#[test]
fn inspect_of_a_checkpoint_equals_inspect_of_its_safetensors() {
    let pairs = [
        ("rn20_split_m0_wrapped.pth", rn20(0)),
        ("rn20_split_m1_dataparallel.pt", rn20(1)),
        ("mlp64_m0_plain.pth", mlp64()),
        ("mlp64_m0_views.pth", mlp64()),
        (
            "mlp64_m0_f16.pth",
            torch_fixture("mlp64_m0_f16.safetensors"),
        ),
        (
            "tv_resnet18_tiny.pth",
            torch_fixture("tv_resnet18_tiny.safetensors"),
        ),
    ];
    for (pth, twin) in pairs {
        assert_eq!(
            inspect_json(&torch_fixture(pth)),
            inspect_json(&twin),
            "{pth}"
        );
    }
}

#[test]
fn eval_of_a_checkpoint_equals_eval_of_its_safetensors() {
    let dir = TempDir::new("torch", "eval");
    let data = eval_subset(&dir, 500);
    let pairs = [
        ("rn20_split_m0_wrapped.pth", rn20(0)),
        ("rn20_split_m1_dataparallel.pt", rn20(1)),
        ("mlp64_m0_views.pth", mlp64()),
        (
            "mlp64_m0_bf16.pth",
            torch_fixture("mlp64_m0_bf16.safetensors"),
        ),
    ];
    for (pth, twin) in pairs {
        let got = eval_json(&torch_fixture(pth), &data);
        assert_eq!(got, eval_json(&twin, &data), "{pth}");
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert!(v["accuracy"].as_f64().unwrap() > 0.3, "{pth}: {got}");
    }
}

#[test]
fn merging_checkpoints_writes_the_bytes_merging_safetensors_writes() {
    let dir = TempDir::new("torch", "merge");
    let data = eval_subset(&dir, 200);
    let merged = |a: &Path, b: &Path, out: &str| {
        let out = dir.join(out);
        let a = args(&[
            &"merge",
            &a,
            &b,
            &"--data",
            &data,
            &"--data-key",
            &"x_match",
            &"--budget",
            &"1.2",
            &"-o",
            &out,
            &"--quiet",
        ]);
        let (code, _, err) = pleas(&a);
        assert_eq!(code, 0, "{err}");
        std::fs::read(out.join("merged.safetensors")).unwrap()
    };
    let from_pth = merged(
        &torch_fixture("rn20_split_m0_wrapped.pth"),
        &torch_fixture("rn20_split_m1_dataparallel.pt"),
        "pth",
    );
    let from_st = merged(&rn20(0), &rn20(1), "st");
    assert!(from_pth == from_st, "merged.safetensors differ");
}

#[test]
fn torchvision_checkpoint_runs_as_torch_ran_it() {
    let m = Model::load(&torch_fixture("tv_resnet18_tiny.pth"), None).unwrap();
    assert!(m.arch.contains("resnet18"), "{}", m.arch);
    let io = safetensors::read(&torch_fixture("tv_resnet18_tiny_logits.safetensors")).unwrap();
    let x = io.tensors["x"].float_to_f32().unwrap();
    let want = io.tensors["logits"].float_to_f32().unwrap();
    let g = m.graph.with_input_shape(Shape::new(3, 32, 32)).unwrap();
    let mut f = Forward::new(&g, &m.weights).unwrap();
    let got = f.logits(&x, 2).unwrap().remove(0);
    let d = max_rel_diff(&want, &got);
    assert!(d <= TORCH_LOGIT_REL, "logits differ from torch's by {d}");
}

/// Exit code 2 and one `error:` line holding every needle.
fn assert_refused(model: &Path, needles: &[&str]) {
    let (code, out, err) = pleas(&args(&[&"inspect", &model]));
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

/// The file every hostile fixture's pickle would create if anything executed it.
const MARKER: &str = "/tmp/pleas_torch_hostile_marker";

#[test]
fn pickles_naming_other_globals_are_refused_and_nothing_runs() {
    let dir = TempDir::new("torch", "hostile");
    let _ = std::fs::remove_file(MARKER);
    for (file, global) in [
        ("hostile_os_system.pth", "`os.system`"),
        ("hostile_builtins_eval.pth", "`builtins.eval`"),
        ("hostile_reduce.pth", "`posix.system`"),
    ] {
        assert_refused(&torch_fixture(file), &[file, global, "weights-only"]);
        // eval and merge refuse it too, and merge writes nothing.
        let out = dir.join(format!("merge-{file}"));
        let a = args(&[
            &"merge",
            &torch_fixture(file),
            &mlp64(),
            &"--data",
            &fashion_eval(),
            &"-o",
            &out,
        ]);
        let (code, _, err) = pleas(&a);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(global), "{err}");
        assert!(!out.exists());
    }
    assert!(!Path::new(MARKER).exists(), "a hostile pickle ran");
}

#[test]
fn broken_checkpoints_are_clear_errors() {
    let dir = TempDir::new("torch", "broken");
    assert_refused(
        &torch_fixture("bad_storage_too_small.pth"),
        &["tensor `w`", "[4, 4]", "element 15", "holds 8"],
    );
    assert_refused(
        &torch_fixture("bad_record_short.pth"),
        &["archive/data/0", "16 bytes", "needs 32"],
    );
    assert_refused(
        &torch_fixture("unknown_arch.pth"),
        &["unknown_arch.pth", "encoder.proj.weight", "--arch"],
    );
    // A truncated checkpoint: the central directory is gone.
    let bytes = std::fs::read(torch_fixture("mlp64_m0_plain.pth")).unwrap();
    let cut = dir.join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_refused(&cut, &["cut.pth", "PyTorch checkpoint", "zip"]);
    // Neither format.
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"GIF89a, certainly not a model").unwrap();
    assert_refused(&junk, &["junk.bin", "neither", "safetensors", "PyTorch"]);
    // A pre-1.6 bare pickle.
    let legacy = dir.join("legacy.pt");
    std::fs::write(&legacy, b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    assert_refused(&legacy, &["legacy.pt", "bare pickle", "torch.save"]);
    // A zip without data.pkl.
    let nopkl = dir.join("nopkl.pth");
    let plain = std::fs::read(torch_fixture("hostile_os_system.pth")).unwrap();
    let renamed: Vec<u8> = replace_all(&plain, b"archive/data.pkl", b"archive/data.pkX");
    std::fs::write(&nopkl, renamed).unwrap();
    assert_refused(&nopkl, &["nopkl.pth", "data.pkl", "missing"]);
}

fn replace_all(b: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = b.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    out
}

#[test]
fn pickles_that_repeat_a_large_call_are_refused() {
    use pleas::io::torch::pickle::unpickle;
    // A list of 1000 pairs, memoised, then OrderedDict(list) called 5000 times: linear input,
    // quadratic copies if it were allowed.
    let mut p = b"\x80\x02]q\x00(".to_vec();
    for _ in 0..1000 {
        p.extend_from_slice(b"K\x00K\x00\x86");
    }
    p.push(b'e');
    for _ in 0..5000 {
        p.extend_from_slice(b"ccollections\nOrderedDict\nh\x00\x85R0");
    }
    p.push(b'.');
    let err = unpickle(&p).unwrap_err().to_string();
    assert!(err.contains("calls copy more items"), "{err}");
    // Once is fine.
    let mut once = p[..p.len() - 1 - 5000 * 30].to_vec();
    once.extend_from_slice(b"ccollections\nOrderedDict\nh\x00\x85R.");
    assert!(unpickle(&once).is_ok());
    // A tensor of 65 dimensions.
    let mut t = b"\x80\x02ctorch._utils\n_rebuild_tensor\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00(".to_vec();
    t.extend(std::iter::repeat_n(&b"K\x01"[..], 65).flatten());
    t.extend_from_slice(b"t(");
    t.extend(std::iter::repeat_n(&b"K\x01"[..], 65).flatten());
    t.extend_from_slice(b"ttR.");
    let err = unpickle(&t).unwrap_err().to_string();
    assert!(err.contains("more than 64"), "{err}");
}
