//! Ridge least squares on arbitrary normal equations: raw (possibly indefinite, non-finite)
//! sums, or sums of samples (positive semi-definite by construction), with default or
//! arbitrary ridge parameters and column/target lists (possibly out of range or repeated). It
//! never panics, and
//! - on success: the weights are finite, the ridge finite and non-negative, the residual
//!   non-negative (or NaN for raw target sums), and the weights solve
//!   `(G[c, c] + ridge I) W^T = R[c, targets]` to the backward error of a Cholesky solve,
//!   `8 (k + 1) eps (trace(G[c, c] + ridge I) ||w_o|| + ||R[c, o]||)` per target (plus a
//!   few subnormal spacings for sums and solutions that underflow);
//! - on error: the weights are untouched, and the error's location is right (the first
//!   non-finite element it names is non-finite, the index it names is out of range or
//!   repeated, the failing pivot is one of the chosen columns);
//! - sums of moderate samples (values `k / 16`, `|k| <= 128`) with the default ridge are
//!   solved unless every chosen column is identically zero (then the relative ridge is 0).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::lstsq::{
    IndexList, LstsqError, NormalEquations, Operand, RidgeParams, ridge_solve,
    ridge_solve_scratch_len,
};

/// The input's bytes after the header, zeros past its end.
struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }

    fn f64(&mut self) -> f64 {
        f64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }
}

/// Euclidean norm, scaled so that squares neither underflow nor overflow.
fn norm(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(0.0f64, |m, x| m.max(x.abs()));
    if m == 0.0 || !m.is_finite() {
        return m;
    }
    m * v.map(|x| (x / m) * (x / m)).sum::<f64>().sqrt()
}

fn gram_at(g: &[f64], d: usize, i: usize, j: usize) -> f64 {
    if i >= j { g[i * d + j] } else { g[j * d + i] }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let d = usize::from(data[0] % 8) + 1;
    let t = usize::from(data[1] % 4) + 1;
    let ncols = usize::from(data[2]) % (d + 1);
    let ntargets = usize::from(data[3]) % (t + 1);
    // Mode: bit 0 sums of samples, bit 1 moderate sample values (with bit 0), bit 2 arbitrary
    // ridge parameters, bit 3 arbitrary index lists, bits 4-7 samples - 1.
    let mode = data[4];
    let from_samples = mode & 1 != 0;
    let moderate = from_samples && mode & 2 != 0;
    let mut bytes = Bytes(data[5..].iter());
    let mut params = RidgeParams::default();
    let default_params = mode & 4 == 0;
    if !default_params {
        const TABLE: [f64; 12] = [
            0.0,
            -1e-6,
            f64::NAN,
            f64::INFINITY,
            1e-300,
            1e-12,
            1e-3,
            1.0,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ];
        let pick = |b: u8, default: f64| TABLE.get(usize::from(b)).copied().unwrap_or(default);
        params = params
            .with_relative_ridge(pick(bytes.byte(), 1e-6))
            .with_absolute_ridge(pick(bytes.byte(), 0.0))
            .with_max_retries(u32::from(bytes.byte() % 8));
    }
    let (cols, targets): (Vec<usize>, Vec<usize>) = if mode & 8 != 0 {
        // Indices up to one past the bound, repeats allowed.
        (
            (0..ncols)
                .map(|_| usize::from(bytes.byte()) % (d + 1))
                .collect(),
            (0..ntargets)
                .map(|_| usize::from(bytes.byte()) % (t + 1))
                .collect(),
        )
    } else {
        (
            (0..ncols)
                .map(|i| (i * 7 + usize::from(data[2])) % d)
                .collect(),
            (0..ntargets)
                .map(|i| (i + usize::from(data[3])) % t)
                .collect(),
        )
    };
    let mut gram = vec![0.0; d * d];
    let mut cross = vec![0.0; d * t];
    let mut sq = vec![0.0; t];
    if from_samples {
        // G = X^T X, R = X^T T, sq = sum t^2 over `n` samples of `d` inputs and `t` targets.
        let n = usize::from(mode >> 4) + 1;
        let mut value = || {
            if moderate {
                f64::from(bytes.byte() as i8) / 16.0
            } else {
                bytes.f64()
            }
        };
        for _ in 0..n {
            let x: Vec<f64> = (0..d).map(|_| value()).collect();
            let y: Vec<f64> = (0..t).map(|_| value()).collect();
            for i in 0..d {
                for j in 0..d {
                    gram[i * d + j] += x[i] * x[j];
                }
                for o in 0..t {
                    cross[i * t + o] += x[i] * y[o];
                }
            }
            for o in 0..t {
                sq[o] += y[o] * y[o];
            }
        }
    } else {
        for v in sq.iter_mut().chain(gram.iter_mut()).chain(cross.iter_mut()) {
            *v = bytes.f64();
        }
    }
    let eqs = NormalEquations {
        gram: MatRef::new(&gram, d, d).expect("sized"),
        cross: MatRef::new(&cross, d, t).expect("sized"),
        target_sq_sums: &sq,
    };
    let (k, m) = (cols.len(), targets.len());
    let mut w = vec![f64::NAN; m * k];
    let mut scratch = vec![0.0; ridge_solve_scratch_len(k, m)];
    let result = ridge_solve(
        eqs,
        &cols,
        &targets,
        params,
        MatMut::new(&mut w, m, k).expect("sized"),
        &mut scratch,
    );
    match result {
        Ok(info) => {
            assert!(w.iter().all(|v| v.is_finite()), "non-finite weights {w:?}");
            assert!(info.ridge.is_finite() && info.ridge >= 0.0);
            assert!(
                info.relative_residual >= 0.0 || (!from_samples && info.relative_residual.is_nan()),
                "residual {}",
                info.relative_residual
            );
            // Backward error of the solve, per target.
            let ridge = info.ridge;
            let trace: f64 = cols.iter().map(|&c| gram[c * d + c] + ridge).sum();
            for (oi, &o) in targets.iter().enumerate() {
                let wo = &w[oi * k..(oi + 1) * k];
                let residuals: Vec<f64> = cols
                    .iter()
                    .enumerate()
                    .map(|(a, &ca)| {
                        let aw: f64 = cols
                            .iter()
                            .enumerate()
                            .map(|(b, &cb)| {
                                (gram_at(&gram, d, ca, cb) + if a == b { ridge } else { 0.0 })
                                    * wo[b]
                            })
                            .sum();
                        aw - cross[ca * t + o]
                    })
                    .collect();
                let res = norm(residuals.iter().copied());
                // Gradual underflow (sums or solutions below the smallest normal numbers) adds
                // absolute errors of a few subnormal spacings to each operation: to the factor
                // (a perturbation of `G` times `w`) and to the substitutions (times `L`).
                let tiny = 8.0
                    * ((k + 1) * (k + 1)) as f64
                    * (1.0 + trace.abs() + trace.abs().sqrt())
                    * (1.0 + norm(wo.iter().copied()))
                    * f64::from_bits(1);
                let bound = 8.0
                    * (k + 1) as f64
                    * f64::EPSILON
                    * (trace.abs() * norm(wo.iter().copied())
                        + norm(cols.iter().map(|&c| cross[c * t + o])))
                    + tiny;
                if res.is_finite() && bound.is_finite() {
                    assert!(
                        res <= bound,
                        "target {o}: residual of the normal equations {res:e} above {bound:e}"
                    );
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(w.iter().all(|v| v.is_nan()), "weights written on error {e}");
            match e {
                LstsqError::NonFinite { operand, row, col } => {
                    let (v, read) = match operand {
                        // A diagonal element may also be finite with the ridge overflowing it.
                        Operand::Gram => (
                            if row == col {
                                f64::NAN
                            } else {
                                gram[row * d + col]
                            },
                            row >= col && cols.contains(&row) && cols.contains(&col),
                        ),
                        Operand::Cross => (
                            cross[row * t + col],
                            cols.contains(&row) && targets.contains(&col),
                        ),
                        Operand::TargetSqSums => (sq[row], col == 0 && targets.contains(&row)),
                        Operand::Weights => panic!("weights reported non-finite"),
                    };
                    assert!(read && !v.is_finite(), "{e}: value {v}");
                    assert!(!moderate, "moderate samples: {e}");
                }
                LstsqError::IndexOutOfRange {
                    list,
                    position,
                    index,
                    bound,
                } => {
                    let (l, b) = match list {
                        IndexList::Cols => (&cols, d),
                        IndexList::Targets => (&targets, t),
                    };
                    assert!(l[position] == index && index >= bound && bound == b, "{e}");
                }
                LstsqError::DuplicateIndex {
                    list,
                    index,
                    first,
                    second,
                } => {
                    let l = match list {
                        IndexList::Cols => &cols,
                        IndexList::Targets => &targets,
                    };
                    assert!(
                        first < second && l[first] == index && l[second] == index,
                        "{e}"
                    );
                }
                LstsqError::NotPositiveDefinite { index, column, .. } => {
                    assert!(index < k && cols[index] == column, "{e}");
                    if moderate && default_params {
                        assert!(
                            cols.iter().all(|&c| gram[c * d + c] == 0.0),
                            "sums of samples not solved: {e}"
                        );
                    }
                }
                LstsqError::InvalidRidge { .. } => assert!(!default_params, "{e}"),
                LstsqError::SolutionOverflow { target, .. } => {
                    assert!(target < m, "{e}");
                    assert!(!moderate, "moderate samples overflowed: {e}");
                }
                other => panic!("unexpected error {other}"),
            }
        }
    }
});
