//! The Gram accumulator on arbitrary batches: it never panics; a batch with a NaN or infinity is
//! rejected with the position of the first one and changes nothing, and so is a value too large
//! for the f32 block products; otherwise the moments read back are finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pleas_core::gram::{GramAccumulator, GramError, GramParams, Operand};
use pleas_core::linalg::{MatMut, MatRef};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let dim = usize::from(data[0] % 9) + 1;
    let block = usize::from(data[1] % 17) + 1;
    let batch_rows = usize::from(data[2] % 7) + 1;
    let values: Vec<f32> = data[3..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let rows = values.len() / dim;
    let mut acc = GramAccumulator::new_owned(dim, 0, GramParams::with_block_samples(block));
    let mut counted = 0u64;
    for start in (0..rows).step_by(batch_rows) {
        let n = (rows - start).min(batch_rows);
        let batch = &values[start * dim..(start + n) * dim];
        let x = MatRef::new(batch, n, dim).expect("sized");
        match acc.push(x, None) {
            Ok(()) => {
                assert!(batch.iter().all(|v| v.abs() <= acc.value_limit()));
                counted += n as u64;
            }
            Err(GramError::NonFinite {
                operand: Operand::Samples,
                sample,
                column,
            }) => {
                let local = (sample - counted) as usize;
                let first = batch
                    .iter()
                    .position(|v| !v.is_finite())
                    .expect("a bad value");
                assert_eq!((local, column), (first / dim, first % dim));
            }
            Err(GramError::OutOfRange {
                operand: Operand::Samples,
                sample,
                column,
                limit,
            }) => {
                let local = (sample - counted) as usize;
                let first = batch
                    .iter()
                    .position(|v| v.is_nan() || v.abs() > limit)
                    .expect("a big value");
                assert_eq!((local, column), (first / dim, first % dim));
                assert!(batch[first].is_finite());
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        assert_eq!(acc.count(), counted);
    }
    let mut g = vec![0.0f64; dim * dim];
    acc.write_gram(MatMut::new(&mut g, dim, dim).expect("sized"))
        .expect("shape");
    for i in 0..dim {
        // Accepted values are bounded, so every moment is finite and diagonals are sums of
        // squares (up to rounding of the re-centring, relative to the entry's size).
        let d = g[i * dim + i];
        assert!(d.is_finite(), "non-finite diagonal {d}");
        assert!(d >= -1e-6 * d.abs().max(1.0), "negative diagonal {d}");
    }
});
