//! Exports of a model to other runtimes' formats.
//!
//! - [`torch`]: a PyTorch state_dict (the dense form) and the module file that loads it.

pub mod torch;
