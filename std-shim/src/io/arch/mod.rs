//! Architecture recognition from PyTorch state_dict names and shapes, per family, and the
//! explicit TOML architecture file ([`toml_file`]) for anything else.
//!
//! An `--arch` file wins; then a model whose metadata holds [`ARCHITECTURE_KEY`] (the TOML
//! architecture text, as `pleas` writes merged models) is built from it; then families are
//! tried in this order:
//! - [`mlp`]: `layers.{i}` + `head`;
//! - [`resnet`] CIFAR-style ResNet-20 family (any width, any number of blocks):
//!   `conv1`, `bn1`, `layers.{k}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}`, `head`;
//! - [`resnet`] torchvision ResNet-18/34/50/101: `conv1`, `bn1`,
//!   `layer{1..4}.{j}.{conv1..3,bn1..3,downsample.0/1}`, `fc`.
//!
//! A recognised graph must then use every tensor of the file (besides PyTorch's
//! `num_batches_tracked` counters) with the right shape; the model loader checks that.

pub mod mlp;
pub mod resnet;
pub mod toml_file;

use std::path::Path;

use pleas_core::graph::{Graph, GraphError, Shape, Weights};

use crate::error::Error;
use crate::io::safetensors::Metadata;

/// Metadata key of a model file's embedded architecture: the TOML architecture file's text
/// ([`toml_file::to_toml`]).
pub const ARCHITECTURE_KEY: &str = "pleas.architecture";

/// A graph and the name of the family it was recognised as.
#[derive(Debug, Clone)]
pub struct Recognised {
    /// Family name (`mlp`, `resnet-cifar`, `resnet18`, ..., `toml` for an `--arch` file, or
    /// `pleas.architecture` for the architecture embedded in the metadata).
    pub arch: String,
    /// The graph at the model's input size.
    pub graph: Graph,
}

/// The input shape from metadata `input_shape` (`[D]` or `[C, H, W]`, JSON), if present.
pub fn metadata_input(path: &Path, metadata: &Metadata) -> Result<Option<Shape>, Error> {
    let Some(s) = metadata.get("input_shape") else {
        return Ok(None);
    };
    let bad = || Error::Metadata {
        path: path.to_path_buf(),
        key: "input_shape".into(),
        reason: format!("`{s}` is not [D] or [C, H, W]"),
    };
    let v: Vec<usize> = serde_json::from_str(s).map_err(|_| bad())?;
    match v.as_slice() {
        [d] => Ok(Some(Shape::flat(*d))),
        [c, h, w] => Ok(Some(Shape::new(*c, *h, *w))),
        _ => Err(bad()),
    }
}

/// Recognises the architecture: from `arch_file` if given, else from the metadata's
/// [`ARCHITECTURE_KEY`] if present (an error there names the file and the key), else from tensor
/// names and shapes.
pub fn recognise(
    path: &Path,
    weights: &Weights,
    metadata: &Metadata,
    arch_file: Option<&Path>,
) -> Result<Recognised, Error> {
    let wrap = |arch: &str, source: GraphError| Error::Model {
        path: path.to_path_buf(),
        arch: arch.to_string(),
        source: Box::new(source),
    };
    let input = metadata_input(path, metadata)?;
    let reshape = |g: Graph, arch: &str| match input {
        Some(s) => g.with_input_shape(s).map_err(|e| wrap(arch, e)),
        None => Ok(g),
    };
    if let Some(file) = arch_file {
        let g = toml_file::load(file, weights)?;
        return Ok(Recognised {
            arch: "toml".into(),
            graph: reshape(g, "toml")?,
        });
    }
    if let Some(text) = metadata.get(ARCHITECTURE_KEY) {
        let g = toml_file::parse(text, weights).map_err(|source| Error::MetadataArchitecture {
            path: path.to_path_buf(),
            key: ARCHITECTURE_KEY.to_string(),
            source: Box::new(source),
        })?;
        return Ok(Recognised {
            arch: ARCHITECTURE_KEY.into(),
            graph: reshape(g, ARCHITECTURE_KEY)?,
        });
    }
    if mlp::matches(weights) {
        let g = mlp::recognise(weights).map_err(|e| wrap("mlp", e))?;
        return Ok(Recognised {
            arch: "mlp".into(),
            graph: reshape(g, "mlp")?,
        });
    }
    if resnet::matches_cifar(weights) {
        let spec = resnet::cifar_spec(weights);
        let arch = format!("resnet-cifar ({} blocks)", spec.blocks.len());
        let g = resnet::build_cifar(&spec, input.unwrap_or(spec.default_input()))
            .map_err(|e| wrap(&arch, e))?;
        return Ok(Recognised { arch, graph: g });
    }
    if resnet::matches_torchvision(weights) {
        let spec = resnet::torchvision_spec(weights);
        let per_block = if spec.bottleneck { 3 } else { 2 };
        let depth = per_block * spec.blocks.iter().sum::<usize>() + 2;
        let arch = format!("resnet{depth} (torchvision)");
        let g = resnet::build_torchvision(&spec, input.unwrap_or(spec.default_input()))
            .map_err(|e| wrap(&arch, e))?;
        return Ok(Recognised { arch, graph: g });
    }
    let mut names: Vec<&str> = weights.keys().map(String::as_str).take(4).collect();
    if weights.len() > 4 {
        names.push("...");
    }
    Err(Error::Unrecognised {
        path: path.to_path_buf(),
        reason: format!(
            "no family matches tensors {}",
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        ),
    })
}
