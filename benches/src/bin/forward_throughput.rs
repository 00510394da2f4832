//! Times `pleas`'s forward pass on one model and one batch of samples, for
//! `scripts/forward_vs_numpy.py`: prints `{"images_per_s", "seconds", "images"}` as JSON and
//! optionally writes the logits of the first run as a little-endian f32 `.npy`.
//!
//! Usage: `forward_throughput MODEL.safetensors DATA.npy [--runs N] [--batch B] [--no-fold]
//! [--logits OUT.npy]` where DATA is F32 `N x C x H x W` (already normalised).

use std::path::PathBuf;
use std::time::Instant;

use pleas::io::npy;
use pleas::io::safetensors::{Dtype, RawTensor};
use pleas::model::Model;
use pleas_core::forward::{Forward, fold_batchnorm};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: forward_throughput MODEL DATA.npy [--runs N] [--batch B] [--no-fold] [--logits OUT]".into());
    }
    let (model_path, data_path) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let mut runs = 3usize;
    let mut batch = 256usize;
    let mut fold = true;
    let mut logits_out: Option<PathBuf> = None;
    let mut i = 2;
    while i < args.len() {
        match args[i].as_str() {
            "--runs" => {
                runs = args.get(i + 1).ok_or("--runs N")?.parse()?;
                i += 1;
            }
            "--batch" => {
                batch = args.get(i + 1).ok_or("--batch B")?.parse()?;
                i += 1;
            }
            "--no-fold" => fold = false,
            "--logits" => {
                logits_out = Some(PathBuf::from(args.get(i + 1).ok_or("--logits OUT")?));
                i += 1;
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
        i += 1;
    }
    let model = Model::load(&model_path, None)?;
    let raw = npy::read(&data_path)?;
    let x = raw.float_to_f32().ok_or("data must be float")?;
    let n = raw.shape[0];
    let d = x.len() / n.max(1);
    let folded = fold_batchnorm(&model.graph, &model.weights)?;
    let (graph, weights) = if fold {
        (&folded.graph, &folded.weights)
    } else {
        (&model.graph, &model.weights)
    };
    let mut fwd = Forward::new(graph, weights)?;
    let mut best = f64::INFINITY;
    let mut logits: Vec<f32> = Vec::new();
    for r in 0..runs.max(1) {
        let t = Instant::now();
        let mut all = Vec::new();
        for s in (0..n).step_by(batch.max(1)) {
            let e = (s + batch).min(n);
            let out = fwd.logits(&x[s * d..e * d], e - s)?;
            all.extend_from_slice(&out[0]);
        }
        best = best.min(t.elapsed().as_secs_f64());
        if r == 0 {
            logits = all;
        }
    }
    if let Some(p) = logits_out {
        let classes = logits.len() / n.max(1);
        let t = RawTensor {
            dtype: Dtype::F32,
            shape: vec![n, classes],
            bytes: logits.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        std::fs::write(p, npy::to_bytes(&t))?;
    }
    println!(
        "{{\"images\": {n}, \"seconds\": {best}, \"images_per_s\": {}}}",
        n as f64 / best
    );
    Ok(())
}
