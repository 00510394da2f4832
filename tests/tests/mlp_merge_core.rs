//! The heap-free whole-MLP merge of `pleas-core` (`merge::mlp`): against the host pipeline
//! (`pleas::merge::merge` with its default settings) on the real 784-64-64 split pair, budgets
//! 1.0, 1.2 and 2.0; the exact answers of docs/ALGORITHM.md section 6 (budget 2.0 reproduces both
//! models, a model merged with a permuted copy of itself at 1.0 reproduces it); the primal and
//! dual least-squares forms against each other; the scratch it needs; and every refusal.
//!
//! The first layer has 785 columns and the merge uses 300 samples, so its Gram has rank 301
//! and the fit is determined by the data only in the span of the samples; elsewhere the ridge
//! keeps the permute-and-average weights. Both the host (which keeps the rows of such a pass)
//! and the core solve it in sample space, so the first layer is compared in the samples' span
//! and outside it separately, with tolerances of their own; every other layer is compared
//! whole, and per-task accuracies must be equal to three decimals (what the firmware demo
//! prints against `pleas merge` + `pleas eval`).

use std::path::PathBuf;

use nalgebra::{DMatrix, DVector};
use pleas::io::data::{DataSpec, Normalize};
use pleas::io::safetensors::{self, Metadata};
use pleas::merge::pipeline::{MergeOutcome, merge};
use pleas::merge::settings::MergeSettings;
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::merge::mlp::{
    DriverError, Heads, LayerRef, LsForm, MAX_HIDDEN, MlpDims, MlpMergeError, MlpMergeInfo,
    MlpMergeInputs, MlpMergeParams, MlpMergePlan, MlpOperand, Model as Side, RidgeToward, Samples,
    ScratchKind, mlp_merge, mlp_merge_plan,
};
use pleas_tests::models::{Rng, fashion_eval, fixtures};
use pleas_tests::split_task::{host_accuracy, host_layers, rel_fro, task_accuracy, test_set};
use pleas_tests::tolerance::{
    MLP_CORE_EXACT_LOGIT_REL, MLP_FORMS_REL, MLP_HOST_MOMENTS_REL, MLP_HOST_NULL_REL,
    MLP_HOST_SAMPLE_OUTPUT_REL, MLP_HOST_SPAN_REL, MLP_HOST_WEIGHTS_REL,
};

const MLP64_A: &str = "fashion/mlp64_split/fashion_mlp_split_m0_s6.safetensors";
const MLP64_B: &str = "fashion/mlp64_split/fashion_mlp_split_m1_s7.safetensors";
/// Merge samples: a few hundred, what a microcontroller's memory allows (the first layer then
/// has more columns than samples and is solved in the dual form).
const MERGE_SAMPLES: usize = 300;
/// The peak f64 scratch allowed for the 784-64-64 pair at `MERGE_SAMPLES`: half of the
/// 1 MiB of the target device, which also holds the merged weights.
const SCRATCH_LIMIT_BYTES: usize = 512 * 1024;

fn load(rel: &str) -> Model {
    Model::load(&fixtures().join(rel), None).unwrap()
}

/// The layers of an MLP fixture in the core's order: `layers.{i}`, then `head`.
fn layers(m: &Model) -> Vec<LayerRef<'_>> {
    let mut names: Vec<String> = (0..)
        .map(|i| format!("layers.{i}"))
        .take_while(|p| m.weights.contains_key(&format!("{p}.weight")))
        .collect();
    names.push("head".into());
    names
        .iter()
        .map(|p| LayerRef {
            weight: m.weights[&format!("{p}.weight")].data(),
            bias: m.weights.get(&format!("{p}.bias")).map(|t| t.data()),
        })
        .collect()
}

/// Which merge samples of `x_match` (2000 images, sorted by class, 200 per class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    /// Every `2000 / n`-th image: all ten classes.
    Strided,
    /// The first `n` images: classes 0 and 1 only.
    First,
}

/// Merge samples as the host reads them (a file of u8 images, normalised `x / 255 * 2 - 1`)
/// and as the core takes them (the same values in f32, or the bytes with their table).
struct MergeData {
    spec: DataSpec,
    x: Vec<f32>,
    bytes: Vec<u8>,
    n: usize,
}

fn samples(n: usize, selection: Selection) -> MergeData {
    let file = safetensors::read(&fashion_eval()).unwrap();
    let all = &file.tensors["x_match"];
    let total = all.shape[0];
    let rows: Vec<usize> = (0..n)
        .map(|i| match selection {
            Selection::Strided => i * total / n,
            Selection::First => i,
        })
        .collect();
    let mut t = all.clone();
    t.shape[0] = n;
    t.bytes = rows
        .iter()
        .flat_map(|&r| all.bytes[r * 784..(r + 1) * 784].to_vec())
        .collect();
    let x = t
        .bytes
        .iter()
        .map(|&v| Normalize::Symmetric.apply(f32::from(v)))
        .collect();
    let bytes = t.bytes.clone();
    let dir = pleas_tests::scratch::dir("mlp-core");
    let path: PathBuf = dir.join(format!("x_match_{n}_{selection:?}.safetensors"));
    let mut tensors = std::collections::BTreeMap::new();
    tensors.insert("x_match".to_string(), t);
    std::fs::write(&path, safetensors::raw_to_bytes(&tensors, &Metadata::new())).unwrap();
    MergeData {
        spec: DataSpec::unlabelled(path, "x_match", Normalize::Symmetric),
        x,
        bytes,
        n,
    }
}

/// A core merge's plan, merged weights, report and index scratch.
struct CoreMerge {
    plan: MlpMergePlan,
    out: Vec<f32>,
    info: MlpMergeInfo,
    indices: Vec<usize>,
}

impl CoreMerge {
    /// Dense weight and bias of fitted layer `f`.
    fn layer(&self, f: usize) -> (&[f32], &[f32]) {
        let b = self.plan.bias_range(f).map_or(&[][..], |r| &self.out[r]);
        (&self.out[self.plan.weight_range(f)], b)
    }
}

fn core_merge(
    dims: MlpDims<'_>,
    heads: Heads,
    a: &[LayerRef<'_>],
    b: &[LayerRef<'_>],
    x: &[f32],
    budget: f64,
    params: &MlpMergeParams,
) -> Result<CoreMerge, MlpMergeError> {
    let n = x.len() / dims.inputs;
    let plan = mlp_merge_plan(&dims, heads, n, budget, params)?;
    let mut out = vec![f32::NAN; plan.output_len];
    let mut scratch = vec![f64::NAN; plan.scratch_len];
    let mut indices = vec![usize::MAX; plan.index_len];
    let inputs = MlpMergeInputs {
        dims,
        heads,
        a,
        b,
        samples: Samples::F32(x),
        budget,
    };
    let info = mlp_merge(&inputs, params, &mut out, &mut scratch, &mut indices)?;
    Ok(CoreMerge {
        plan,
        out,
        info,
        indices,
    })
}

const MLP64_DIMS: MlpDims<'static> = MlpDims {
    inputs: 784,
    hidden: &[64, 64],
    classes: 5,
    bias: true,
};

/// `max |a - b| / max |b|`.
fn rel_to_scale(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    d / scale.max(f32::MIN_POSITIVE)
}

/// `y = W x + b` in f32, then the ReLU if `relu`.
fn dense(w: &[f32], b: &[f32], x: &[f32], relu: bool) -> Vec<f32> {
    let cols = x.len();
    (0..w.len() / cols)
        .map(|o| {
            let mut acc = 0.0f32;
            for (wv, xv) in w[o * cols..(o + 1) * cols].iter().zip(x) {
                acc += wv * xv;
            }
            if let Some(bo) = b.get(o) {
                acc += bo;
            }
            if relu { acc.max(0.0) } else { acc }
        })
        .collect()
}

/// Logits of a dense MLP given as (weight, bias) layers, `heads` of them last.
fn mlp_logits(layers: &[(&[f32], &[f32])], heads: usize, x: &[f32]) -> Vec<Vec<f32>> {
    let hidden = layers.len() - heads;
    let mut h = x.to_vec();
    for (w, b) in &layers[..hidden] {
        h = dense(w, b, &h, true);
    }
    layers[hidden..]
        .iter()
        .map(|(w, b)| dense(w, b, &h, false))
        .collect()
}

fn core_logits(m: &CoreMerge, x: &[f32]) -> Vec<Vec<f32>> {
    let layers: Vec<(&[f32], &[f32])> = (0..m.plan.fitted_layers()).map(|f| m.layer(f)).collect();
    mlp_logits(&layers, m.plan.head_count(), x)
}

fn original_logits(l: &[LayerRef<'_>], x: &[f32]) -> Vec<f32> {
    let layers: Vec<(&[f32], &[f32])> = l
        .iter()
        .map(|l| (l.weight, l.bias.unwrap_or(&[])))
        .collect();
    mlp_logits(&layers, 1, x).remove(0)
}

fn core_accuracy(m: &CoreMerge, x: &[f32], labels: &[u8]) -> [f64; 2] {
    task_accuracy(|i| core_logits(m, &x[i * 784..(i + 1) * 784]), labels)
}

/// Layer references to owned (weight, bias) pairs.
fn refs(m: &[(Vec<f32>, Vec<f32>)]) -> Vec<LayerRef<'_>> {
    m.iter()
        .map(|(w, b)| LayerRef {
            weight: w,
            bias: Some(b),
        })
        .collect()
}

/// The first layer compared where the samples determine it: `(span, null, outputs)` with
/// `span` and `null` the components of `W_core - W_host` in and outside the span of the
/// samples (with the bias column), relative to `||W_host||`, and `outputs` the relative
/// difference of the layer's outputs on the samples.
fn first_layer_agreement(
    x: &[f32],
    n: usize,
    core: (&[f32], &[f32]),
    host: (&[f32], &[f32]),
) -> (f64, f64, f64) {
    let d = 784;
    let xa = DMatrix::from_fn(
        d + 1,
        n,
        |j, s| {
            if j < d { f64::from(x[s * d + j]) } else { 1.0 }
        },
    );
    let q = xa.clone().qr().q();
    let rows = host.1.len();
    let (mut span, mut null, mut norm, mut out_d, mut out_n) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for r in 0..rows {
        let at =
            |w: (&[f32], &[f32]), j: usize| f64::from(if j < d { w.0[r * d + j] } else { w.1[r] });
        let diff = DVector::from_fn(d + 1, |j, _| at(core, j) - at(host, j));
        let w = DVector::from_fn(d + 1, |j, _| at(host, j));
        let p = &q * (q.transpose() * &diff);
        span += p.norm_squared();
        null += (&diff - &p).norm_squared();
        norm += w.norm_squared();
        out_d += (xa.transpose() * &diff).norm_squared();
        out_n += (xa.transpose() * &w).norm_squared();
    }
    (
        (span / norm).sqrt(),
        (null / norm).sqrt(),
        (out_d / out_n).sqrt(),
    )
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

/// Compares one core merge with the host's on the same samples and budget.
fn compare_with_host(budget: f64, s: &MergeData, host: &MergeOutcome, core: &CoreMerge) {
    let plan = &core.plan;
    // The same layouts: merged pairs and widths, and the assignments' scores (which also pins
    // the selected pairs: the mean score of the merged ones).
    for (g, (hg, cg)) in host.groups.iter().zip(&core.info.groups).enumerate() {
        assert_eq!(hg.merged, cg.merged, "budget {budget} group {g}");
        assert_eq!(
            hg.merged_width, cg.merged_width,
            "budget {budget} group {g}"
        );
        let t = rel(cg.total_score, hg.total_score);
        assert!(
            t <= MLP_HOST_MOMENTS_REL,
            "budget {budget} group {g}: total score {t:e}"
        );
        if hg.merged > 0 {
            let m = rel(cg.mean_merged_score, hg.mean_merged_score);
            assert!(
                m <= MLP_HOST_MOMENTS_REL,
                "budget {budget} group {g}: mean merged {m:e}"
            );
        }
    }
    let hl = host_layers(host);
    assert_eq!(hl.len(), plan.fitted_layers());
    for (f, (hw, hb)) in hl.iter().enumerate() {
        let (cw, cb) = core.layer(f);
        let ridge = rel(core.info.layers[f].ridge, host.layers[f].ridge);
        assert!(
            ridge <= MLP_HOST_MOMENTS_REL,
            "budget {budget} layer {f}: ridge {ridge:e}"
        );
        if f == 0 {
            let (span, null, outputs) = first_layer_agreement(&s.x, s.n, (cw, cb), (hw, hb));
            eprintln!(
                "budget {budget} layer 0: in the samples' span {span:.2e}, outside {null:.2e}, \
                 outputs on the samples {outputs:.2e}"
            );
            assert!(span <= MLP_HOST_SPAN_REL, "budget {budget}: span {span:e}");
            assert!(
                null <= MLP_HOST_NULL_REL,
                "budget {budget}: outside {null:e}"
            );
            assert!(
                outputs <= MLP_HOST_SAMPLE_OUTPUT_REL,
                "budget {budget}: outputs {outputs:e}"
            );
        } else {
            let (w, b) = (rel_fro(cw, hw), rel_fro(cb, hb));
            eprintln!("budget {budget} layer {f}: weights {w:.2e}, biases {b:.2e}");
            assert!(
                w <= MLP_HOST_WEIGHTS_REL,
                "budget {budget} layer {f}: {w:e}"
            );
            assert!(
                b <= MLP_HOST_WEIGHTS_REL,
                "budget {budget} layer {f}: bias {b:e}"
            );
        }
    }
}

#[test]
fn core_merge_matches_the_host_pipeline() {
    let (a, b) = (load(MLP64_A), load(MLP64_B));
    let (la, lb) = (layers(&a), layers(&b));
    let (test_x, test_y) = test_set(1);
    let params = MlpMergeParams::default();
    let s = samples(MERGE_SAMPLES, Selection::Strided);
    for budget in [1.0, 1.2, 2.0] {
        let settings = MergeSettings {
            budget,
            ..MergeSettings::default()
        };
        let host = merge(&a, &b, &s.spec, &settings, &mut |_| {}).unwrap();
        let core =
            core_merge(MLP64_DIMS, Heads::Separate, &la, &lb, &s.x, budget, &params).unwrap();
        assert!((core.plan.flop_ratio - host.planned_flop_ratio).abs() < 1e-12);
        compare_with_host(budget, &s, &host, &core);
        let (ha, ca) = (
            host_accuracy(&host, &test_x, &test_y),
            core_accuracy(&core, &test_x, &test_y),
        );
        eprintln!(
            "budget {budget}: accuracy core a {:.4} b {:.4}, host a {:.4} b {:.4}",
            ca[0], ca[1], ha[0], ha[1]
        );
        // What the device prints must equal what `pleas merge` + `pleas eval` print, to three
        // decimals.
        for h in 0..2 {
            assert_eq!(
                format!("{:.3}", ca[h]),
                format!("{:.3}", ha[h]),
                "budget {budget} head {h}"
            );
        }
    }
    // The first samples of `x_match` are of classes 0 and 1 only: a poor merge set (head b
    // sees none of its classes), but the two implementations still agree.
    let s = samples(MERGE_SAMPLES, Selection::First);
    let budget = 1.2;
    let settings = MergeSettings {
        budget,
        ..MergeSettings::default()
    };
    let host = merge(&a, &b, &s.spec, &settings, &mut |_| {}).unwrap();
    let core = core_merge(MLP64_DIMS, Heads::Separate, &la, &lb, &s.x, budget, &params).unwrap();
    compare_with_host(budget, &s, &host, &core);
    let (ha, ca) = (
        host_accuracy(&host, &test_x, &test_y),
        core_accuracy(&core, &test_x, &test_y),
    );
    eprintln!(
        "first {MERGE_SAMPLES} samples, budget {budget}: accuracy core a {:.4} b {:.4}, host a \
         {:.4} b {:.4}",
        ca[0], ca[1], ha[0], ha[1]
    );
}

/// The two least-squares forms solve the same problem: the default (dual first layer,
/// primal elsewhere) against the primal form everywhere (a 785 x 785 Gram, affordable on a
/// host) and the dual form everywhere. With the ridge towards the permute-and-average weights
/// the first layer, which reads the samples both models share, keeps them without a solve in
/// every form (they are its exact fit); with the ridge towards zero it is solved, in the dual
/// form by default.
#[test]
fn primal_and_dual_forms_agree_on_the_real_pair() {
    let (a, b) = (load(MLP64_A), load(MLP64_B));
    let (la, lb) = (layers(&a), layers(&b));
    let s = samples(MERGE_SAMPLES, Selection::Strided);
    for toward in [RidgeToward::Average, RidgeToward::Zero] {
        let run = |form| {
            let params = MlpMergeParams::default()
                .with_form(form)
                .with_ridge_toward(toward);
            core_merge(MLP64_DIMS, Heads::Separate, &la, &lb, &s.x, 1.2, &params).unwrap()
        };
        let auto = run(LsForm::Auto);
        let first = auto.info.layers[0];
        match toward {
            RidgeToward::Average => assert_eq!(
                (first.copied_blocks, first.dual_blocks, first.primal_blocks),
                (1, 0, 0)
            ),
            _ => assert_eq!(
                (first.copied_blocks, first.dual_blocks, first.primal_blocks),
                (0, 1, 0)
            ),
        }
        assert!(
            auto.info.layers[1..]
                .iter()
                .all(|l| l.dual_blocks == 0 && l.copied_blocks == 0 && l.primal_blocks > 0)
        );
        for form in [LsForm::Primal, LsForm::Dual] {
            let other = run(form);
            assert_eq!(other.info.layers[0].copied_blocks, first.copied_blocks);
            // With the ridge towards zero only the first layer's form differs; the later
            // layers are primal in both runs and differ by the first layer's rounding carried
            // through fits of the merged network's own activations (1.3e-5 at the heads).
            let compared = match toward {
                RidgeToward::Average => auto.plan.fitted_layers(),
                _ => 1,
            };
            for f in 0..compared {
                let (w, b) = (
                    rel_fro(other.layer(f).0, auto.layer(f).0),
                    rel_fro(other.layer(f).1, auto.layer(f).1),
                );
                eprintln!(
                    "{toward:?} {form:?} vs auto, layer {f}: weights {w:.2e}, biases {b:.2e}"
                );
                assert!(
                    w <= MLP_FORMS_REL && b <= MLP_FORMS_REL,
                    "{toward:?} {form:?} layer {f}"
                );
            }
        }
    }
}

/// A small MLP whose hidden layers are wider than the sample count, so that blocks reading
/// hidden activations are solved in the dual form too (with their inputs gathered): the
/// three forms agree.
#[test]
fn primal_and_dual_forms_agree_on_wide_hidden_layers() {
    let dims = MlpDims {
        inputs: 20,
        hidden: &[30, 30],
        classes: 4,
        bias: true,
    };
    let n = 24;
    let mut rng = Rng::new(5);
    let model = |rng: &mut Rng| -> Vec<(Vec<f32>, Vec<f32>)> {
        [(30, 20), (30, 30), (4, 30)]
            .iter()
            .map(|&(o, i)| {
                let s = (2.0 / i as f32).sqrt();
                (
                    (0..o * i).map(|_| s * rng.normal_f32()).collect(),
                    (0..o).map(|_| 0.1 * rng.normal_f32()).collect(),
                )
            })
            .collect()
    };
    let (ma, mb) = (model(&mut rng), model(&mut rng));
    let (la, lb) = (refs(&ma), refs(&mb));
    let x: Vec<f32> = (0..n * 20).map(|_| rng.normal_f32()).collect();
    for heads in [Heads::Separate, Heads::Shared] {
        let run = |form| {
            let params = MlpMergeParams::default().with_form(form).with_rhs_chunk(7);
            core_merge(dims, heads, &la, &lb, &x, 1.5, &params).unwrap()
        };
        let auto = run(LsForm::Auto);
        assert_eq!(auto.info.layers[0].dual_blocks, 0, "21 columns, 24 samples");
        assert!(
            auto.info.layers[1].dual_blocks > 0,
            "hidden-input blocks in the dual form"
        );
        for form in [LsForm::Primal, LsForm::Dual] {
            let other = run(form);
            for f in 0..auto.plan.fitted_layers() {
                let w = rel_fro(other.layer(f).0, auto.layer(f).0);
                let b = rel_fro(other.layer(f).1, auto.layer(f).1);
                assert!(
                    w <= MLP_FORMS_REL && b <= MLP_FORMS_REL,
                    "{heads:?} {form:?} layer {f}: {w:e} {b:e}"
                );
            }
        }
    }
}

/// docs/ALGORITHM.md section 6: at budget 2.0 every unit is kept separate and the merged network
/// computes both models' logits, from a few hundred samples (the host needs enough samples to
/// determine the first layer's 785 columns for this; the core keeps the prior exactly outside
/// the samples' span).
#[test]
fn budget_two_reproduces_both_models() {
    let (a, b) = (load(MLP64_A), load(MLP64_B));
    let (la, lb) = (layers(&a), layers(&b));
    let s = samples(MERGE_SAMPLES, Selection::Strided);
    let core = core_merge(
        MLP64_DIMS,
        Heads::Separate,
        &la,
        &lb,
        &s.x,
        2.0,
        &MlpMergeParams::default(),
    )
    .unwrap();
    assert!(core.info.groups.iter().all(|g| g.merged == 0));
    let (x, labels) = test_set(1);
    let mut worst = [0.0f32; 2];
    for i in 0..1000 {
        let xi = &x[i * 784..(i + 1) * 784];
        let got = core_logits(&core, xi);
        let want = [original_logits(&la, xi), original_logits(&lb, xi)];
        for h in 0..2 {
            worst[h] = worst[h].max(rel_to_scale(&got[h], &want[h]));
        }
    }
    eprintln!(
        "budget 2.0: logits of heads a, b against A, B: {:e} {:e}",
        worst[0], worst[1]
    );
    assert!(
        worst.iter().all(|&w| w <= MLP_CORE_EXACT_LOGIT_REL),
        "{worst:?}"
    );
    // Whole test set: the merged heads classify exactly as the models do.
    let merged = core_accuracy(&core, &x, &labels);
    let originals = task_accuracy(
        |i| {
            let xi = &x[i * 784..(i + 1) * 784];
            vec![original_logits(&la, xi), original_logits(&lb, xi)]
        },
        &labels,
    );
    eprintln!("budget 2.0: accuracy merged {merged:?}, originals {originals:?}");
    assert_eq!(merged, originals);
    // For the record: the host on the same samples (not asserted; its first layer carries its
    // f32 rounding outside the samples' span, see the module docs).
    let settings = MergeSettings {
        budget: 2.0,
        ..MergeSettings::default()
    };
    let host = merge(&a, &b, &s.spec, &settings, &mut |_| {}).unwrap();
    let all = Forward::new(&host.graph, &host.weights)
        .unwrap()
        .logits(&x[..1000 * 784], 1000)
        .unwrap();
    let mut host_worst = [0.0f32; 2];
    for i in 0..1000 {
        let xi = &x[i * 784..(i + 1) * 784];
        let want = [original_logits(&la, xi), original_logits(&lb, xi)];
        for h in 0..2 {
            let got = &all[h][i * 5..(i + 1) * 5];
            host_worst[h] = host_worst[h].max(rel_to_scale(got, &want[h]));
        }
    }
    eprintln!(
        "budget 2.0, host on the same {MERGE_SAMPLES} samples: logits {:e} {:e}, accuracy {:?}",
        host_worst[0],
        host_worst[1],
        host_accuracy(&host, &x, &labels)
    );
}

/// Permutes the hidden units of an MLP: unit `i` of layer `l` of the copy is unit `p[l][i]`
/// of the original. The copy computes the same function.
fn permuted(l: &[LayerRef<'_>], dims: &MlpDims<'_>, p: &[Vec<usize>]) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut width_in = dims.inputs;
    let mut out = Vec::new();
    for (i, layer) in l.iter().enumerate() {
        let rows = layer.weight.len() / width_in;
        let row_of = |r: usize| if i < p.len() { p[i][r] } else { r };
        let col_of = |c: usize| if i > 0 { p[i - 1][c] } else { c };
        let w = (0..rows * width_in)
            .map(|k| layer.weight[row_of(k / width_in) * width_in + col_of(k % width_in)])
            .collect();
        let b = (0..rows).map(|r| layer.bias.unwrap()[row_of(r)]).collect();
        out.push((w, b));
        width_in = rows;
    }
    out
}

/// docs/ALGORITHM.md section 6: a model merged at budget 1.0 with a copy of itself whose hidden
/// units are permuted: matching recovers the permutation and the merged network computes the
/// model's logits, with one shared head and with two heads.
#[test]
fn self_merge_with_a_permuted_copy_reproduces_the_model() {
    let a = load(MLP64_A);
    let la = layers(&a);
    let mut rng = Rng::new(11);
    let p: Vec<Vec<usize>> = MLP64_DIMS
        .hidden
        .iter()
        .map(|&n| rng.permutation(n))
        .collect();
    let copy = permuted(&la, &MLP64_DIMS, &p);
    let lb: Vec<LayerRef<'_>> = copy
        .iter()
        .map(|(w, b)| LayerRef {
            weight: w,
            bias: Some(b),
        })
        .collect();
    let s = samples(MERGE_SAMPLES, Selection::Strided);
    let (x, _) = test_set(1);
    for heads in [Heads::Shared, Heads::Separate] {
        let core = core_merge(
            MLP64_DIMS,
            heads,
            &la,
            &lb,
            &s.x,
            1.0,
            &MlpMergeParams::default(),
        )
        .unwrap();
        for (g, pg) in p.iter().enumerate() {
            let units = core.plan.merged_units(&core.indices, g).unwrap();
            assert_eq!(
                units.merged().len(),
                pg.len(),
                "budget 1.0 merges every pair"
            );
            for (i, &bi) in units.perm().iter().enumerate() {
                assert_eq!(pg[bi], i, "A unit {i} is B unit {bi}");
            }
        }
        let mut worst = 0.0f32;
        for i in 0..1000 {
            let xi = &x[i * 784..(i + 1) * 784];
            let want = original_logits(&la, xi);
            for got in core_logits(&core, xi) {
                worst = worst.max(rel_to_scale(&got, &want));
            }
        }
        eprintln!("{heads:?}: self-merge logits against the model: {worst:e}");
        assert!(worst <= MLP_CORE_EXACT_LOGIT_REL, "{heads:?}: {worst}");
    }
}

/// The scratch formula of the module docs, recomputed here, and the sizes for the 784-64-64
/// pair: the f64 scratch stays far below a microcontroller's 1 MiB at a few hundred samples.
#[test]
fn scratch_is_what_the_formula_says_and_fits_a_microcontroller() {
    let params = MlpMergeParams::default();
    for n in [128usize, 256, 300, 400, 512] {
        for budget in [1.0, 1.2, 2.0] {
            let plan = mlp_merge_plan(&MLP64_DIMS, Heads::Separate, n, budget, &params).unwrap();
            let (k0, m0) = (plan.merged_pairs[0], plan.merged_widths[0]);
            let (k1, m1) = (plan.merged_pairs[1], plan.merged_widths[1]);
            let acts = 4 * 64 + 2 * m0.max(m1);
            // (columns with the bias, rows) of every block: the first layer reads the samples
            // (one block); hidden merged rows read [m, A, B], A-only rows [m, A], B-only rows
            // [m, B]; head a reads [m, A], head b [m, B].
            // A layer is a copy, with no scratch, when every group before it has no merged
            // pair: the first layer always, everything at budget 2.0.
            let mut blocks = Vec::new();
            if k0 > 0 {
                if k1 > 0 {
                    blocks.push((m0 + 1, k1));
                }
                if k1 < 64 {
                    blocks.push((65, 64 - k1));
                    blocks.push((k0 + (m0 - 64) + 1, m1 - 64));
                }
            }
            if k0 > 0 || k1 > 0 {
                blocks.push((65, 5));
                blocks.push((k1 + (m1 - 64) + 1, 5));
            }
            let mut work = 64 * 64 + 56 * 64;
            for (k, rows) in blocks {
                let c = rows.min(16);
                let need = if k > n {
                    n * (n + 1) / 2 + n * c
                } else {
                    k * (k + 1) / 2 + (k + 1) * c + k
                };
                work = work.max(need);
            }
            assert_eq!(plan.scratch_len, acts + work, "n {n} budget {budget}");
            assert_eq!(plan.index_len, 4 * 128);
            let (out_bytes, scratch_bytes, index_bytes) = plan.bytes();
            eprintln!(
                "n {n} budget {budget}: merged widths {:?}, f64 scratch {} ({scratch_bytes} \
                 bytes), indices {index_bytes} bytes, merged weights {out_bytes} bytes",
                plan.merged_widths, plan.scratch_len
            );
            if n == MERGE_SAMPLES {
                assert!(scratch_bytes + index_bytes <= SCRATCH_LIMIT_BYTES);
            }
        }
    }
}

/// The merge reads only what it wrote: scratch and indices full of NaN and `usize::MAX`
/// (`core_merge`) or of zeros give the same bits, and so do exactly sized and larger buffers.
#[test]
fn results_do_not_depend_on_scratch_contents_or_size() {
    let dims = MlpDims {
        inputs: 20,
        hidden: &[12, 9],
        classes: 3,
        bias: true,
    };
    let mut rng = Rng::new(9);
    let shapes = [(12, 20), (9, 12), (3, 9)];
    let model: Vec<Vec<(Vec<f32>, Vec<f32>)>> = (0..2)
        .map(|_| {
            shapes
                .iter()
                .map(|&(o, i)| {
                    (
                        (0..o * i)
                            .map(|_| rng.normal_f32() / (i as f32).sqrt())
                            .collect(),
                        (0..o).map(|_| 0.1 * rng.normal_f32()).collect(),
                    )
                })
                .collect()
        })
        .collect();
    let (la, lb) = (refs(&model[0]), refs(&model[1]));
    let x: Vec<f32> = (0..15 * 20).map(|_| rng.normal_f32()).collect();
    let params = MlpMergeParams::default();
    let first = core_merge(dims, Heads::Separate, &la, &lb, &x, 1.3, &params).unwrap();
    let plan = &first.plan;
    let mut out = vec![0.0f32; plan.output_len + 3];
    let mut scratch = vec![0.0f64; plan.scratch_len + 100];
    let mut indices = vec![0usize; plan.index_len + 5];
    let inputs = MlpMergeInputs {
        dims,
        heads: Heads::Separate,
        a: &la,
        b: &lb,
        samples: Samples::F32(&x),
        budget: 1.3,
    };
    mlp_merge(&inputs, &params, &mut out, &mut scratch, &mut indices).unwrap();
    assert_eq!(
        out[..plan.output_len]
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        first.out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

/// Byte samples read through a normalisation table (how a microcontroller keeps its merge
/// samples in flash) give the merge of the normalised f32 samples, bit for bit; a table value
/// that is not finite is refused where a byte uses it.
#[test]
fn byte_samples_through_a_table_equal_f32_samples() {
    let (a, b) = (load(MLP64_A), load(MLP64_B));
    let (la, lb) = (layers(&a), layers(&b));
    let s = samples(250, Selection::Strided);
    let table: [f32; 256] = std::array::from_fn(|v| Normalize::Symmetric.apply(v as f32));
    let params = MlpMergeParams::default();
    let budget = 1.2;
    let plan = mlp_merge_plan(&MLP64_DIMS, Heads::Separate, s.n, budget, &params).unwrap();
    let run = |samples: Samples<'_>| {
        let mut out = vec![f32::NAN; plan.output_len];
        let mut scratch = vec![f64::NAN; plan.scratch_len];
        let mut indices = vec![usize::MAX; plan.index_len];
        let inputs = MlpMergeInputs {
            dims: MLP64_DIMS,
            heads: Heads::Separate,
            a: &la,
            b: &lb,
            samples,
            budget,
        };
        mlp_merge(&inputs, &params, &mut out, &mut scratch, &mut indices).map(|info| (out, info))
    };
    let (want, want_info) = run(Samples::F32(&s.x)).unwrap();
    let (got, got_info) = run(Samples::U8 {
        data: &s.bytes,
        table: &table,
    })
    .unwrap();
    assert_eq!(got_info, want_info);
    assert!(
        got.iter()
            .zip(&want)
            .all(|(g, w)| g.to_bits() == w.to_bits()),
        "byte samples differ from f32 samples"
    );
    // A NaN for a byte value the samples use: refused at its first use.
    let used = s.bytes[3 * 784 + 400];
    let first = s.bytes.iter().position(|&v| v == used).unwrap();
    let mut bad = table;
    bad[usize::from(used)] = f32::NAN;
    assert_eq!(
        run(Samples::U8 {
            data: &s.bytes,
            table: &bad,
        })
        .map(|_| ()),
        Err(MlpMergeError::NonFinite {
            operand: MlpOperand::Samples,
            index: first,
        })
    );
    // A NaN for a byte value no sample uses is never read.
    let unused = (0..=255u8).find(|v| !s.bytes.contains(v));
    if let Some(v) = unused {
        let mut odd = table;
        odd[usize::from(v)] = f32::INFINITY;
        let (out, _) = run(Samples::U8 {
            data: &s.bytes,
            table: &odd,
        })
        .unwrap();
        assert!(
            out.iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits())
        );
    }
}

/// Every refusal names the problem, and nothing panics.
#[test]
fn bad_input_gives_the_right_error() {
    let a = load(MLP64_A);
    let b = load(MLP64_B);
    let (la, lb) = (layers(&a), layers(&b));
    let s = samples(64, Selection::Strided);
    let params = MlpMergeParams::default();
    let plan = mlp_merge_plan(&MLP64_DIMS, Heads::Separate, 64, 1.2, &params).unwrap();
    let (mut out, mut scratch, mut indices) = (
        vec![0.0f32; plan.output_len],
        vec![0.0f64; plan.scratch_len],
        vec![0usize; plan.index_len],
    );
    let inputs = MlpMergeInputs {
        dims: MLP64_DIMS,
        heads: Heads::Separate,
        a: &la,
        b: &lb,
        samples: Samples::F32(&s.x),
        budget: 1.2,
    };
    let mut run =
        |inputs: &MlpMergeInputs<'_>, params: &MlpMergeParams, sizes: (usize, usize, usize)| {
            mlp_merge(
                inputs,
                params,
                &mut out[..sizes.0],
                &mut scratch[..sizes.1],
                &mut indices[..sizes.2],
            )
            .map(|_| ())
        };
    let full = (plan.output_len, plan.scratch_len, plan.index_len);
    assert_eq!(run(&inputs, &params, full), Ok(()));

    // Scratch too small, each buffer.
    for (kind, sizes) in [
        (ScratchKind::Output, (full.0 - 1, full.1, full.2)),
        (ScratchKind::Scratch, (full.0, full.1 - 1, full.2)),
        (ScratchKind::Indices, (full.0, full.1, full.2 - 1)),
    ] {
        let (needed, provided) = match kind {
            ScratchKind::Output => (full.0, full.0 - 1),
            ScratchKind::Scratch => (full.1, full.1 - 1),
            ScratchKind::Indices => (full.2, full.2 - 1),
        };
        assert_eq!(
            run(&inputs, &params, sizes),
            Err(MlpMergeError::ScratchTooSmall {
                kind,
                needed,
                provided
            })
        );
    }

    // Non-finite values, named by operand and position.
    let mut bad_w = la[1].weight.to_vec();
    bad_w[123] = f32::NAN;
    let mut la_bad = la.clone();
    la_bad[1].weight = &bad_w;
    assert_eq!(
        run(
            &MlpMergeInputs {
                a: &la_bad,
                ..inputs
            },
            &params,
            full
        ),
        Err(MlpMergeError::NonFinite {
            operand: MlpOperand::Weight(Side::A, 1),
            index: 123
        })
    );
    let mut bad_b = lb[2].bias.unwrap().to_vec();
    bad_b[4] = f32::INFINITY;
    let mut lb_bad = lb.clone();
    lb_bad[2].bias = Some(&bad_b);
    assert_eq!(
        run(
            &MlpMergeInputs {
                b: &lb_bad,
                ..inputs
            },
            &params,
            full
        ),
        Err(MlpMergeError::NonFinite {
            operand: MlpOperand::Bias(Side::B, 2),
            index: 4
        })
    );
    let mut bad_x = s.x.clone();
    bad_x[5 * 784 + 17] = f32::NAN;
    assert_eq!(
        run(
            &MlpMergeInputs {
                samples: Samples::F32(&bad_x),
                ..inputs
            },
            &params,
            full
        ),
        Err(MlpMergeError::NonFinite {
            operand: MlpOperand::Samples,
            index: 5 * 784 + 17
        })
    );

    // Mismatched dims: both shapes named.
    let wrong = MlpDims {
        hidden: &[64, 32],
        ..MLP64_DIMS
    };
    assert_eq!(
        run(
            &MlpMergeInputs {
                dims: wrong,
                ..inputs
            },
            &params,
            full
        ),
        Err(MlpMergeError::ShapeMismatch {
            operand: MlpOperand::Weight(Side::A, 1),
            expected: (32, 64),
            found: 64 * 64
        })
    );
    assert_eq!(
        run(
            &MlpMergeInputs {
                b: &lb[..2],
                ..inputs
            },
            &params,
            full
        ),
        Err(MlpMergeError::ShapeMismatch {
            operand: MlpOperand::Layers(Side::B),
            expected: (3, 1),
            found: 2
        })
    );
    assert_eq!(
        run(
            &MlpMergeInputs {
                samples: Samples::F32(&s.x[..s.x.len() - 1]),
                ..inputs
            },
            &params,
            full
        ),
        Err(MlpMergeError::ShapeMismatch {
            operand: MlpOperand::Samples,
            expected: (63, 784),
            found: 64 * 784 - 1
        })
    );
    let mut short_bias = la.clone();
    short_bias[0].bias = Some(&la[0].bias.unwrap()[..63]);
    assert_eq!(
        run(
            &MlpMergeInputs {
                a: &short_bias,
                ..inputs
            },
            &params,
            full
        ),
        Err(MlpMergeError::ShapeMismatch {
            operand: MlpOperand::Bias(Side::A, 0),
            expected: (64, 1),
            found: 63
        })
    );
    let mut no_bias = lb.clone();
    no_bias[1].bias = None;
    assert_eq!(
        run(
            &MlpMergeInputs {
                b: &no_bias,
                ..inputs
            },
            &params,
            full
        ),
        Err(MlpMergeError::BiasMismatch {
            operand: MlpOperand::Bias(Side::B, 1),
            expected: true
        })
    );
    assert_eq!(
        run(
            &MlpMergeInputs {
                samples: Samples::F32(&[]),
                ..inputs
            },
            &params,
            full
        ),
        Err(MlpMergeError::NoSamples)
    );

    // Budgets outside [1, 2].
    for budget in [0.99, 2.01, f64::NAN, -1.0, f64::INFINITY] {
        let got = run(&MlpMergeInputs { budget, ..inputs }, &params, full);
        assert!(
            matches!(got, Err(MlpMergeError::BudgetOutOfRange { budget: b }) if b.to_bits() == budget.to_bits()),
            "{budget}: {got:?}"
        );
        let planned = mlp_merge_plan(&MLP64_DIMS, Heads::Separate, 64, budget, &params);
        assert!(matches!(
            planned,
            Err(MlpMergeError::BudgetOutOfRange { .. })
        ));
    }
    // Params and dims.
    let zero_ridge = params.with_relative_ridge(0.0);
    assert_eq!(
        run(&inputs, &zero_ridge, full),
        Err(MlpMergeError::InvalidRidge { relative: 0.0 })
    );
    let too_many = [8usize; MAX_HIDDEN + 1];
    let deep = MlpDims {
        hidden: &too_many,
        ..MLP64_DIMS
    };
    assert_eq!(
        mlp_merge_plan(&deep, Heads::Separate, 64, 1.0, &params),
        Err(MlpMergeError::TooManyLayers {
            hidden: MAX_HIDDEN + 1,
            max: MAX_HIDDEN
        })
    );
    let empty = MlpDims {
        hidden: &[64, 0],
        ..MLP64_DIMS
    };
    assert_eq!(
        mlp_merge_plan(&empty, Heads::Separate, 64, 1.0, &params),
        Err(MlpMergeError::EmptyLayer { layer: Some(1) })
    );
    let huge = MlpDims {
        inputs: usize::MAX / 2,
        ..MLP64_DIMS
    };
    assert_eq!(
        mlp_merge_plan(&huge, Heads::Separate, 64, 1.0, &params),
        Err(MlpMergeError::SizeOverflow)
    );
    let wide = MlpDims {
        hidden: &[usize::MAX / 2, 3],
        ..MLP64_DIMS
    };
    assert_eq!(
        mlp_merge_plan(&wide, Heads::Shared, 64, 1.5, &params),
        Err(MlpMergeError::SizeOverflow)
    );
    assert_eq!(
        mlp_merge_plan(&MLP64_DIMS, Heads::Separate, 0, 1.0, &params),
        Err(MlpMergeError::NoSamples)
    );
    // Index scratch that no merge wrote: the accessor does not read beyond its lists.
    let garbage = vec![usize::MAX; plan.index_len];
    let units = plan.merged_units(&garbage, 1).unwrap();
    assert_eq!(units.sources(0), (None, None));
    assert!(plan.merged_units(&garbage, 2).is_none());
    assert!(plan.merged_units(&garbage[1..], 0).is_none());
    // Absurd sample counts: the dual form's kernel does not fit in usize.
    assert_eq!(
        mlp_merge_plan(
            &MLP64_DIMS,
            Heads::Separate,
            usize::MAX / 4,
            1.0,
            &params.with_form(LsForm::Dual)
        ),
        Err(MlpMergeError::SizeOverflow)
    );
    // Display names the problem.
    let e = MlpMergeError::ScratchTooSmall {
        kind: ScratchKind::Scratch,
        needed: 10,
        provided: 3,
    };
    assert_eq!(
        e.to_string(),
        "f64 scratch too small: 10 elements needed, 3 provided"
    );
}

/// All-zero inputs of a hidden layer (a dead layer) leave a block without data: the ridge is
/// then 0 and the solve is refused as singular, naming the layer, as the host refuses it.
#[test]
fn a_block_without_data_is_singular() {
    let dims = MlpDims {
        inputs: 6,
        hidden: &[4],
        classes: 2,
        bias: false,
    };
    // Layer 0 maps everything to <= 0: the hidden layer is dead after the ReLU.
    let w0 = vec![-1.0f32; 24];
    let w1 = vec![0.5f32; 8];
    let l = [
        LayerRef {
            weight: &w0,
            bias: None,
        },
        LayerRef {
            weight: &w1,
            bias: None,
        },
    ];
    let x: Vec<f32> = (0..10 * 6).map(|i| (i % 7) as f32 * 0.1).collect();
    let got = core_merge(
        dims,
        Heads::Shared,
        &l,
        &l,
        &x,
        1.0,
        &MlpMergeParams::default(),
    );
    match got {
        Err(MlpMergeError::Driver(DriverError::Singular {
            layer: 1,
            ridge,
            retries: 0,
            ..
        })) => assert_eq!(ridge, 0.0),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a dead layer was fitted"),
    }
}

/// Extreme values planted in some cases of the robustness property.
const EXTREMES: [f32; 4] = [1e30, -1e30, 1e-30, 3e38];

proptest::proptest! {
    #![proptest_config(pleas_tests::config(64))]

    /// Any small MLP pair, any sample count (above or below the columns), any budget in
    /// [1, 2], any head choice and form: the merge either succeeds with finite weights or
    /// returns an error; it never panics.
    #[test]
    fn merges_of_small_random_mlps_succeed_or_fail_cleanly(
        inputs in 1usize..6,
        hidden in proptest::collection::vec(1usize..6, 0..3),
        classes in 1usize..4,
        n in 1usize..9,
        budget in 1.0f64..=2.0,
        shared in proptest::bool::ANY,
        bias in proptest::bool::ANY,
        form in proptest::sample::select(vec![LsForm::Auto, LsForm::Primal, LsForm::Dual]),
        values in proptest::collection::vec(-2.0f32..2.0, 400),
        planted in proptest::collection::vec((0usize..400, 0usize..4), 0..3),
    ) {
        let mut values = values;
        for (i, e) in planted {
            values[i] = EXTREMES[e];
        }
        let dims = MlpDims { inputs, hidden: &hidden, classes, bias };
        let heads = if shared { Heads::Shared } else { Heads::Separate };
        let mut it = values.iter().copied().cycle();
        let mut shapes = Vec::new();
        let mut w_in = inputs;
        for &h in hidden.iter().chain([&classes]) {
            shapes.push((h, w_in));
            w_in = h;
        }
        let model = |it: &mut dyn Iterator<Item = f32>| -> Vec<(Vec<f32>, Vec<f32>)> {
            shapes
                .iter()
                .map(|&(o, i)| ((0..o * i).map(|_| it.next().unwrap()).collect(), (0..o).map(|_| it.next().unwrap()).collect()))
                .collect()
        };
        let (ma, mb) = (model(&mut it), model(&mut it));
        let (mut la, mut lb) = (refs(&ma), refs(&mb));
        if !bias {
            for l in la.iter_mut().chain(lb.iter_mut()) {
                l.bias = None;
            }
        }
        let x: Vec<f32> = (0..n * inputs).map(|_| it.next().unwrap()).collect();
        let params = MlpMergeParams::default().with_form(form).with_rhs_chunk(2);
        if let Ok(m) = core_merge(dims, heads, &la, &lb, &x, budget, &params) {
            proptest::prop_assert!(m.out.iter().all(|v| v.is_finite()));
        }
    }
}
