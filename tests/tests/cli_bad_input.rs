//! Bad files give one clear error line naming the tensor or file, and exit code 2, never a
//! panic: truncated safetensors, wrong dtype, missing or extra tensor, mismatched shapes, data of
//! the wrong width, and a few more.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pleas::io::npy;
use pleas::io::safetensors::{Dtype, RawTensor, raw_to_bytes, read};
use pleas_tests::cli::pleas;
use pleas_tests::models::{fashion_eval, fixture_models};

fn fixture(part: &str) -> PathBuf {
    fixture_models()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(part))
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = pleas_tests::scratch::dir("bad-input");
    dir.join(name)
}

/// Asserts exit code 2 and a single `error:` line containing every needle.
fn assert_one_line_error(args: &[&OsString], needles: &[&str]) {
    let (code, out, err) = pleas(args);
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

fn os(s: &str) -> OsString {
    s.into()
}

fn inspect(model: &Path, needles: &[&str]) {
    assert_one_line_error(&[&os("inspect"), &model.as_os_str().to_owned()], needles);
}

fn eval(model: &Path, data: &Path, needles: &[&str]) {
    assert_one_line_error(
        &[
            &os("eval"),
            &model.as_os_str().to_owned(),
            &os("--data"),
            &data.as_os_str().to_owned(),
        ],
        needles,
    );
}

/// Rewrites a fixture with `edit` applied to its tensors; returns the new file.
fn edited(part: &str, name: &str, edit: impl FnOnce(&mut BTreeMap<String, RawTensor>)) -> PathBuf {
    let f = read(&fixture(part)).unwrap();
    let mut tensors = f.tensors;
    edit(&mut tensors);
    let path = tmp(name);
    std::fs::write(&path, raw_to_bytes(&tensors, &f.metadata)).unwrap();
    path
}

#[test]
fn truncated_safetensors() {
    let bytes = std::fs::read(fixture("mlp64")).unwrap();
    let path = tmp("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    inspect(&path, &["truncated.safetensors", "truncated", "tensor `"]);
    // Cut inside the header too.
    std::fs::write(&path, &bytes[..40]).unwrap();
    inspect(&path, &["truncated.safetensors", "truncated"]);
    std::fs::write(&path, &bytes[..5]).unwrap();
    inspect(&path, &["truncated.safetensors", "8-byte"]);
}

#[test]
fn garbage_header() {
    let path = tmp("garbage.safetensors");
    let mut b = 12u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{not json!!}");
    std::fs::write(&path, &b).unwrap();
    inspect(&path, &["garbage.safetensors", "JSON"]);
}

#[test]
fn wrong_dtype() {
    let path = edited("mlp64", "dtype.safetensors", |t| {
        let w = t.get_mut("layers.1.weight").unwrap();
        w.dtype = Dtype::I32;
    });
    inspect(&path, &["dtype.safetensors", "layers.1.weight", "I32"]);
}

#[test]
fn missing_tensor() {
    let path = edited("rn20w1_split", "missing.safetensors", |t| {
        t.remove("layers.3.bn1.running_var");
    });
    inspect(
        &path,
        &["missing.safetensors", "layers.3.bn1.running_var", "missing"],
    );
}

#[test]
fn extra_tensor() {
    let path = edited("mlp64", "extra.safetensors", |t| {
        t.insert(
            "extra.weight".into(),
            RawTensor {
                dtype: Dtype::F32,
                shape: vec![2],
                bytes: vec![0; 8],
            },
        );
    });
    inspect(&path, &["extra.safetensors", "extra.weight", "unexpected"]);
}

#[test]
fn mismatched_shapes() {
    let path = edited("mlp64", "shape.safetensors", |t| {
        let w = t.get_mut("layers.1.weight").unwrap();
        w.shape = vec![64, 63];
        w.bytes.truncate(64 * 63 * 4);
    });
    inspect(
        &path,
        &[
            "shape.safetensors",
            "layers.1.weight",
            "[64, 63]",
            "[64, 64]",
        ],
    );
    let path = edited("rn20w1_split", "conv_shape.safetensors", |t| {
        let w = t.get_mut("layers.4.conv2.weight").unwrap();
        w.shape = vec![32, 31, 3, 3];
        w.bytes.truncate(32 * 31 * 9 * 4);
    });
    inspect(&path, &["conv_shape.safetensors", "layers.4.conv2.weight"]);
}

#[test]
fn shape_and_offsets_disagree() {
    let path = edited("mlp64", "offsets.safetensors", |t| {
        t.get_mut("head.bias").unwrap().shape = vec![6];
    });
    inspect(&path, &["offsets.safetensors", "head.bias", "bytes"]);
}

#[test]
fn nonexistent_model_file() {
    inspect(
        &tmp("nope.safetensors"),
        &["nope.safetensors", "cannot read"],
    );
}

fn write_npy(name: &str, t: &RawTensor) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, npy::to_bytes(t)).unwrap();
    p
}

#[test]
fn data_file_of_the_wrong_width() {
    let model = fixture("mlp64");
    // safetensors data with x_test of 700 features.
    let mut t = BTreeMap::new();
    t.insert(
        "x_test".to_string(),
        RawTensor {
            dtype: Dtype::U8,
            shape: vec![10, 700],
            bytes: vec![7; 7000],
        },
    );
    t.insert(
        "y_test".to_string(),
        RawTensor {
            dtype: Dtype::U8,
            shape: vec![10],
            bytes: vec![1; 10],
        },
    );
    let data = tmp("narrow.safetensors");
    std::fs::write(&data, raw_to_bytes(&t, &Default::default())).unwrap();
    eval(&model, &data, &["narrow.safetensors", "700", "784"]);
    // .npy data with labels in their own file.
    let x = write_npy(
        "narrow.npy",
        &RawTensor {
            dtype: Dtype::F32,
            shape: vec![3, 700],
            bytes: vec![0; 3 * 700 * 4],
        },
    );
    let y = write_npy(
        "labels.npy",
        &RawTensor {
            dtype: Dtype::I64,
            shape: vec![3],
            bytes: vec![0; 24],
        },
    );
    assert_one_line_error(
        &[
            &os("eval"),
            &model.as_os_str().to_owned(),
            &os("--data"),
            &x.as_os_str().to_owned(),
            &os("--labels"),
            &y.as_os_str().to_owned(),
        ],
        &["narrow.npy", "700", "784"],
    );
    // A conv model given 4-D data with the wrong channel count.
    let x4 = write_npy(
        "rgb.npy",
        &RawTensor {
            dtype: Dtype::U8,
            shape: vec![3, 3, 28, 28],
            bytes: vec![0; 3 * 3 * 784],
        },
    );
    assert_one_line_error(
        &[
            &os("eval"),
            &fixture("rn20w1_split").as_os_str().to_owned(),
            &os("--data"),
            &x4.as_os_str().to_owned(),
            &os("--labels"),
            &y.as_os_str().to_owned(),
        ],
        &["rgb.npy", "3 channels"],
    );
}

#[test]
fn data_problems_name_the_file_and_tensor() {
    let model = fixture("mlp64");
    // Missing key in a multi-tensor file.
    assert_one_line_error(
        &[
            &os("eval"),
            &model.as_os_str().to_owned(),
            &os("--data"),
            &fashion_eval().into_os_string(),
            &os("--data-key"),
            &os("x_nope"),
        ],
        &["eval.safetensors", "x_nope"],
    );
    // Labels of the wrong length.
    let x = write_npy(
        "x4.npy",
        &RawTensor {
            dtype: Dtype::U8,
            shape: vec![4, 784],
            bytes: vec![0; 4 * 784],
        },
    );
    let y = write_npy(
        "y3.npy",
        &RawTensor {
            dtype: Dtype::U8,
            shape: vec![3],
            bytes: vec![0; 3],
        },
    );
    assert_one_line_error(
        &[
            &os("eval"),
            &model.as_os_str().to_owned(),
            &os("--data"),
            &x.as_os_str().to_owned(),
            &os("--labels"),
            &y.as_os_str().to_owned(),
        ],
        &["y3.npy", "[3]", "[4]"],
    );
    // Float labels.
    let yf = write_npy(
        "yf.npy",
        &RawTensor {
            dtype: Dtype::F32,
            shape: vec![4],
            bytes: vec![0; 16],
        },
    );
    assert_one_line_error(
        &[
            &os("eval"),
            &model.as_os_str().to_owned(),
            &os("--data"),
            &x.as_os_str().to_owned(),
            &os("--labels"),
            &yf.as_os_str().to_owned(),
        ],
        &["yf.npy", "F32"],
    );
    // Truncated .npy.
    let bytes = npy::to_bytes(&RawTensor {
        dtype: Dtype::U8,
        shape: vec![4, 784],
        bytes: vec![0; 4 * 784],
    });
    let cut = tmp("cut.npy");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    eval(&model, &cut, &["cut.npy", "truncated"]);
    // .npy data without labels.
    eval(&model, &x, &["x4.npy", "--labels"]);
    // Bad normalisation flag.
    assert_one_line_error(
        &[
            &os("eval"),
            &model.as_os_str().to_owned(),
            &os("--data"),
            &x.as_os_str().to_owned(),
            &os("--normalize"),
            &os("x/256"),
        ],
        &["--normalize", "x/256"],
    );
}

#[test]
fn bad_architecture_file() {
    let arch = tmp("bad_arch.toml");
    std::fs::write(
        &arch,
        "input = [784]\n[[node]]\nname = \"layers.0\"\nop = \"linaer\"\n",
    )
    .unwrap();
    assert_one_line_error(
        &[
            &os("inspect"),
            &fixture("mlp64").as_os_str().to_owned(),
            &os("--arch"),
            &arch.as_os_str().to_owned(),
        ],
        &["bad_arch.toml", "layers.0", "linaer"],
    );
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = pleas(&[&os("eval")]);
    assert_eq!(code, 2);
    assert!(err.contains("--data"), "{err}");
    let (code, out, _) = pleas(&[&os("--help")]);
    assert_eq!(code, 0);
    assert!(out.contains("inspect") && out.contains("eval"));
}
