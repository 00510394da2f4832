//! Accuracy of a model's heads on labelled data.
//!
//! A head counts only the samples whose label is one of its `classes`, mapped to the unit that
//! stands for it (a split-task head with classes `[5..9]` reads label 7 as unit 2). The
//! prediction is the first unit of maximal logit.

use std::path::Path;

use pleas_core::forward::Forward;
use pleas_core::graph::{Graph, Shape};

use crate::error::Error;
use crate::io::data::Dataset;
use crate::model::Model;
use crate::par::{Parallelism, map_jobs};

/// Accuracy of one head.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadAccuracy {
    /// Head (output) name.
    pub name: String,
    /// Labels of its units, in unit order.
    pub classes: Vec<i64>,
    /// Correct / samples.
    pub accuracy: f64,
    /// Samples whose label is among `classes`.
    pub samples: usize,
    /// Of these, correctly classified.
    pub correct: usize,
}

/// Accuracy of every head and their mean.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Mean of the heads' accuracies.
    pub accuracy: f64,
    /// Per head, in output order.
    pub heads: Vec<HeadAccuracy>,
}

/// The model's graph at the data's sample shape: `[D]` data must have as many values as the
/// model's input; `[C, H, W]` data either matches a flat input by size or sets the spatial
/// size of a convolutional one (channels must agree).
pub fn graph_for_data(model: &Model, data: &Dataset, data_path: &Path) -> Result<Graph, Error> {
    let want = model.graph.input_shape();
    let bad = |reason: String| Error::Data {
        path: data_path.to_path_buf(),
        reason,
    };
    let describe = |s: Shape| {
        if s.is_flat() {
            format!("{}", s.c)
        } else {
            format!("{} ({}x{}x{})", s.len(), s.c, s.h, s.w)
        }
    };
    match data.sample_shape.as_slice() {
        [c, h, w] if !want.is_flat() => {
            if *c != want.c {
                return Err(bad(format!(
                    "samples have {c} channels, model `{}` takes {}",
                    model.path.display(),
                    want.c
                )));
            }
            if (*h, *w) == (want.h, want.w) {
                return Ok(model.graph.clone());
            }
            model
                .graph
                .with_input_shape(Shape::new(*c, *h, *w))
                .map_err(|e| Error::DataShape {
                    path: data_path.to_path_buf(),
                    shape: format!("{c}x{h}x{w}"),
                    source: Box::new(e),
                })
        }
        _ => {
            let len = data.sample_len();
            if len != want.len() {
                return Err(bad(format!(
                    "samples have {len} values (shape {:?}), model `{}` takes {}",
                    data.sample_shape,
                    model.path.display(),
                    describe(want)
                )));
            }
            Ok(model.graph.clone())
        }
    }
}

/// Runs the model on the labelled samples of `data`, `batch` at a time, and scores each head.
pub fn evaluate(
    model: &Model,
    data: &Dataset,
    data_path: &Path,
    batch: usize,
) -> Result<EvalReport, Error> {
    evaluate_with(model, data, data_path, batch, Parallelism::available())
}

/// [`evaluate`] on `par`'s threads: batches are fixed and the per-head counts are summed, so
/// the result does not depend on the thread count.
pub fn evaluate_with(
    model: &Model,
    data: &Dataset,
    data_path: &Path,
    batch: usize,
    par: Parallelism,
) -> Result<EvalReport, Error> {
    let bad = |reason: String| Error::Data {
        path: data_path.to_path_buf(),
        reason,
    };
    let labels = data
        .labels
        .as_ref()
        .ok_or_else(|| bad("has no labels".to_string()))?;
    let graph = graph_for_data(model, data, data_path)?;
    // Check the weights once, before any thread starts.
    Forward::new(&graph, &model.weights)?;
    let wanted: Vec<usize> = (0..data.n)
        .filter(|&i| model.heads.iter().any(|h| h.classes.contains(&labels[i])))
        .collect();
    let d = data.sample_len();
    let batch = batch.max(1);
    let chunks: Vec<&[usize]> = wanted.chunks(batch).collect();
    let threads = par.threads().min(chunks.len()).max(1);
    let per_thread = map_jobs(
        par,
        threads,
        |t| -> Result<(Vec<usize>, Vec<usize>), Error> {
            let mut fwd = Forward::new(&graph, &model.weights)?;
            let mut correct = vec![0usize; model.heads.len()];
            let mut seen = vec![0usize; model.heads.len()];
            let mut x = Vec::with_capacity(batch * d);
            for chunk in chunks.iter().skip(t).step_by(threads) {
                x.clear();
                for &i in *chunk {
                    x.extend_from_slice(&data.x[i * d..(i + 1) * d]);
                }
                let outs = fwd.logits(&x, chunk.len())?;
                for (h, (head, out)) in model.heads.iter().zip(&outs).enumerate() {
                    let width = head.classes.len();
                    for (r, &i) in chunk.iter().enumerate() {
                        let Some(unit) = head.classes.iter().position(|&c| c == labels[i]) else {
                            continue;
                        };
                        let row = &out[r * width..(r + 1) * width];
                        let mut best = 0;
                        for (j, &v) in row.iter().enumerate() {
                            if v > row[best] {
                                best = j;
                            }
                        }
                        seen[h] += 1;
                        if best == unit {
                            correct[h] += 1;
                        }
                    }
                }
            }
            Ok((correct, seen))
        },
    );
    let mut correct = vec![0usize; model.heads.len()];
    let mut seen = vec![0usize; model.heads.len()];
    for r in per_thread {
        let (c, s) = r?;
        for h in 0..correct.len() {
            correct[h] += c[h];
            seen[h] += s[h];
        }
    }
    let mut heads = Vec::new();
    for (h, head) in model.heads.iter().enumerate() {
        if seen[h] == 0 {
            return Err(bad(format!(
                "no sample has a label among head `{}`'s classes {:?}",
                head.name, head.classes
            )));
        }
        heads.push(HeadAccuracy {
            name: head.name.clone(),
            classes: head.classes.clone(),
            accuracy: correct[h] as f64 / seen[h] as f64,
            samples: seen[h],
            correct: correct[h],
        });
    }
    let accuracy = heads.iter().map(|h| h.accuracy).sum::<f64>() / heads.len().max(1) as f64;
    Ok(EvalReport { accuracy, heads })
}

/// Every head's logits on every sample of `data` (labelled or not), `batch` samples per
/// forward pass spread over `par`'s threads: per head a row-major `samples x width` matrix.
/// Each sample's logits are computed by one forward pass whatever the thread count, so the
/// result does not depend on it.
pub fn logits(
    model: &Model,
    data: &Dataset,
    data_path: &Path,
    batch: usize,
    par: Parallelism,
) -> Result<Vec<Vec<f32>>, Error> {
    let graph = graph_for_data(model, data, data_path)?;
    Forward::new(&graph, &model.weights)?;
    let d = data.sample_len();
    let batch = batch.max(1);
    let chunks: Vec<std::ops::Range<usize>> = (0..data.n)
        .step_by(batch)
        .map(|s| s..(s + batch).min(data.n))
        .collect();
    let per_chunk = map_jobs(par, chunks.len(), |c| -> Result<Vec<Vec<f32>>, Error> {
        let mut fwd = Forward::new(&graph, &model.weights)?;
        let r = &chunks[c];
        Ok(fwd.logits(&data.x[r.start * d..r.end * d], r.len())?)
    });
    let mut out: Vec<Vec<f32>> = model
        .heads
        .iter()
        .map(|h| Vec::with_capacity(data.n * h.classes.len()))
        .collect();
    for chunk in per_chunk {
        for (head, part) in out.iter_mut().zip(chunk?) {
            head.extend_from_slice(&part);
        }
    }
    Ok(out)
}
