//! The safetensors parser and architecture recognition on arbitrary bytes: never panics; a
//! file that loads as a model has a graph whose tensors all exist with the right shapes, and
//! for small models one forward pass on zeros gives finite-or-not logits without panicking.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::graph::cost;

fuzz_target!(|data: &[u8]| {
    // The in-memory parser first: a typed error or a file.
    let _ = pleas::io::safetensors::parse(data);
    // The whole loader goes through a file, as users do.
    let path = std::env::temp_dir().join(format!("pleas-fuzz-{}.safetensors", std::process::id()));
    {
        let mut f = std::fs::File::create(&path).expect("temp file");
        f.write_all(data).expect("write");
    }
    if let Ok(model) = Model::load(&path, None) {
        assert!(model.graph.check_weights(&model.weights).is_ok());
        if cost(&model.graph).macs < 2_000_000 {
            let x = vec![0.0f32; model.graph.input_shape().len()];
            if let Ok(mut fwd) = Forward::new(&model.graph, &model.weights) {
                let _ = fwd.logits(&x, 1);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
