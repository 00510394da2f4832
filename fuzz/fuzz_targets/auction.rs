//! The auction on arbitrary score matrices: it never panics; a matrix with a NaN or infinity is
//! rejected with the position of the first one; otherwise every row gets its own column, and
//! for small integer matrices the total equals the brute-force optimum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pleas_core::assign::{AuctionError, AuctionParams, auction, auction_scratch_len};
use pleas_core::linalg::MatRef;

fn brute_force(s: &[f64], rows: usize, cols: usize, i: usize, used: u32) -> f64 {
    if i == rows {
        return 0.0;
    }
    (0..cols)
        .filter(|j| used & (1 << j) == 0)
        .map(|j| s[i * cols + j] + brute_force(s, rows, cols, i + 1, used | (1 << j)))
        .fold(f64::NEG_INFINITY, f64::max)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cols = usize::from(data[0] % 24);
    let rows = if cols == 0 {
        0
    } else {
        usize::from(data[1]) % (cols + 1)
    };
    // Even first byte: raw f32 bits (NaN, infinities, denormals...); odd: small integers.
    let raw = data[0] % 2 == 0;
    let values: Vec<f32> = if raw {
        data[2..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data[2..].iter().map(|&b| f32::from(b as i8 % 8)).collect()
    };
    if values.len() < rows * cols {
        return;
    }
    let s = &values[..rows * cols];
    let mut perm = vec![usize::MAX; rows];
    let mut scratch = vec![0.0; auction_scratch_len(cols)];
    let m = MatRef::new(s, rows, cols).expect("sized");
    match auction(m, &AuctionParams::default(), &mut perm, &mut scratch) {
        Ok(info) => {
            assert!(s.iter().all(|v| v.is_finite()));
            let mut seen = vec![false; cols];
            for &j in &perm {
                assert!(j < cols && !seen[j], "not a permutation: {perm:?}");
                seen[j] = true;
            }
            if !raw && cols <= 7 {
                let w: Vec<f64> = s.iter().map(|&v| f64::from(v)).collect();
                let total: f64 = perm.iter().enumerate().map(|(i, &j)| w[i * cols + j]).sum();
                assert!(info.integer);
                assert_eq!(total, brute_force(&w, rows, cols, 0, 0));
            }
        }
        Err(AuctionError::NonFinite { row, col, .. }) => {
            let first = s.iter().position(|v| !v.is_finite()).expect("a bad value");
            assert_eq!(first, row * cols + col);
        }
        Err(other) => panic!("unexpected error {other}"),
    }
});
