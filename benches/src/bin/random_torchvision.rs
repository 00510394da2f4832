//! Writes a pair of torchvision-layout ResNets of random weights and random merge images, for
//! timing merges at the paper's scale (BENCHMARKS.md, "ResNet-50 at 224x224").
//!
//! Usage: `random_torchvision OUT_DIR [--depth 50] [--classes 10] [--samples N] [--side 224]
//! [--seed S]`. Writes `a.safetensors`, `b.safetensors` (torchvision names, no architecture
//! metadata: `pleas` recognises them from the names; metadata `classes` 0..C for A and
//! C..2C for B, so a merge keeps two heads) and `data_N.npy` (uint8 `N x 3 x side x side`,
//! uniform pixels; merge with `--normalize x/255`).
//!
//! Weights: conv and `fc` weights normal with He's standard deviation `sqrt(2 / fan_in)`, `fc`
//! bias `0.1 N(0, 1)`; every batch-norm randomised: weight and running variance uniform in
//! [0.5, 1.5], bias and running mean `0.1 N(0, 1)`. Model B uses seed `S + 1`.

use std::path::PathBuf;

use pleas::io::arch::resnet::{TorchvisionSpec, build_torchvision};
use pleas::io::npy;
use pleas::io::safetensors::{Dtype, Metadata, RawTensor, save_weights};
use pleas_core::graph::{Graph, Op, Tensor, Weights};

/// SplitMix64: a small seeded generator (no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

fn random_weights(graph: &Graph, seed: u64) -> Result<Weights, Box<dyn std::error::Error>> {
    let mut rng = Rng(seed);
    let mut w = Weights::new();
    for node in graph.nodes() {
        if let Op::BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            channels,
            ..
        } = &node.op
        {
            let c = *channels;
            let mut v = |f: &mut dyn FnMut(&mut Rng) -> f32| -> Result<Tensor, String> {
                Tensor::new(vec![c], (0..c).map(|_| f(&mut rng)).collect())
                    .map_err(|e| e.to_string())
            };
            w.insert(weight.clone(), v(&mut |r| 0.5 + r.uniform())?);
            w.insert(bias.clone(), v(&mut |r| 0.1 * r.normal())?);
            w.insert(running_mean.clone(), v(&mut |r| 0.1 * r.normal())?);
            w.insert(running_var.clone(), v(&mut |r| 0.5 + r.uniform())?);
            continue;
        }
        for (name, shape) in node.op.params() {
            let n: usize = shape.iter().product();
            let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
            let std = if shape.len() == 1 {
                0.1
            } else {
                (2.0 / fan_in as f32).sqrt()
            };
            let data = (0..n).map(|_| std * rng.normal()).collect();
            w.insert(name.to_string(), Tensor::new(shape, data)?);
        }
    }
    Ok(w)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().map(PathBuf::from) else {
        return Err("usage: random_torchvision OUT_DIR [--depth 50] [--classes 10] [--samples N] [--side 224] [--seed S]".into());
    };
    let opt = |name: &str, default: u64| -> Result<u64, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args
                .get(i + 1)
                .ok_or(format!("{name} needs a value"))?
                .parse()?),
            None => Ok(default),
        }
    };
    let depth = opt("--depth", 50)? as usize;
    let classes = opt("--classes", 10)? as usize;
    let samples = opt("--samples", 0)? as usize;
    let side = opt("--side", 224)? as usize;
    let seed = opt("--seed", 1)?;
    let spec = TorchvisionSpec::standard(depth, classes).ok_or("depth: 18, 34, 50 or 101")?;
    let input = pleas_core::graph::Shape::new(3, side, side);
    let graph = build_torchvision(&spec, input)?;
    std::fs::create_dir_all(&out)?;
    for (k, name) in ["a", "b"].into_iter().enumerate() {
        let weights = random_weights(&graph, seed + k as u64)?;
        let first = (k * classes) as i64;
        let labels: Vec<i64> = (first..first + classes as i64).collect();
        let mut meta = Metadata::new();
        meta.insert("classes".into(), format!("{labels:?}"));
        meta.insert("input_shape".into(), format!("[3, {side}, {side}]"));
        save_weights(&out.join(format!("{name}.safetensors")), &weights, &meta)?;
    }
    if samples > 0 {
        let mut rng = Rng(seed ^ 0xda7a);
        let bytes: Vec<u8> = (0..samples * 3 * side * side)
            .map(|_| (rng.next() >> 56) as u8)
            .collect();
        let t = RawTensor {
            dtype: Dtype::U8,
            shape: vec![samples, 3, side, side],
            bytes,
        };
        std::fs::write(out.join(format!("data_{samples}.npy")), npy::to_bytes(&t))?;
    }
    Ok(())
}
