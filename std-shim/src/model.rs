//! A model as loaded from a file: its graph, weights, metadata and heads.

use std::path::{Path, PathBuf};

use pleas_core::graph::{Graph, NodeId, Weights};

use crate::error::Error;
use crate::io::arch;
use crate::io::model_file;
use crate::io::safetensors::{self, Metadata};

/// One classification head: a graph output and the dataset labels its units stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Output name (e.g. `head`, `fc`).
    pub name: String,
    /// The output node.
    pub node: NodeId,
    /// `classes[i]` is the dataset label of unit `i` (metadata `classes`, or `0..width`).
    pub classes: Vec<i64>,
}

/// A loaded, checked model.
#[derive(Debug, Clone)]
pub struct Model {
    /// The file it came from.
    pub path: PathBuf,
    /// Architecture family name.
    pub arch: String,
    /// The layer graph at the model's input size.
    pub graph: Graph,
    /// The weights (f32, PyTorch names).
    pub weights: Weights,
    /// The file's metadata strings.
    pub metadata: Metadata,
    /// The heads, in graph output order.
    pub heads: Vec<Head>,
}

/// Strips a `module.` prefix that every name carries (a model saved from `DataParallel`).
fn strip_module_prefix(weights: Weights) -> Weights {
    if !weights.is_empty() && weights.keys().all(|k| k.starts_with("module.")) {
        weights
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect()
    } else {
        weights
    }
}

fn head_classes(
    path: &Path,
    metadata: &Metadata,
    key: &str,
    width: usize,
) -> Result<Vec<i64>, Error> {
    let Some(s) = metadata.get(key) else {
        return Ok((0..width as i64).collect());
    };
    let bad = |reason: String| Error::Metadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let classes: Vec<i64> =
        serde_json::from_str(s).map_err(|_| bad(format!("`{s}` is not a list of integers")))?;
    if classes.len() != width {
        return Err(bad(format!(
            "lists {} classes, the head has {width} outputs",
            classes.len()
        )));
    }
    Ok(classes)
}

impl Model {
    /// Builds a model from parts, checking that the graph reads every tensor exactly as its
    /// shapes say and that no tensor is left unused. Heads take their classes from metadata
    /// `classes` (one output) or `classes.{output name}`.
    pub fn from_parts(
        path: &Path,
        arch: String,
        graph: Graph,
        weights: Weights,
        metadata: Metadata,
    ) -> Result<Model, Error> {
        if let Some(extra) = graph.unused_tensors(&weights).first() {
            return Err(Error::ExtraTensor {
                path: path.to_path_buf(),
                tensor: extra.to_string(),
                arch,
            });
        }
        graph
            .check_weights(&weights)
            .map_err(|source| Error::Model {
                path: path.to_path_buf(),
                arch: arch.clone(),
                source: Box::new(source),
            })?;
        let single = graph.outputs().len() == 1;
        let mut heads = Vec::new();
        for out in graph.outputs() {
            let width = graph.node(out.node).shape.len();
            let key = if single {
                "classes".to_string()
            } else {
                format!("classes.{}", out.name)
            };
            heads.push(Head {
                name: out.name.clone(),
                node: out.node,
                classes: head_classes(path, &metadata, &key, width)?,
            });
        }
        Ok(Model {
            path: path.to_path_buf(),
            arch,
            graph,
            weights,
            metadata,
            heads,
        })
    }

    /// Loads a model (safetensors or a PyTorch checkpoint, told apart by content), recognising its architecture (or reading `arch_file`, or the
    /// architecture embedded in its metadata: see [`arch::recognise`]).
    pub fn load(path: &Path, arch_file: Option<&Path>) -> Result<Model, Error> {
        let (weights, metadata) = model_file::load_weights(path)?;
        let weights = strip_module_prefix(weights);
        let rec = arch::recognise(path, &weights, &metadata, arch_file)?;
        Model::from_parts(path, rec.arch, rec.graph, weights, metadata)
    }

    /// Writes the model to `path` as safetensors (F32 weights), its metadata plus the graph as
    /// [`arch::ARCHITECTURE_KEY`] (the TOML architecture text), so that [`Model::load`] rebuilds
    /// the same graph whatever its architecture (merged, block-structured layers included). An
    /// `input_shape` entry is set to the graph's input shape. The file is written atomically
    /// (see [`safetensors::save_weights`]); a graph the architecture format cannot express is
    /// an error naming the key, and nothing is written.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = arch::toml_file::to_toml(&self.graph).map_err(|reason| Error::Metadata {
            path: path.to_path_buf(),
            key: arch::ARCHITECTURE_KEY.to_string(),
            reason,
        })?;
        let mut metadata = self.metadata.clone();
        metadata.insert(arch::ARCHITECTURE_KEY.to_string(), text);
        if let Some(shape) = metadata.get_mut("input_shape") {
            let s = self.graph.input_shape();
            *shape = if s.is_flat() {
                format!("[{}]", s.c)
            } else {
                format!("[{}, {}, {}]", s.c, s.h, s.w)
            };
        }
        safetensors::save_weights(path, &self.weights, &metadata)
    }
}
