//! General f32 matrix product `C <- alpha * op(A) op(B) + beta * C`.

use super::blocked::{self, Dest, Part, Shifts};
use super::error::KernelError;
use super::view::{MatMut, MatRef};

/// Whether a GEMM operand is used as given or transposed (BLAS's `trans` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// As given: `op(X) = X`.
    No,
    /// Transposed: `op(X) = X^T`.
    Yes,
}

impl Transpose {
    fn apply<'a>(self, x: MatRef<'a, f32>) -> MatRef<'a, f32> {
        match self {
            Transpose::No => x,
            Transpose::Yes => x.transpose(),
        }
    }
}

/// Scratch elements [`gemm`] needs for `op(A)` of `m x k` and `op(B)` of `k x n`.
pub fn gemm_scratch_len(m: usize, n: usize, k: usize) -> usize {
    blocked::scratch_len(m, n, k)
}

fn check_shapes(
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    c: (usize, usize),
) -> Result<(), KernelError> {
    if a.cols() != b.rows() {
        return Err(KernelError::ShapeMismatch {
            operands: "op(A) * op(B)",
            left: a.shape(),
            right: b.shape(),
        });
    }
    if c != (a.rows(), b.cols()) {
        return Err(KernelError::ShapeMismatch {
            operands: "C vs op(A) * op(B)",
            left: c,
            right: (a.rows(), b.cols()),
        });
    }
    Ok(())
}

/// `C <- alpha * op(A) op(B) + beta * C`, blocked and vectorised.
///
/// `beta == 0` overwrites `C` without reading it (BLAS convention). `scratch` must hold at
/// least [`gemm_scratch_len`]`(m, n, k)` elements; its contents on entry do not matter.
pub fn gemm(
    alpha: f32,
    a: MatRef<'_, f32>,
    op_a: Transpose,
    b: MatRef<'_, f32>,
    op_b: Transpose,
    beta: f32,
    mut c: MatMut<'_, f32>,
    scratch: &mut [f32],
) -> Result<(), KernelError> {
    let (a, b) = (op_a.apply(a), op_b.apply(b));
    check_shapes(a, b, c.shape())?;
    let needed = gemm_scratch_len(a.rows(), b.cols(), a.cols());
    if scratch.len() < needed {
        return Err(KernelError::ScratchTooSmall {
            needed,
            provided: scratch.len(),
        });
    }
    blocked::scale(beta, &mut c, Part::Full);
    if alpha != 0.0 {
        blocked::product_into(alpha, a, b, c, Part::Full, Shifts::default(), scratch);
    }
    Ok(())
}

/// The cross update `R += X^T T` for samples `X` (`n x d`) and targets `T` (`n x t`), i.e.
/// [`gemm`]`(1, X, Transpose, T, Identity, 1, R)`. Scratch as [`gemm_scratch_len`]`(d, t, n)`.
pub fn cross_update(
    x: MatRef<'_, f32>,
    t: MatRef<'_, f32>,
    r: MatMut<'_, f32>,
    scratch: &mut [f32],
) -> Result<(), KernelError> {
    gemm(1.0, x, Transpose::Yes, t, Transpose::No, 1.0, r, scratch)
}

/// `C += alpha * (op(A) - sa) (op(B) - sb)` with a per-row shift `sa` of `op(A)` and a
/// per-column shift `sb` of `op(B)`, for the centred cross products of the Gram accumulator.
pub(crate) fn gemm_shifted(
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    c: Dest<'_>,
    shifts: Shifts<'_>,
    scratch: &mut [f32],
) {
    blocked::product(alpha, a, b, c, Part::Full, shifts, scratch);
}

/// Scalar twin of [`gemm`]: the textbook triple loop, accumulating each dot product in f32 in
/// increasing `k`. Same contract (including `beta == 0`), no scratch.
pub fn gemm_reference(
    alpha: f32,
    a: MatRef<'_, f32>,
    op_a: Transpose,
    b: MatRef<'_, f32>,
    op_b: Transpose,
    beta: f32,
    mut c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    let (a, b) = (op_a.apply(a), op_b.apply(b));
    check_shapes(a, b, c.shape())?;
    for i in 0..a.rows() {
        for j in 0..b.cols() {
            let mut dot = 0.0f32;
            for p in 0..a.cols() {
                dot += a.at(i, p) * b.at(p, j);
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

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn blocked_matches_reference_across_block_edges() {
        // Under Miri (`scripts/miri.sh`), thin shapes that still cross every block edge
        // (MR = 6, NR = 16, MC = 120, KC = 320) at a tiny fraction of the work.
        let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
            &[(1, 1, 1), (7, 17, 9), (2, 3, 321), (121, 2, 2)]
        } else {
            &[(1, 1, 1), (7, 17, 9), (97, 33, 300), (13, 130, 513)]
        };
        let ops = [
            (Transpose::No, Transpose::No),
            (Transpose::Yes, Transpose::No),
            (Transpose::No, Transpose::Yes),
        ];
        for (i, &(m, n, k)) in shapes.iter().enumerate() {
            // Under Miri, one transposition case per shape, in turn.
            let cases = if cfg!(miri) {
                &ops[i % 3..i % 3 + 1]
            } else {
                &ops[..]
            };
            for &(op_a, op_b) in cases {
                let a = lcg(m * k, 1);
                let b = lcg(k * n, 2);
                let (ar, ac) = if op_a == Transpose::No {
                    (m, k)
                } else {
                    (k, m)
                };
                let (br, bc) = if op_b == Transpose::No {
                    (k, n)
                } else {
                    (n, k)
                };
                let a = MatRef::new(&a, ar, ac).unwrap();
                let b = MatRef::new(&b, br, bc).unwrap();
                let mut c1 = lcg(m * n, 3);
                let mut c2 = c1.clone();
                let mut scratch = vec![0.0; gemm_scratch_len(m, n, k)];
                gemm(
                    0.5,
                    a,
                    op_a,
                    b,
                    op_b,
                    2.0,
                    MatMut::new(&mut c1, m, n).unwrap(),
                    &mut scratch,
                )
                .unwrap();
                gemm_reference(
                    0.5,
                    a,
                    op_a,
                    b,
                    op_b,
                    2.0,
                    MatMut::new(&mut c2, m, n).unwrap(),
                )
                .unwrap();
                for (x, y) in c1.iter().zip(&c2) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (k as f32).sqrt(),
                        "{m}x{n}x{k}: {x} vs {y}"
                    );
                }
            }
        }
    }
}
