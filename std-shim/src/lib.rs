//! `pleas`: the std layer over [`pleas_core`]: file I/O, model loading, evaluation and the
//! `pleas` command.
//!
//! - [`io`]: safetensors and `.npy` files, input data with normalisation, architecture
//!   recognition and the TOML architecture file.
//! - [`model`]: a loaded, checked model (graph, weights, metadata, heads).
//! - [`eval`]: head accuracies on labelled data.
//! - [`cli`]: the command line as a library function returning the exit code.
#![deny(missing_docs)]

pub use pleas_core as core_crate;

pub mod cli;
pub mod error;
pub mod eval;
pub mod export;
pub mod io;
pub mod merge;
pub mod model;

pub use error::Error;

/// The version of this crate, as printed by `pleas --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod par;
