//! `pleas inspect MODEL`.

use std::io::Write;

use pleas_core::graph::{cost, permutation_groups};

use super::{InspectArgs, Outcome};
use crate::error::Error;
use crate::model::Model;

fn shape_vec(s: pleas_core::graph::Shape) -> Vec<usize> {
    if s.is_flat() {
        vec![s.c]
    } else {
        vec![s.c, s.h, s.w]
    }
}

fn write_err(e: std::io::Error) -> Error {
    Error::Write {
        path: "<stdout>".into(),
        source: e,
    }
}

/// Thousands separators for readability.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub(super) fn run(a: &InspectArgs, out: &mut dyn Write) -> Result<Outcome, Error> {
    let model = Model::load(&a.model.model, a.model.arch.as_deref())?;
    let g = &model.graph;
    let groups = permutation_groups(g);
    let c = cost(g);
    let names =
        |ids: &[usize]| -> Vec<String> { ids.iter().map(|&i| g.node(i).name.clone()).collect() };
    if a.json {
        let nodes: Vec<serde_json::Value> = g
            .nodes()
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.name,
                    "op": n.op.kind(),
                    "inputs": names(&n.inputs),
                    "shape": shape_vec(n.shape),
                })
            })
            .collect();
        let gs: Vec<serde_json::Value> = groups
            .groups()
            .iter()
            .map(|gr| {
                serde_json::json!({
                    "name": gr.name,
                    "width": gr.width,
                    "members": gr.members.iter().map(|m| serde_json::json!({"tensor": m.tensor, "axis": m.axis})).collect::<Vec<_>>(),
                    "nodes": names(&gr.nodes),
                })
            })
            .collect();
        let heads: Vec<serde_json::Value> = model
            .heads
            .iter()
            .map(|h| serde_json::json!({"name": h.name, "classes": h.classes}))
            .collect();
        let v = serde_json::json!({
            "model": model.path.display().to_string(),
            "arch": model.arch,
            "input": shape_vec(g.input_shape()),
            "heads": heads,
            "nodes": nodes,
            "groups": gs,
            "flops": c.macs,
            "params": c.params,
            "buffers": c.buffers,
        });
        writeln!(out, "{v}").map_err(write_err)?;
        return Ok(Outcome::Ok);
    }
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(s, "model:        {}", model.path.display());
    let _ = writeln!(s, "architecture: {}", model.arch);
    let _ = writeln!(s, "input:        {}", g.input_shape());
    for h in &model.heads {
        let _ = writeln!(
            s,
            "head:         {} ({} classes: {:?})",
            h.name,
            h.classes.len(),
            h.classes
        );
    }
    let _ = writeln!(
        s,
        "FLOPs:        {} multiply-adds per sample (conv + linear)",
        grouped(c.macs)
    );
    let _ = writeln!(
        s,
        "parameters:   {} (+ {} batch-norm running statistics)",
        grouped(c.params),
        grouped(c.buffers)
    );
    let _ = writeln!(s, "nodes ({}):", g.nodes().len());
    for (i, n) in g.nodes().iter().enumerate() {
        let _ = writeln!(
            s,
            "  {i:>4} {:<28} {:<15} {:<40} -> {}",
            n.name,
            n.op.kind(),
            names(&n.inputs).join(", "),
            n.shape
        );
    }
    let _ = writeln!(s, "permutation groups ({}):", groups.len());
    for (i, gr) in groups.groups().iter().enumerate() {
        let members: Vec<String> = gr
            .members
            .iter()
            .map(|m| format!("{}[{}]", m.tensor, m.axis))
            .collect();
        let _ = writeln!(
            s,
            "  {i:>3} {:<28} width {:>5}  {} axes",
            gr.name,
            gr.width,
            members.len()
        );
        let _ = writeln!(s, "        {}", members.join(" "));
    }
    out.write_all(s.as_bytes()).map_err(write_err)?;
    Ok(Outcome::Ok)
}
