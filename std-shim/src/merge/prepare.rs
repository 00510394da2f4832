//! Step 0 of a merge: check the pair and the settings, resolve the heads, fold batch-norm
//! (or keep it) and check the merge data against the models.

use pleas_core::forward::fold_batchnorm;
use pleas_core::graph::{Graph, GraphError, Op, Weights};

use super::settings::{BnMode, Heads, MergeSettings};
use crate::error::Error;
use crate::io::data::{DataSource, DataSpec};
use crate::model::Model;

/// A checked pair, ready to merge.
pub(crate) struct Prepared {
    /// The architecture both share (batch-norm folded with `--bn fold`).
    pub(crate) graph: Graph,
    /// A's weights for `graph`.
    pub(crate) wa: Weights,
    /// B's weights for `graph`.
    pub(crate) wb: Weights,
    /// One head or two.
    pub(crate) heads: Heads,
    /// A's classes.
    pub(crate) classes_a: Vec<i64>,
    /// B's classes.
    pub(crate) classes_b: Vec<i64>,
    /// Merge samples.
    pub(crate) samples: usize,
}

pub(crate) fn err(stage: &'static str, reason: impl Into<String>) -> Error {
    Error::Merge {
        stage,
        reason: reason.into(),
    }
}

/// The first difference between two architectures, if any.
fn architecture_difference(a: &Graph, b: &Graph) -> Option<String> {
    if a.input_shape() != b.input_shape() {
        return Some(format!("inputs {} vs {}", a.input_shape(), b.input_shape()));
    }
    if a.nodes().len() != b.nodes().len() {
        return Some(format!("{} vs {} nodes", a.nodes().len(), b.nodes().len()));
    }
    for (na, nb) in a.nodes().iter().zip(b.nodes()) {
        if na != nb {
            return Some(format!(
                "node `{}` ({} {}) vs `{}` ({} {})",
                na.name,
                na.op.kind(),
                na.shape,
                nb.name,
                nb.op.kind(),
                nb.shape
            ));
        }
    }
    if a.outputs() != b.outputs() {
        return Some("different outputs".into());
    }
    None
}

/// The settings a merge refuses before any work.
fn check_settings(settings: &MergeSettings) -> Result<(), Error> {
    if !(1.0..=2.0).contains(&settings.budget) {
        return Err(err(
            "settings",
            format!(
                "budget {} is outside [1, 2] (a FLOP ratio to one model)",
                settings.budget
            ),
        ));
    }
    if !(settings.ridge.is_finite() && settings.ridge > 0.0) {
        return Err(err(
            "settings",
            format!("ridge {} must be a positive number", settings.ridge),
        ));
    }
    Ok(())
}

/// The pair must share one architecture, not be merged models already, and have one head
/// each.
fn check_pair(a: &Model, b: &Model) -> Result<(), Error> {
    if let Some(d) = architecture_difference(&a.graph, &b.graph) {
        return Err(err(
            "architecture",
            format!(
                "`{}` and `{}` have different architectures: {d}",
                a.path.display(),
                b.path.display()
            ),
        ));
    }
    for m in [a, b] {
        if let Some(n) = m
            .graph
            .nodes()
            .iter()
            .find(|n| matches!(n.op, Op::BlockConv2d { .. } | Op::BlockLinear { .. }))
        {
            return Err(err(
                "architecture",
                format!(
                    "`{}` is already a merged model (block-structured layer `{}`); merging merged models is not supported",
                    m.path.display(),
                    n.name
                ),
            ));
        }
        if m.heads.len() != 1 {
            return Err(err(
                "architecture",
                format!(
                    "`{}` has {} outputs; merging needs models with exactly one head",
                    m.path.display(),
                    m.heads.len()
                ),
            ));
        }
    }
    Ok(())
}

/// One head or two: as the settings say, else two when the classes differ.
fn resolve_heads(settings: &MergeSettings, ca: &[i64], cb: &[i64]) -> Result<Heads, Error> {
    Ok(match settings.heads {
        Some(Heads::Shared) => {
            if ca.len() != cb.len() {
                return Err(err(
                    "heads",
                    "one shared head needs heads of the same width".to_string(),
                ));
            }
            Heads::Shared
        }
        Some(Heads::Separate) => Heads::Separate,
        None if ca == cb => Heads::Shared,
        None => Heads::Separate,
    })
}

/// Checks the pair, the settings and the merge data, and folds batch-norm (or keeps it).
pub(crate) fn prepare(
    a: &Model,
    b: &Model,
    data: &DataSpec,
    settings: &MergeSettings,
) -> Result<Prepared, Error> {
    check_settings(settings)?;
    check_pair(a, b)?;
    let (ca, cb) = (&a.heads[0].classes, &b.heads[0].classes);
    let heads = resolve_heads(settings, ca, cb)?;
    // Prepare: fold batch-norm or keep it.
    let (graph, wa, wb) = match settings.bn {
        BnMode::Fold => {
            let fold_err = |e: GraphError| Error::core("batch-norm folding", e);
            let fa = fold_batchnorm(&a.graph, &a.weights).map_err(fold_err)?;
            let fb = fold_batchnorm(&b.graph, &b.weights).map_err(fold_err)?;
            (fa.graph, fa.weights, fb.weights)
        }
        BnMode::Keep => (a.graph.clone(), a.weights.clone(), b.weights.clone()),
    };
    let source = DataSource::open(data)?;
    let n = source.len();
    if n == 0 {
        return Err(err(
            "data",
            format!("`{}` holds no samples", data.path.display()),
        ));
    }
    if source.sample_len() != graph.input_shape().len() {
        return Err(err(
            "data",
            format!(
                "`{}` has samples of shape {:?} ({} values); the models take {} ({} values)",
                data.path.display(),
                source.sample_shape(),
                source.sample_len(),
                graph.input_shape(),
                graph.input_shape().len()
            ),
        ));
    }
    drop(source);
    Ok(Prepared {
        graph,
        wa,
        wb,
        heads,
        classes_a: ca.clone(),
        classes_b: cb.clone(),
        samples: n,
    })
}
