//! Ridge least squares on arbitrary normal equations: never panics; the result is finite
//! weights with a finite, non-negative residual, or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::lstsq::{NormalEquations, RidgeParams, ridge_solve, ridge_solve_scratch_len};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let d = usize::from(data[0] % 8) + 1;
    let t = usize::from(data[1] % 4) + 1;
    let ncols = usize::from(data[2]) % (d + 1);
    let ntargets = usize::from(data[3]) % (t + 1);
    let mut values = data[4..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")));
    let mut next = || values.next().unwrap_or(0.5);
    // Either a raw (possibly indefinite, non-finite) Gram, or one built from samples.
    let mut gram = vec![0.0; d * d];
    let mut cross = vec![0.0; d * t];
    let sq: Vec<f64> = (0..t).map(|_| next()).collect();
    for v in gram.iter_mut().chain(cross.iter_mut()) {
        *v = next();
    }
    let cols: Vec<usize> = (0..ncols)
        .map(|i| (i * 7 + usize::from(data[2])) % d)
        .collect();
    let targets: Vec<usize> = (0..ntargets)
        .map(|i| (i + usize::from(data[3])) % t)
        .collect();
    let eqs = NormalEquations {
        gram: MatRef::new(&gram, d, d).expect("sized"),
        cross: MatRef::new(&cross, d, t).expect("sized"),
        target_sq_sums: &sq,
    };
    let mut w = vec![f64::NAN; ntargets * ncols];
    let mut scratch = vec![0.0; ridge_solve_scratch_len(ncols, ntargets)];
    let result = ridge_solve(
        eqs,
        &cols,
        &targets,
        RidgeParams::default(),
        MatMut::new(&mut w, ntargets, ncols).expect("sized"),
        &mut scratch,
    );
    if let Ok(info) = result {
        assert!(w.iter().all(|v| v.is_finite()), "non-finite weights {w:?}");
        assert!(info.ridge.is_finite() && info.ridge >= 0.0);
        assert!(
            info.relative_residual.is_nan() || info.relative_residual >= 0.0,
            "negative residual {}",
            info.relative_residual
        );
    }
});
