//! The Gram update `C <- alpha * X^T X + beta * C` on the lower triangle (SYRK), half the work
//! of the equivalent GEMM.

use super::blocked::{self, Dest, Part, Shifts};
use super::error::KernelError;
use super::view::{MatMut, MatRef};

/// Scratch elements [`syrk_lower`] needs for `X` of `samples x dim`.
pub fn syrk_lower_scratch_len(samples: usize, dim: usize) -> usize {
    blocked::scratch_len(dim, dim, samples)
}

fn check(x: MatRef<'_, f32>, c: (usize, usize)) -> Result<(), KernelError> {
    if c != (x.cols(), x.cols()) {
        return Err(KernelError::ShapeMismatch {
            operands: "C vs X^T X",
            left: c,
            right: (x.cols(), x.cols()),
        });
    }
    Ok(())
}

/// `C <- alpha * X^T X + beta * C` for the elements with row >= column; the strict upper
/// triangle of `C` is neither read nor written. `X` is `samples x dim` (one sample per row),
/// `C` is `dim x dim`. `beta == 0` overwrites without reading.
pub fn syrk_lower(
    alpha: f32,
    x: MatRef<'_, f32>,
    beta: f32,
    mut c: MatMut<'_, f32>,
    scratch: &mut [f32],
) -> Result<(), KernelError> {
    check(x, c.shape())?;
    let needed = syrk_lower_scratch_len(x.rows(), x.cols());
    if scratch.len() < needed {
        return Err(KernelError::ScratchTooSmall {
            needed,
            provided: scratch.len(),
        });
    }
    blocked::scale(beta, &mut c, Part::Lower);
    if alpha != 0.0 {
        blocked::product_into(
            alpha,
            x.transpose(),
            x,
            c,
            Part::Lower,
            Shifts::default(),
            scratch,
        );
    }
    Ok(())
}

/// `C += (X - s)^T (X - s)` on the lower triangle, with `s` a per-column shift.
pub(crate) fn syrk_lower_shifted(
    x: MatRef<'_, f32>,
    shift: &[f32],
    c: Dest<'_>,
    scratch: &mut [f32],
) {
    blocked::product(
        1.0,
        x.transpose(),
        x,
        c,
        Part::Lower,
        Shifts {
            a_rows: Some(shift),
            b_cols: Some(shift),
        },
        scratch,
    );
}

/// Scalar twin of [`syrk_lower`]: each lower element is a dot product of two columns of `X`
/// accumulated in f32 in increasing sample order.
pub fn syrk_lower_reference(
    alpha: f32,
    x: MatRef<'_, f32>,
    beta: f32,
    mut c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    check(x, c.shape())?;
    let d = x.cols();
    for i in 0..d {
        for j in 0..=i {
            let mut dot = 0.0f32;
            for s in 0..x.rows() {
                dot += x.at(s, i) * x.at(s, j);
            }
            let old = c.at(i, j);
            *c.at_mut(i, j) = if beta == 0.0 {
                alpha * dot
            } else {
                alpha * dot + beta * old
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn blocked_lower_matches_reference_and_leaves_upper() {
        // Under Miri (`scripts/miri.sh`), thin shapes that still cross the sample block edge
        // (KC = 320) and a register tile edge (NR = 16); the GEMM test crosses MC.
        let shapes: &[(usize, usize)] = if cfg!(miri) {
            &[(1, 1), (5, 7), (321, 2), (2, 17)]
        } else {
            // (33, 1030): rows a page apart, so A is packed from B's panel (`blocked::FAR_ROWS`).
            &[(1, 1), (5, 7), (300, 17), (513, 130), (40, 200), (33, 1030)]
        };
        for &(n, d) in shapes {
            let mut s = 7u64;
            let x: Vec<f32> = (0..n * d)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect();
            let x = MatRef::new(&x, n, d).unwrap();
            let mut c1 = vec![f32::NAN; d * d];
            let mut c2 = vec![f32::NAN; d * d];
            let mut scratch = vec![0.0; syrk_lower_scratch_len(n, d)];
            syrk_lower(
                1.0,
                x,
                0.0,
                MatMut::new(&mut c1, d, d).unwrap(),
                &mut scratch,
            )
            .unwrap();
            syrk_lower_reference(1.0, x, 0.0, MatMut::new(&mut c2, d, d).unwrap()).unwrap();
            for i in 0..d {
                for j in 0..d {
                    let (a, b) = (c1[i * d + j], c2[i * d + j]);
                    if j > i {
                        assert!(a.is_nan() && b.is_nan());
                    } else {
                        assert!(
                            (a - b).abs() <= 1e-4 * (n as f32).sqrt(),
                            "{n}x{d} ({i},{j})"
                        );
                    }
                }
            }
        }
    }
}
