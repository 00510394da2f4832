//! `pleas`: the std layer over [`pleas_core`]: threads and file I/O, and the `pleas` command.
#![deny(missing_docs)]

pub use pleas_core as core_crate;

/// The version of this crate, as printed by `pleas --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod par;
