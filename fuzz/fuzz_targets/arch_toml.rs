//! The TOML architecture file on arbitrary text, against the weights of a small real
//! convolutional network: never panics; an accepted graph passes its own weight check.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pleas::io::arch::toml_file::parse;
use pleas_core::graph::{Tensor, Weights};

fn weights() -> &'static Weights {
    static W: OnceLock<Weights> = OnceLock::new();
    W.get_or_init(|| {
        let t = |shape: Vec<usize>| {
            let n = shape.iter().product();
            Tensor::new(shape, vec![0.5; n]).expect("sized")
        };
        let mut w = Weights::new();
        w.insert("conv1.weight".into(), t(vec![4, 1, 3, 3]));
        for p in ["weight", "bias", "running_mean", "running_var"] {
            w.insert(format!("bn1.{p}"), t(vec![4]));
        }
        w.insert("head.weight".into(), t(vec![3, 4]));
        w.insert("head.bias".into(), t(vec![3]));
        w
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(graph) = parse(text, weights()) {
        let _ = graph.check_weights(weights());
    }
});
