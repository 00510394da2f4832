//! Shared helpers of the `pleas` integration and property tests: the tolerance table, matrix
//! strategies and f64 oracles.

pub mod models;
pub mod tolerance;
