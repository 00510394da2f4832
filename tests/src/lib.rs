//! Shared helpers of the `pleas` integration and property tests: the tolerance table, matrix
//! strategies and f64 oracles, the in-process CLI runner and scratch directories.

pub mod assignment;
pub mod cli;
pub mod compact;
pub mod conv_blocks;
pub mod matrices;
pub mod models;
pub mod npy_data;
pub mod onnx;
pub mod oracle;
pub mod rng;
pub mod scratch;
pub mod simd_paths;
pub mod spd;
pub mod split_task;
pub mod strided_f64;
pub mod tolerance;

/// A proptest configuration running `cases` cases by default; the `PROPTEST_CASES` environment
/// variable, when set, overrides it (for the longer runs: `PROPTEST_CASES=2000 cargo test`).
pub fn config(cases: u32) -> proptest::prelude::ProptestConfig {
    let mut c = proptest::prelude::ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}
