//! The Gram update `C <- alpha * X^T X + beta * C` on the lower triangle (SYRK), half the work
//! of the equivalent GEMM.

use super::blocked::{self, Part, Shifts};
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
        blocked::product(
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
    c: MatMut<'_, f32>,
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
