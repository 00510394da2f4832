//! `pleas merge` end to end through the command-line library: a real merge writes exactly
//! `merged.safetensors` and `report.json`, the merged model evaluates per head with `pleas
//! eval`; bad input (mismatched architectures, a budget outside [1, 2], data of the wrong shape,
//! NaN weights or data, empty data, an unwritable output directory) gives one error line, exit
//! code 2, and leaves nothing in OUT_DIR.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pleas::io::npy;
use pleas::io::safetensors::{self, Dtype, RawTensor, raw_to_bytes};
use pleas_tests::cli::pleas;
use pleas_tests::models::{fashion_eval, fixtures};

fn tmp(name: &str) -> PathBuf {
    let dir = pleas_tests::scratch::dir("cli-merge");
    dir.join(name)
}

fn mlp64(i: usize) -> PathBuf {
    fixtures().join(format!(
        "fashion/mlp64_split/fashion_mlp_split_m{i}_s{}.safetensors",
        6 + i
    ))
}

fn rn20() -> PathBuf {
    fixtures().join("fashion/rn20w1_split/fashion_resnet20_w1_split_m0_s2.safetensors")
}

fn merge_args(a: &Path, b: &Path, data: &Path, out: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "merge".into(),
        a.into(),
        b.into(),
        "--data".into(),
        data.into(),
        "-o".into(),
        out.into(),
        "--quiet".into(),
    ];
    v.extend(extra.iter().map(OsString::from));
    v
}

/// Exit code 2, one `error:` line with every needle, and `out` absent (it did not exist).
fn assert_fails_cleanly(args: &[OsString], out: &Path, needles: &[&str]) {
    let (code, stdout, err) = pleas(args);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert!(!out.exists(), "{} was left behind", out.display());
}

#[test]
fn merge_writes_a_model_that_evaluates_per_head() {
    let out = tmp("ok");
    let _ = std::fs::remove_dir_all(&out);
    let eval = fashion_eval();
    let mut args = merge_args(&mlp64(0), &mlp64(1), &eval, &out, &["--budget", "1.2"]);
    args.retain(|a| a != "--quiet");
    args.extend(["--eval".into(), eval.clone().into()]);
    let (code, stdout, err) = pleas(&args);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(
        stdout.contains("head a:") && stdout.contains("head b:"),
        "{stdout}"
    );
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["merged.safetensors", "report.json"]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["settings"]["budget"], 1.2);
    assert_eq!(report["settings"]["fit"], "sequential");
    assert_eq!(report["settings"]["heads"], "separate");
    assert_eq!(report["groups"].as_array().unwrap().len(), 2);
    assert_eq!(
        report["layers"].as_array().unwrap().len(),
        4,
        "2 hidden + 2 heads"
    );
    let flops = report["flop_ratio"].as_f64().unwrap();
    assert!((flops - 1.2).abs() < 0.02, "achieved FLOP ratio {flops}");
    for l in report["layers"].as_array().unwrap() {
        let (ls, pa) = (
            l["relative_residual"].as_f64().unwrap(),
            l["average_relative_residual"].as_f64().unwrap(),
        );
        assert!(ls <= pa + 1e-6, "{l}");
    }
    let merged_acc = report["eval"]["accuracy"].as_f64().unwrap();
    // The same accuracy from `pleas eval` on the saved file.
    let (code, stdout, err) = pleas::<OsString>(&[
        "eval".into(),
        out.join("merged.safetensors").into(),
        "--data".into(),
        eval.into(),
        "--json".into(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["accuracy"].as_f64().unwrap(), merged_acc);
    assert_eq!(v["heads"][1]["classes"], serde_json::json!([5, 6, 7, 8, 9]));
    assert!(merged_acc > 0.85, "merged accuracy {merged_acc}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn mismatched_architectures_are_refused() {
    let out = tmp("arch");
    assert_fails_cleanly(
        &merge_args(&mlp64(0), &rn20(), &fashion_eval(), &out, &[]),
        &out,
        &["different architectures"],
    );
    // Same family, other widths.
    let wide = fixtures().join("fashion/mlp_split/fashion_mlp_split_m1_s1.safetensors");
    assert_fails_cleanly(
        &merge_args(&mlp64(0), &wide, &fashion_eval(), &out, &[]),
        &out,
        &["different architectures", "layers.0"],
    );
}

#[test]
fn budgets_outside_one_to_two_are_refused() {
    let out = tmp("budget");
    for b in ["2.5", "0.9", "-1", "NaN", "inf"] {
        assert_fails_cleanly(
            &merge_args(
                &mlp64(0),
                &mlp64(1),
                &fashion_eval(),
                &out,
                &["--budget", b],
            ),
            &out,
            &["budget"],
        );
    }
}

fn write_f32_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = RawTensor {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes,
    };
    std::fs::write(path, npy::to_bytes(&t)).unwrap();
}

#[test]
fn bad_merge_data_is_refused() {
    let out = tmp("data");
    let wrong = tmp("wrong_width.npy");
    write_f32_npy(&wrong, &[10, 100], &vec![0.5; 1000]);
    assert_fails_cleanly(
        &merge_args(&mlp64(0), &mlp64(1), &wrong, &out, &[]),
        &out,
        &["wrong_width.npy", "784"],
    );
    let empty = tmp("empty.npy");
    write_f32_npy(&empty, &[0, 784], &[]);
    assert_fails_cleanly(
        &merge_args(&mlp64(0), &mlp64(1), &empty, &out, &[]),
        &out,
        &["no samples"],
    );
    let nan = tmp("nan.npy");
    let mut x = vec![0.25f32; 40 * 784];
    x[17 * 784 + 3] = f32::NAN;
    write_f32_npy(&nan, &[40, 784], &x);
    assert_fails_cleanly(
        &merge_args(&mlp64(0), &mlp64(1), &nan, &out, &[]),
        &out,
        &["nan.npy", "17"],
    );
}

#[test]
fn nan_weights_are_refused() {
    let out = tmp("nan_weights");
    let src = safetensors::read(&mlp64(1)).unwrap();
    let mut tensors: BTreeMap<String, RawTensor> = src.tensors.clone();
    let t = tensors.get_mut("layers.1.weight").unwrap();
    assert_eq!(t.dtype, Dtype::F32);
    t.bytes[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    let bad = tmp("nan_model.safetensors");
    std::fs::write(&bad, raw_to_bytes(&tensors, &src.metadata)).unwrap();
    assert_fails_cleanly(
        &merge_args(&mlp64(0), &bad, &fashion_eval(), &out, &[]),
        &out,
        &["nan_model.safetensors", "layers.1.weight"],
    );
}

#[test]
fn unwritable_output_directory_is_refused_before_merging() {
    let file = tmp("a_regular_file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("sub");
    assert_fails_cleanly(
        &merge_args(&mlp64(0), &mlp64(1), &fashion_eval(), &out, &[]),
        &out,
        &["a_regular_file"],
    );
    // An existing directory keeps its contents and gets nothing new when the merge fails.
    let dir = tmp("existing");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), b"mine").unwrap();
    let (code, _, err) = pleas(&merge_args(
        &mlp64(0),
        &mlp64(1),
        &fashion_eval(),
        &dir,
        &["--budget", "3"],
    ));
    assert_eq!(code, 2, "{err}");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [OsString::from("keep.txt")]);
}

/// Every way of turning the budget into ratios runs and stays within the budget; group weights
/// from a file must name every group.
#[test]
fn ratio_schedules_meet_the_budget() {
    let eval = fashion_eval();
    for (i, extra) in [
        vec!["--ratios", "stages", "--budget", "1.6"],
        vec!["--ratios", "weighted", "--budget", "1.3"],
        vec![
            "--ratios",
            "uniform",
            "--budget",
            "1.3",
            "--metric",
            "correlation",
        ],
        vec![
            "--ratios",
            "uniform",
            "--budget",
            "1.3",
            "--matching",
            "weight",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp(&format!("ratios{i}"));
        let _ = std::fs::remove_dir_all(&out);
        let mut args = merge_args(&mlp64(0), &mlp64(1), &eval, &out, &extra);
        args.extend(["--fit".into(), "none".into()]);
        let (code, _, err) = pleas(&args);
        assert_eq!(code, 0, "{extra:?}: {err}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        let budget = report["settings"]["budget"].as_f64().unwrap();
        let planned = report["planned_flop_ratio"].as_f64().unwrap();
        assert!(planned <= budget + 1e-9, "{extra:?}: {planned} > {budget}");
        assert!(planned >= 1.0, "{extra:?}: {planned}");
        std::fs::remove_dir_all(&out).unwrap();
    }
    let weights = tmp("weights.toml");
    std::fs::write(&weights, "\"layers.0\" = 1.0\nnonexistent = 2.0\n").unwrap();
    let out = tmp("ratios_bad");
    assert_fails_cleanly(
        &merge_args(
            &mlp64(0),
            &mlp64(1),
            &eval,
            &out,
            &[
                "--ratios",
                "weighted",
                "--group-weights",
                weights.to_str().unwrap(),
                "--budget",
                "1.3",
            ],
        ),
        &out,
        &["weights.toml", "nonexistent"],
    );
}

/// `--json` streams one JSON event per line and ends with a summary.
#[test]
fn json_events_stream() {
    let out = tmp("json");
    let _ = std::fs::remove_dir_all(&out);
    let mut args = merge_args(&mlp64(0), &mlp64(1), &fashion_eval(), &out, &["--json"]);
    args.retain(|a| a != "--quiet");
    let (code, stdout, err) = pleas(&args);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "stage");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "step" && e["stage"] == "least squares")
    );
    assert_eq!(events.last().unwrap()["event"], "done");
    std::fs::remove_dir_all(&out).unwrap();
}

/// A merged model cannot be merged again (its layers are block-structured): a clear error.
#[test]
fn merged_models_are_not_merged_again() {
    let first = tmp("first");
    let _ = std::fs::remove_dir_all(&first);
    let (code, _, err) = pleas(&merge_args(
        &mlp64(0),
        &mlp64(1),
        &fashion_eval(),
        &first,
        &[],
    ));
    assert_eq!(code, 0, "{err}");
    let merged = first.join("merged.safetensors");
    let out = tmp("second");
    assert_fails_cleanly(
        &merge_args(&merged, &merged, &fashion_eval(), &out, &[]),
        &out,
        &["already a merged model"],
    );
    std::fs::remove_dir_all(&first).unwrap();
}
