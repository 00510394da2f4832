//! The `pleas` binary as a process: exit codes and where output goes.

use std::process::Command;

fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/fashion")
        .join(rel)
}

#[test]
fn inspect_succeeds_and_a_bad_file_exits_2_with_one_stderr_line() {
    let exe = env!("CARGO_BIN_EXE_pleas");
    let ok = Command::new(exe)
        .args(["inspect", "--json"])
        .arg(fixture("mlp64_split/fashion_mlp_split_m0_s6.safetensors"))
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["groups"].as_array().unwrap().len(), 2);
    assert!(ok.stderr.is_empty());

    let bad = Command::new(exe)
        .args(["inspect"])
        .arg(fixture("../README.md"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("README.md"),
        "{err}"
    );
    assert!(bad.stdout.is_empty());
}
