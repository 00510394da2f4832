//! File I/O: safetensors, PyTorch checkpoint and `.npy` readers and writers, input data with
//! normalisation, and architecture recognition.

pub mod arch;
pub mod atomic;
pub mod data;
pub mod model_file;
pub mod npy;
pub mod safetensors;
pub mod torch;
