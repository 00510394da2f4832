//! `pleas eval MODEL --data FILE`.

use std::io::Write;

use super::{EvalArgs, Outcome, parse_normalize};
use crate::error::Error;
use crate::eval::{evaluate, logits};
use crate::io::data::{self, DataSpec, Normalize};
use crate::model::Model;
use crate::par::Parallelism;

/// Writes every head's logits on every sample as a safetensors file (atomically).
fn write_logits(
    model: &Model,
    dataset: &data::Dataset,
    a: &EvalArgs,
    path: &std::path::Path,
) -> Result<(), Error> {
    let per_head = logits(model, dataset, &a.data, a.batch, Parallelism::available())?;
    let mut tensors = pleas_core::graph::Weights::new();
    for (head, values) in model.heads.iter().zip(per_head) {
        let t = pleas_core::graph::Tensor::new(vec![dataset.n, head.classes.len()], values)
            .expect("one row of logits per sample");
        tensors.insert(head.name.clone(), t);
    }
    crate::io::safetensors::save_weights(path, &tensors, &Default::default())
}

pub(super) fn run(a: &EvalArgs, out: &mut dyn Write) -> Result<Outcome, Error> {
    if a.batch == 0 {
        return Err(Error::Usage("--batch must be at least 1".into()));
    }
    let explicit = a.normalize.as_deref().map(parse_normalize).transpose()?;
    let model = Model::load(&a.model.model, a.model.arch.as_deref())?;
    let normalize = match explicit {
        Some(n) => n,
        None => match model.metadata.get("normalize") {
            Some(s) => Normalize::parse(s).ok_or_else(|| Error::Metadata {
                path: model.path.clone(),
                key: "normalize".into(),
                reason: format!("`{s}` is not none, x/255, x/255*2-1 or MEAN,STD"),
            })?,
            None => Normalize::Identity,
        },
    };
    let spec = DataSpec {
        path: a.data.clone(),
        data_key: a.data_key.clone(),
        label_key: Some(a.label_key.clone()),
        labels_path: a.labels.clone(),
        normalize,
    };
    let dataset = data::load(&spec)?;
    let report = evaluate(&model, &dataset, &a.data, a.batch)?;
    if let Some(path) = &a.logits {
        write_logits(&model, &dataset, a, path)?;
    }
    let write_err = |source| Error::Write {
        path: "<stdout>".into(),
        source,
    };
    if a.json {
        let heads: Vec<serde_json::Value> = report
            .heads
            .iter()
            .map(|h| {
                serde_json::json!({
                    "name": h.name,
                    "classes": h.classes,
                    "accuracy": h.accuracy,
                    "samples": h.samples,
                })
            })
            .collect();
        let v = serde_json::json!({"accuracy": report.accuracy, "heads": heads});
        writeln!(out, "{v}").map_err(write_err)?;
    } else {
        let mut s = format!("accuracy {:.4}\n", report.accuracy);
        for h in &report.heads {
            s.push_str(&format!(
                "  head {}: {:.4} ({} of {} samples, classes {:?})\n",
                h.name, h.accuracy, h.correct, h.samples, h.classes
            ));
        }
        out.write_all(s.as_bytes()).map_err(write_err)?;
    }
    match a.min_accuracy {
        Some(min) if report.accuracy < min => Ok(Outcome::CheckFailed),
        _ => Ok(Outcome::Ok),
    }
}
