//! The safetensors parser and the model loader (architecture recognition from tensor names, or
//! the architecture embedded in the metadata) on arbitrary bytes: never panics, and every
//! failure is a typed error whose message (with its causes) formats. A file that loads as a
//! model has a graph that reads exactly its tensors with the right shapes; for small models one
//! forward pass on zeros runs without panicking; and the model saves as a file that loads back
//! as the same graph, weights and heads (or saving is refused with a typed error).
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::graph::{Op, cost};

fuzz_target!(|data: &[u8]| {
    // The in-memory parser first: a typed error or a file.
    if let Err(reason) = pleas::io::safetensors::parse(data) {
        assert!(!reason.is_empty());
    }
    // The whole loader goes through a file, as users do.
    let dir = std::env::temp_dir();
    let path = dir.join(format!("pleas-fuzz-{}.safetensors", std::process::id()));
    {
        let mut f = std::fs::File::create(&path).expect("temp file");
        f.write_all(data).expect("write");
    }
    match Model::load(&path, None) {
        Ok(model) => {
            assert!(model.graph.check_weights(&model.weights).is_ok());
            assert!(model.graph.unused_tensors(&model.weights).is_empty());
            assert_eq!(model.heads.len(), model.graph.outputs().len());
            if cost(&model.graph).macs < 2_000_000 {
                let x = vec![0.0f32; model.graph.input_shape().len()];
                if let Ok(mut fwd) = Forward::new(&model.graph, &model.weights) {
                    let _ = fwd.logits(&x, 1);
                }
            }
            let saved = dir.join(format!(
                "pleas-fuzz-saved-{}.safetensors",
                std::process::id()
            ));
            match model.save(&saved) {
                Ok(()) => {
                    let back = Model::load(&saved, None).expect("a saved model loads");
                    let nan_eps = model
                        .graph
                        .nodes()
                        .iter()
                        .any(|n| matches!(n.op, Op::BatchNorm { eps, .. } if eps.is_nan()));
                    if !nan_eps {
                        assert_eq!(back.graph, model.graph);
                    }
                    assert_eq!(back.weights, model.weights);
                    assert_eq!(back.heads, model.heads);
                }
                Err(e) => {
                    // Only a graph the architecture format cannot express.
                    assert!(
                        matches!(e, pleas::error::Error::Metadata { .. }),
                        "{}",
                        pleas::error::chain(&e)
                    );
                }
            }
            let _ = std::fs::remove_file(&saved);
        }
        Err(e) => {
            assert!(!pleas::error::chain(&e).is_empty());
        }
    }
    let _ = std::fs::remove_file(&path);
});
