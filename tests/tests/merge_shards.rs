//! Shards of a fixed number of samples: their number grows with the merge data (so every core
//! of a large machine gets work) and never depends on the thread count, so a merge writes the
//! same bytes with any number of threads, spilling or not.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pleas::cli::run;
use pleas::io::safetensors::{self, Metadata};
use pleas::merge::settings::SHARD_SAMPLES;
use pleas::par::shard_ranges;
use pleas_tests::models::{fashion_eval, fixtures};
use pleas_tests::scratch::TempDir;

#[test]
fn the_shard_plan_grows_with_the_data() {
    for n in [1, 63, 64, 65, 1000, 100_000] {
        let shards = shard_ranges(n, SHARD_SAMPLES);
        assert_eq!(shards.len(), n.div_ceil(SHARD_SAMPLES), "{n} samples");
        // Consecutive, covering every sample once, all of the fixed size but the last.
        let mut next = 0;
        for (k, s) in shards.iter().enumerate() {
            assert_eq!(s.start, next);
            assert!(!s.is_empty());
            if k + 1 < shards.len() {
                assert_eq!(s.len(), SHARD_SAMPLES);
            }
            next = s.end;
        }
        assert_eq!(next, n);
    }
    assert!(shard_ranges(100_000, SHARD_SAMPLES).len() >= 64);
    assert_eq!(shard_ranges(0, SHARD_SAMPLES), vec![0..0]);
}

/// The first `n` merge samples of the fixture data in a file of their own.
fn merge_data(dir: &Path, n: usize) -> PathBuf {
    let file = safetensors::read(&fashion_eval()).unwrap();
    let mut t = file.tensors["x_match"].clone();
    let per = t.bytes.len() / t.shape[0];
    assert!(t.shape[0] >= n);
    t.shape[0] = n;
    t.bytes.truncate(n * per);
    let mut tensors = BTreeMap::new();
    tensors.insert("x_match".to_string(), t);
    let path = dir.join("data.safetensors");
    std::fs::write(&path, safetensors::raw_to_bytes(&tensors, &Metadata::new())).unwrap();
    path
}

fn rn20(i: usize) -> PathBuf {
    fixtures().join(format!(
        "fashion/rn20w1_split/fashion_resnet20_w1_split_m{i}_s{}.safetensors",
        2 + i
    ))
}

/// `pleas merge` of the ResNet-20 fixture pair; returns the bytes of `merged.safetensors` and
/// whether the matching recorded the layer outputs (report.json).
fn merged_bytes(dir: &Path, data: &Path, threads: usize, memory_mib: usize) -> (Vec<u8>, bool) {
    let out = dir.join(format!("out-{threads}-{memory_mib}"));
    let args: Vec<OsString> = [
        "pleas".into(),
        "merge".into(),
        rn20(0).into_os_string(),
        rn20(1).into_os_string(),
        "--data".into(),
        data.as_os_str().to_owned(),
        "-o".into(),
        out.as_os_str().to_owned(),
        "--budget".into(),
        "1.2".into(),
        "--bn".into(),
        "keep".into(),
        "--batch".into(),
        "24".into(),
        "--threads".into(),
        threads.to_string().into(),
        "--memory".into(),
        memory_mib.to_string().into(),
        "--quiet".into(),
    ]
    .into_iter()
    .collect();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = run(args, &mut stdout, &mut stderr);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let recorded = report["settings"]["recorded_layer_outputs"]
        .as_bool()
        .unwrap();
    (
        std::fs::read(out.join("merged.safetensors")).unwrap(),
        recorded,
    )
}

/// 200 samples make four shards (three of 64 and one of 8) with chunks of 24 that do not
/// divide a shard; 1, 2 and 3 threads (3 does not divide the shard count either), in memory
/// and with `--memory 0` (every live activation spilled), write identical files. With
/// `--memory 1024` the matching records A's and B's layer outputs (245 MB) for the
/// least-squares passes, which read them instead of running A and B again: the same bytes.
#[test]
fn merged_files_are_identical_for_one_two_and_three_threads() {
    let dir = TempDir::new("merge-shards", "threads");
    let data = merge_data(dir.path(), 200);
    assert_eq!(shard_ranges(200, SHARD_SAMPLES).len(), 4);
    let (one, recorded) = merged_bytes(dir.path(), &data, 1, 128);
    assert!(
        !recorded,
        "245 MB of layer outputs are recorded within 64 MB"
    );
    for (threads, memory) in [(2, 128), (3, 128), (3, 0), (1, 1024), (3, 1024)] {
        let (other, recorded) = merged_bytes(dir.path(), &data, threads, memory);
        assert_eq!(recorded, memory == 1024, "--memory {memory}");
        assert!(
            one == other,
            "{threads} threads, --memory {memory}: merged.safetensors differs from one thread's"
        );
    }
}
