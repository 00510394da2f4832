//! The ONNX writer: a loaded model as an ONNX `ModelProto`, encoded with `prost`.
//!
//! The graph input (named `input`) is float32 `batch x C x H x W` (or `batch x D` for a flat
//! input), already normalised as the model's `normalize` metadata says (the same tensor
//! PyTorch gets); `batch` is a named dynamic dimension. There is one output per head, named
//! after it, of `batch x classes` logits. Metadata properties: `pleas.version`, `normalize`,
//! `classes` (one head) or `classes.{head}`, `pleas.blocks` (`split` or `dense`), and the
//! model's `arch`.
//!
//! Operators: Conv, Gemm (`transB = 1`), BatchNormalization, Relu, Add / Sum, MaxPool,
//! AveragePool (`count_include_pad = 1`), GlobalAveragePool, Flatten, Slice, Concat,
//! Unsqueeze and Identity, all in the default domain at opsets [`OPSETS`]. Every intermediate
//! value has its shape in `value_info`, so a reader counts multiply-adds without shape
//! inference.
//!
//! Why `prost` with hand-declared messages ([`proto`]): the writer needs a dozen messages and
//! about forty fields of a stable schema; `prost-derive` encodes them from plain structs, with
//! no `protoc`, no build script and no generated code checked in. The alternatives were
//! `protobuf` (rust-protobuf, codegen or a runtime parser of `.proto` files) and a hand-rolled
//! varint encoder (no dependency, but a second protobuf implementation to test); `prost`'s
//! decoder also lets the tests read the file back.

mod build;
pub mod proto;

use std::ops::RangeInclusive;

use prost::Message as _;

use super::{BlockMode, ExportError, ExportSettings, Format, ModelWriter};
use crate::model::Model;

/// The opsets the writer emits: every operator it uses has the same signature across them
/// (Unsqueeze takes its axes as an input from 13 on).
pub const OPSETS: RangeInclusive<i64> = 13..=21;

/// The opset written when none is asked for (supported by ONNX Runtime 1.12 and later).
pub const DEFAULT_OPSET: i64 = 17;

/// Name of the graph input.
pub const INPUT_NAME: &str = "input";

/// Name of the dynamic batch dimension of the input and outputs.
pub const BATCH_DIM: &str = "batch";

/// Protobuf's limit on one message (2 GiB).
const PROTOBUF_LIMIT: usize = (1 << 31) - 1;

/// The IR version that goes with an opset (the ONNX release that introduced it).
pub fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// Writes ONNX models.
#[derive(Debug, Clone, Copy)]
pub struct OnnxWriter {
    blocks: BlockMode,
    opset: i64,
}

impl OnnxWriter {
    /// A writer with `settings`' block mode and opset (checked against [`OPSETS`]).
    pub fn new(settings: &ExportSettings) -> Result<Self, ExportError> {
        if !OPSETS.contains(&settings.opset) {
            return Err(ExportError::Opset {
                opset: settings.opset,
            });
        }
        Ok(Self {
            blocks: settings.blocks,
            opset: settings.opset,
        })
    }

    /// The model as an ONNX message.
    pub fn model_proto(&self, model: &Model) -> Result<proto::ModelProto, ExportError> {
        build::model_proto(model, self.blocks, self.opset)
    }
}

impl ModelWriter for OnnxWriter {
    fn format(&self) -> Format {
        Format::Onnx
    }

    fn encode(&self, model: &Model) -> Result<Vec<u8>, ExportError> {
        let m = self.model_proto(model)?;
        let len = m.encoded_len();
        if len > PROTOBUF_LIMIT {
            return Err(ExportError::TooLarge {
                bytes: len,
                limit: PROTOBUF_LIMIT,
            });
        }
        Ok(m.encode_to_vec())
    }
}

/// Decodes an ONNX file's bytes (for tests and tools that read an export back).
pub fn decode(bytes: &[u8]) -> Result<proto::ModelProto, prost::DecodeError> {
    proto::ModelProto::decode(bytes)
}
