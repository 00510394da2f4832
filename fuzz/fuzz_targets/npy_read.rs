//! The `.npy` reader on arbitrary bytes: never panics, and whatever it accepts survives a
//! write-and-read round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pleas::io::npy::{parse, to_bytes};

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = parse(data) {
        let again = parse(&to_bytes(&t)).expect("our own output parses");
        assert_eq!(again.shape, t.shape);
        assert_eq!(again.dtype, t.dtype);
        assert_eq!(again.bytes, t.bytes);
    }
});
