//! The error of the f32 matrix-product kernels.

use core::fmt;

/// Why a GEMM or SYRK call was rejected. Nothing is written to the output on error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelError {
    /// Operand shapes do not agree; both shapes are given as `(rows, cols)` after `op`.
    ShapeMismatch {
        /// Which pair of operands disagrees, e.g. `"op(A) * op(B)"` or `"C vs op(A) * op(B)"`.
        operands: &'static str,
        /// Shape of the left operand.
        left: (usize, usize),
        /// Shape of the right operand.
        right: (usize, usize),
    },
    /// The caller's scratch is shorter than the `*_scratch_len` query asks for.
    ScratchTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        provided: usize,
    },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KernelError::ShapeMismatch {
                operands,
                left,
                right,
            } => write!(
                f,
                "shape mismatch in {operands}: {}x{} vs {}x{}",
                left.0, left.1, right.0, right.1
            ),
            KernelError::ScratchTooSmall { needed, provided } => write!(
                f,
                "scratch too small: {needed} elements needed, {provided} provided"
            ),
        }
    }
}

impl core::error::Error for KernelError {}
