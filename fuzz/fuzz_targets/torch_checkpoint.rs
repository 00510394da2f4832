//! The PyTorch checkpoint reader (zip container, restricted unpickler, tensor gathering) on
//! arbitrary bytes: never panics; every tensor it returns holds exactly the bytes its shape and
//! dtype say; every failure is a typed error whose message formats. A pickle that names a
//! global outside the weights-only list is refused with that global's name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pleas::io::torch::TorchError;
use pleas::io::torch::checkpoint::parse;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(c) => {
            for (name, t) in &c.tensors {
                let numel: usize = t.shape.iter().product();
                let size = t.dtype.size().expect("gathered tensors have a known dtype");
                assert_eq!(t.bytes.len(), numel * size, "{name}");
            }
        }
        Err(e) => {
            if let TorchError::ForbiddenGlobal { module, name } = &e {
                assert!(e.to_string().contains(&format!("`{module}.{name}`")));
            }
            assert!(!pleas::error::chain(&e).is_empty());
        }
    }
    // The bare unpickler too (most mutations of a zip never reach it).
    let _ = pleas::io::torch::pickle::unpickle(data);
});
