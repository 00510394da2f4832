//! `pleas-core`: the `no_std` numerical core of `pleas`, which merges two trained neural
//! networks with PLeaS (permutations + least squares).
//!
//! - [`linalg`]: strided matrix views, blocked f32 GEMM and SYRK with `wide` SIMD
//!   micro-kernels, blocked f64 Cholesky and triangular solves.
//! - [`simd`]: run-time selection of the kernels' instruction-set path (portable, AVX2,
//!   AVX-512) with an override.
//! - [`gram`]: streaming accumulation of `sum x x^T` and `sum x t^T` in f64 from f32 blocks.
//! - [`lstsq`]: ridge least squares on a principal sub-block of an accumulated Gram.
//! - [`assign`]: the auction matcher and partial (top-k) selection.
//! - [`similarity`]: neg-l2, inner-product and correlation similarities from streamed moments.
//! - [`merge`]: budgets to per-group ratios and [`merge::mlp`], the whole merge of two MLPs
//!   without allocation; with the feature `alloc`, merged layouts and the least-squares plan
//!   of each merged layer of any graph.
//! - [`graph`] (feature `alloc`): the layer-graph IR, shape inference, permutation groups,
//!   FLOP and parameter counts.
//! - [`forward`]: the layer kernels (conv as im2col + GEMM or direct, linear, pooling), which
//!   need no allocation; with `alloc`, batched inference over a graph, batch-norm folding and
//!   an activation observer hook.
//! - [`window`]: sliding-window sizes shared by the graph and the kernels.
//!
//! Kernels never allocate: each takes caller-owned scratch sized by a `*_scratch_len` query.
//! The `alloc` feature enables the layers that build graphs and merged models.
#![no_std]
#![deny(missing_docs)]
// `unsafe` only where `core::arch` intrinsics and the CPU probe need it (`simd`, the x86-64
// micro-kernels), each module opting in.
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod assign;
pub mod forward;
pub mod gram;
pub mod linalg;
pub mod lstsq;
pub mod merge;
pub mod simd;
pub mod similarity;
pub mod window;

#[cfg(feature = "alloc")]
pub mod graph;
