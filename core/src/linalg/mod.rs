//! Dense linear algebra: strided views, blocked f32 GEMM and SYRK with `wide` SIMD
//! micro-kernels, blocked f64 Cholesky and triangular solves.
//!
//! Every kernel has a scalar twin (`*_reference`) with the same contract, used by the tests as
//! the first oracle. Kernels never allocate: callers pass scratch sized by `*_scratch_len`.

pub(crate) mod blocked;
mod error;
pub mod finite;
pub mod gemm;
mod microkernel;
mod pack;
pub mod syrk;
pub mod view;

pub use error::KernelError;
pub use finite::{
    all_finite, all_finite_reference, all_within, all_within_reference, first_non_finite,
    first_outside,
};
pub use gemm::{Op, gemm, gemm_reference, gemm_scratch_len};
pub use microkernel::LANES;
pub use syrk::{syrk_lower, syrk_lower_reference, syrk_lower_scratch_len};
pub use view::{MatMut, MatRef, ViewError};
