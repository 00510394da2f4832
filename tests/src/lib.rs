//! Shared helpers of the `pleas` integration and property tests: the tolerance table, matrix
//! strategies and f64 oracles.

pub mod matrices;
pub mod oracle;
pub mod spd;
pub mod strided_f64;
pub mod tolerance;
