//! File I/O: safetensors and `.npy` readers and writers, input data with normalisation, and
//! architecture recognition.

pub mod arch;
pub mod data;
pub mod npy;
pub mod safetensors;
