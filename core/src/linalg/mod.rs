//! Dense linear algebra: strided views, blocked f32 GEMM and SYRK with `wide` SIMD
//! micro-kernels, blocked f64 Cholesky and triangular solves, and the same for symmetric
//! matrices in packed storage.
//!
//! Every kernel has a scalar twin (`*_reference`) with the same contract, used by the tests as
//! the first oracle. Kernels never allocate: callers pass scratch sized by `*_scratch_len`.

pub(crate) mod blocked;
pub mod cholesky;
mod error;
pub mod finite;
pub mod gemm;
pub(crate) mod lanes;
mod microkernel;
mod pack;
pub mod packed;
mod prefetch;
pub mod rows_product;
pub mod symm;
pub mod syrk;
pub mod triangular;
pub mod view;

pub use cholesky::{
    CholeskyError, CholeskyInfo, CholeskyParams, cholesky_in_place, cholesky_reference,
};
pub use error::KernelError;
pub use finite::{
    all_finite, all_finite_reference, all_within, all_within_reference, first_non_finite,
    first_outside,
};
pub use gemm::{Transpose, cross_update, gemm, gemm_reference, gemm_scratch_len};
pub use microkernel::LANES;
pub use packed::{PackedError, cholesky_packed, packed_index, packed_len, solve_packed};
pub use rows_product::{Rows, rows_at_b, rows_at_b_reference};
pub use symm::{symm_rows, symm_rows_reference};
pub use syrk::{syrk_lower, syrk_lower_reference, syrk_lower_scratch_len};
pub use triangular::{
    TriangularError, solve_lower_in_place, solve_lower_reference, solve_lower_transpose_in_place,
    solve_lower_transpose_reference,
};
pub use view::{MatMut, MatRef, ViewError};
