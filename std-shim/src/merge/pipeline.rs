//! The whole merge: check the pair, prepare (fold batch-norm), match every group, turn the
//! budget into ratios and layouts, build the block-structured merged network, fit it by least
//! squares layer by layer, re-estimate batch-norm statistics, and report.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use pleas_core::assign::AuctionParams;
use pleas_core::forward::fold_batchnorm;
use pleas_core::graph::{Graph, Groups, Op, Weights, cost, node_macs, permutation_groups};
use pleas_core::linalg::symm_rows;
use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::lstsq::dual::{DualParams, dual_ridge_scratch_len, dual_ridge_solve};
use pleas_core::lstsq::{LstsqError, NormalEquations, RidgeParams};
use pleas_core::merge::blocks::OutputBlock;
use pleas_core::merge::budget::{
    flop_ratio, param_ratio, stage_schedule, uniform_ratio, weighted_ratios,
};
use pleas_core::merge::fit::{FitError, fit_layer, layer_loss_with_product};
use pleas_core::merge::layout::GroupLayout;
use pleas_core::merge::matching::{GroupMatch, match_group};
use pleas_core::merge::weight_matching::{WeightMatchParams, weight_matching};
use pleas_core::similarity::Metric;

use super::activation_stats::{activation_moments_streamed, group_similarities};
use super::merged_model::{self, HeadMode, MergedModel, TargetRule};
use super::plan;
use super::settings::{
    BnMode, FitMode, HeadChoice, MatchingMode, MergeSettings, RatioMode, RidgePrior, SHARD_SAMPLES,
};
use super::store::Net;
use super::stream::{Barrier, FitRows, Networks, PassResult, StreamParams, Streamer};
use crate::error::Error;
use crate::io::data::{DataSource, DataSpec};
use crate::model::Model;
use crate::par::{Parallelism, map_jobs, shard_ranges};
use crate::ranks::{Ranks, Single, agree};

/// The stage that streams the data once through both models for the matching statistics;
/// one step per wave of shards.
const STATISTICS: &str = "matching statistics";

/// Progress of a pass over the `n` samples' shards as [`Event`]s of `stage`: the stage event
/// now, then a step per wave with an ETA from the rate so far (every shard has the same
/// number of samples, but the last).
fn shard_progress<'p>(
    stage: &'static str,
    n: usize,
    progress: &'p mut dyn FnMut(&Event),
) -> impl FnMut(usize, usize) + 'p {
    progress(&Event::Stage {
        name: stage,
        total: shard_ranges(n, SHARD_SAMPLES).len(),
    });
    let start = Instant::now();
    move |done, total| {
        let elapsed = start.elapsed().as_secs_f64();
        progress(&Event::Step {
            stage,
            done,
            total,
            what: format!("{done} of {total} shards"),
            elapsed,
            eta: (done > 0).then(|| elapsed * (total - done) as f64 / done as f64),
        });
    }
}

/// A progress event.
#[derive(Debug, Clone)]
pub enum Event {
    /// A stage starts.
    Stage {
        /// Stage name.
        name: &'static str,
        /// Units of work in it.
        total: usize,
    },
    /// One unit of the current stage is done.
    Step {
        /// Stage name.
        stage: &'static str,
        /// Units done.
        done: usize,
        /// Units in the stage.
        total: usize,
        /// What was done.
        what: String,
        /// Seconds since the stage started.
        elapsed: f64,
        /// Estimated seconds left in the stage, where the stage's work is estimated: the
        /// least-squares passes are weighted by their arithmetic (forward passes, Gram and
        /// cross moments over every sample, the block solves), so an early pass over a wide,
        /// cheap layer does not promise a fast finish ([`pass_cost`]).
        eta: Option<f64>,
    },
}

/// Per-group outcome.
#[derive(Debug, Clone)]
pub struct GroupReport {
    /// Group name.
    pub name: String,
    /// Units per model.
    pub width: usize,
    /// Fraction kept separate.
    pub ratio: f64,
    /// Pairs merged.
    pub merged: usize,
    /// Width in the merged model.
    pub merged_width: usize,
    /// Mean score of the merged pairs (NaN if none).
    pub mean_merged_score: f64,
    /// Sum of the matched pairs' scores.
    pub total_score: f64,
    /// Assignment phases, bids and certified optimality bound.
    pub auction: Option<(u32, u64, f64)>,
}

/// Per-layer outcome of the least-squares fit.
#[derive(Debug, Clone)]
pub struct LayerReport {
    /// Node name in the merged graph.
    pub name: String,
    /// Dense columns of its normal equations.
    pub columns: usize,
    /// Output channels.
    pub outputs: usize,
    /// Largest ridge used over its blocks.
    pub ridge: f64,
    /// `||X W - T||^2 / ||T||^2` with the fitted weights (for solved blocks, the solve's own
    /// measure of its f64 solution before the weights are stored as f32).
    pub relative_residual: f64,
    /// The same with the permute-and-average weights.
    pub average_relative_residual: f64,
    /// Seconds of its data pass and solve.
    pub seconds: f64,
    /// With `diagnose`: the fitted weights' relative residual on the merged network's own
    /// inputs (for fits on the original models' inputs).
    pub own_input_relative_residual: Option<f64>,
}

/// Everything a merge produced.
#[derive(Debug, Clone)]
pub struct MergeOutcome {
    /// The merged graph.
    pub graph: Graph,
    /// Its weights.
    pub weights: Weights,
    /// Head names and their classes (`classes.{output}` metadata).
    pub heads: Vec<(String, Vec<i64>)>,
    /// Heads resolved.
    pub head_mode: HeadMode,
    /// Groups.
    pub groups: Vec<GroupReport>,
    /// Fitted layers.
    pub layers: Vec<LayerReport>,
    /// FLOP ratio of the merged graph (counted on it) to one model.
    pub flop_ratio: f64,
    /// Parameter ratio likewise.
    pub param_ratio: f64,
    /// FLOP ratio the budget model predicted.
    pub planned_flop_ratio: f64,
    /// Merge samples used.
    pub samples: usize,
    /// Processes that computed it (MPI ranks; 1 without MPI).
    pub ranks: usize,
    /// Seconds per stage.
    pub timings: Vec<(&'static str, f64)>,
}

fn err(stage: &'static str, reason: impl Into<String>) -> Error {
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

fn read_group_weights(path: &Path, groups: &Groups) -> Result<Vec<f64>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| Error::Data {
        path: path.to_path_buf(),
        reason,
    };
    let map: BTreeMap<String, f64> = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a JSON object of numbers: {e}")))?
    } else {
        toml::from_str(&text).map_err(|e| bad(format!("not a TOML table of numbers: {e}")))?
    };
    let names: Vec<&str> = groups.groups().iter().map(|g| g.name.as_str()).collect();
    if let Some(k) = map.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown group `{k}` (groups: {})",
            names.join(", ")
        )));
    }
    names
        .iter()
        .map(|n| match map.get(*n) {
            Some(&w) if w.is_finite() && w >= 0.0 => Ok(w),
            Some(&w) => Err(bad(format!("group `{n}` has weight {w}; need >= 0"))),
            None => Err(bad(format!("no weight for group `{n}`"))),
        })
        .collect()
}

/// Merges models `a` and `b` on the merge data `data` with `settings`, reporting progress to
/// `progress`.
pub fn merge(
    a: &Model,
    b: &Model,
    data: &DataSpec,
    settings: &MergeSettings,
    progress: &mut dyn FnMut(&Event),
) -> Result<MergeOutcome, Error> {
    merge_on(a, b, data, settings, &Single, progress)
}

/// [`merge`] run by every one of `ranks` (see [`crate::ranks`]): each rank computes its shards
/// of every data pass, and every rank returns the same outcome, byte for byte the
/// single-process one. A failure on any rank makes every rank return
/// [`Error::RankFailed`].
pub fn merge_on(
    a: &Model,
    b: &Model,
    data: &DataSpec,
    settings: &MergeSettings,
    ranks: &dyn Ranks,
    progress: &mut dyn FnMut(&Event),
) -> Result<MergeOutcome, Error> {
    agree(ranks, merge_ranked(a, b, data, settings, ranks, progress))
}

fn merge_ranked(
    a: &Model,
    b: &Model,
    data: &DataSpec,
    settings: &MergeSettings,
    ranks: &dyn Ranks,
    progress: &mut dyn FnMut(&Event),
) -> Result<MergeOutcome, Error> {
    let mut timings = Vec::new();
    let t0 = Instant::now();
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
    let (ca, cb) = (&a.heads[0].classes, &b.heads[0].classes);
    let head_mode = match settings.heads {
        HeadChoice::Shared => {
            if ca.len() != cb.len() {
                return Err(err(
                    "heads",
                    "one shared head needs heads of the same width".to_string(),
                ));
            }
            HeadMode::Shared
        }
        HeadChoice::Separate => HeadMode::Separate,
        HeadChoice::Auto if ca == cb => HeadMode::Shared,
        HeadChoice::Auto => HeadMode::Separate,
    };
    // Prepare: fold batch-norm or keep it.
    let (graph, wa, wb) = match settings.bn {
        BnMode::Fold => {
            let fold_err =
                |e: pleas_core::graph::GraphError| err("batch-norm folding", e.to_string());
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
    let groups = permutation_groups(&graph);
    let layers = plan::layers(&graph, &groups);
    let costs = plan::layer_costs(&graph, &layers);
    let par = Parallelism::from_count(settings.threads);
    let batch = chunk_samples(&graph, settings.batch);
    timings.push(("prepare", t0.elapsed().as_secs_f64()));

    // Step 1: matching.
    let t1 = Instant::now();
    let widths: Vec<usize> = groups.groups().iter().map(|g| g.width).collect();
    let (scores, correlations): (Vec<Vec<f64>>, Option<Vec<Vec<f64>>>) = match settings.matching {
        MatchingMode::Activation => {
            let mut accs = activation_moments_streamed(
                &graph,
                &groups,
                &wa,
                &wb,
                data,
                batch,
                SHARD_SAMPLES,
                par,
                ranks,
                &mut shard_progress(STATISTICS, n, progress),
            )?;
            let s = group_similarities(&mut accs, settings.metric)?;
            let c = group_similarities(&mut accs, Metric::Correlation)?;
            (s, Some(c))
        }
        MatchingMode::Weight => {
            let wm = weight_matching(&groups, &wa, &wb, &WeightMatchParams::default())
                .map_err(|e| err("weight matching", e.to_string()))?;
            (wm.scores, None)
        }
        MatchingMode::Identity => (
            widths
                .iter()
                .map(|&w| {
                    let mut s = vec![0.0; w * w];
                    for i in 0..w {
                        s[i * w + i] = 1.0;
                    }
                    s
                })
                .collect(),
            None,
        ),
    };
    // Budget -> ratios.
    let ratios: Vec<f64> = match &settings.ratios {
        RatioMode::Uniform => {
            let r = uniform_ratio(&costs, groups.len(), settings.budget)
                .map_err(|e| err("budget", e.to_string()))?;
            vec![r; groups.len()]
        }
        RatioMode::Stages => {
            let stages = plan::group_stages(&graph, &groups);
            stage_schedule(&costs, &stages, settings.budget)
                .map_err(|e| err("budget", e.to_string()))?
                .ratios
        }
        RatioMode::Weighted { file } => {
            let w = match file {
                Some(p) => read_group_weights(p, &groups)?,
                None => match &correlations {
                    Some(c) => c
                        .iter()
                        .zip(&widths)
                        .map(|(s, &w)| {
                            // 1 - mean correlation of the best assignment's diagonal proxy:
                            // the mean over A's units of their best correlation with B's.
                            let best: f64 = (0..w)
                                .map(|i| {
                                    s[i * w..(i + 1) * w]
                                        .iter()
                                        .copied()
                                        .fold(f64::NEG_INFINITY, f64::max)
                                })
                                .sum();
                            (1.0 - best / w as f64).max(0.0)
                        })
                        .collect(),
                    None => {
                        return Err(err(
                            "budget",
                            "measured group weights need activation matching; give \
                             --group-weights FILE",
                        ));
                    }
                },
            };
            weighted_ratios(&costs, &widths, &w, settings.budget)
                .map_err(|e| err("budget", e.to_string()))?
        }
    };
    progress(&Event::Stage {
        name: "matching",
        total: groups.len(),
    });
    let auction = AuctionParams::default();
    let mut matches: Vec<GroupMatch> = Vec::with_capacity(groups.len());
    let mut group_reports = Vec::new();
    for (g, pg) in groups.groups().iter().enumerate() {
        let w = pg.width;
        let sim = MatRef::new(&scores[g], w, w).map_err(|e| err("matching", e.to_string()))?;
        let gm = match_group(sim, ratios[g], &auction)
            .map_err(|e| err("matching", format!("group `{}`: {e}", pg.name)))?;
        group_reports.push(GroupReport {
            name: pg.name.clone(),
            width: w,
            ratio: ratios[g],
            merged: gm.layout.merged_count(),
            merged_width: gm.layout.merged_width(),
            mean_merged_score: gm.mean_merged_score,
            total_score: gm.total_score,
            auction: (settings.matching != MatchingMode::Identity).then_some((
                gm.auction.phases,
                gm.auction.bids,
                gm.auction.optimality_bound,
            )),
        });
        progress(&Event::Step {
            stage: "matching",
            done: g + 1,
            total: groups.len(),
            what: pg.name.clone(),
            elapsed: t1.elapsed().as_secs_f64(),
            eta: None,
        });
        matches.push(gm);
    }
    let layouts: Vec<GroupLayout> = matches.into_iter().map(|m| m.layout).collect();
    timings.push(("matching", t1.elapsed().as_secs_f64()));

    // The merged network, permute-and-average.
    let mut merged = merged_model::build(&graph, &groups, &layers, &layouts, head_mode, &wa, &wb)?;
    let average_weights = merged.weights.clone();
    let mut weights = std::mem::take(&mut merged.weights);

    // Step 2: least squares and batch-norm statistics.
    let t2 = Instant::now();
    let exact = exact_channels(&merged, &layouts);
    let barriers = plan_passes(&merged, settings, &exact);
    let total = barriers.len();
    let pass_costs: Vec<f64> = barriers
        .iter()
        .map(|b| pass_cost(&merged, &graph, b, n))
        .collect();
    let total_cost: f64 = pass_costs.iter().sum();
    let mut done_cost = 0.0;
    progress(&Event::Stage {
        name: "least squares",
        total,
    });
    let mut layer_reports = Vec::new();
    {
        let nets = Networks {
            original: &graph,
            a: &wa,
            b: &wb,
            merged: &merged,
            layouts: &layouts,
        };
        let params = StreamParams {
            batch,
            par,
            shard_samples: SHARD_SAMPLES,
            memory_budget: settings.memory_budget,
            spill_dir: settings.spill_dir.clone(),
        };
        let mut streamer = Streamer::new(nets, params, data.clone(), n);
        let mut fits_done = false;
        for (i, barrier) in barriers.iter().enumerate() {
            let tl = Instant::now();
            if let Barrier::BatchNorm { .. } = barrier
                && !fits_done
                && settings.fit == FitMode::Original
            {
                // A and B are no longer needed.
                streamer.reset(Net::A);
                streamer.reset(Net::B);
                fits_done = true;
            }
            let result = streamer.pass(barrier, &barriers[i + 1..], &weights, ranks)?;
            let what = match (barrier, result) {
                (Barrier::Fit { layers: ls, .. }, PassResult::Fit(acc, rows)) => {
                    let reports = solve_fit(
                        &merged,
                        ls,
                        acc,
                        rows.as_deref(),
                        settings.ridge,
                        settings.ridge_prior,
                        &exact,
                        &mut weights,
                        &average_weights,
                        tl,
                        par,
                    )?;
                    let names: Vec<String> = reports.iter().map(|r| r.name.clone()).collect();
                    layer_reports.extend(reports);
                    names.join(", ")
                }
                (Barrier::BatchNorm { node }, PassResult::BatchNorm(m)) => {
                    let Op::BatchNorm {
                        running_mean,
                        running_var,
                        ..
                    } = &merged.graph.node(*node).op
                    else {
                        return Err(err("batch-norm", "not a batch-norm node"));
                    };
                    let var = m.variance();
                    let keep = &exact[*node];
                    for (name, values) in [(running_mean, &m.mean), (running_var, &var)] {
                        if let Some(t) = weights.get_mut(name) {
                            for ((d, &v), &exact) in t.data_mut().iter_mut().zip(values).zip(keep) {
                                if !exact {
                                    *d = v as f32;
                                }
                            }
                        }
                    }
                    merged.graph.node(*node).name.clone()
                }
                _ => return Err(err("least squares", "pass returned the wrong result")),
            };
            done_cost += pass_costs[i];
            let elapsed = t2.elapsed().as_secs_f64();
            progress(&Event::Step {
                stage: "least squares",
                done: i + 1,
                total,
                what,
                elapsed,
                eta: (done_cost > 0.0).then(|| elapsed * (total_cost - done_cost) / done_cost),
            });
        }
        if settings.diagnose && settings.fit == FitMode::Original {
            // The fitted layers' residuals on the merged network's own inputs: what they meet
            // at inference, as opposed to the layout of the original models' inputs.
            for net in [Net::A, Net::B, Net::M] {
                streamer.reset(net);
            }
            let seq = MergeSettings {
                fit: FitMode::Sequential,
                bn: BnMode::Fold,
                ..settings.clone()
            };
            let passes: Vec<Barrier> = plan_passes(&merged, &seq, &exact)
                .into_iter()
                .filter(|b| matches!(b, Barrier::Fit { .. }))
                .collect();
            for (i, barrier) in passes.iter().enumerate() {
                let Barrier::Fit { layers: ls, .. } = barrier else {
                    continue;
                };
                let PassResult::Fit(mut acc, _) =
                    streamer.pass(barrier, &passes[i + 1..], &weights, ranks)?
                else {
                    return Err(err("diagnosis", "pass returned the wrong result"));
                };
                for (name, residual) in own_input_residuals(&merged, ls, &mut acc, &weights, par)? {
                    if let Some(r) = layer_reports.iter_mut().find(|r| r.name == name) {
                        r.own_input_relative_residual = Some(residual);
                    }
                }
            }
        }
    }
    timings.push(("least squares", t2.elapsed().as_secs_f64()));
    if let Some((name, index)) = weights.iter().find_map(|(k, t)| {
        t.data()
            .iter()
            .position(|v| !v.is_finite())
            .map(|i| (k.clone(), i))
    }) {
        return Err(err(
            "least squares",
            format!("tensor `{name}` has a non-finite value at {index}"),
        ));
    }
    let heads = match head_mode {
        HeadMode::Shared => vec![(merged.graph.outputs()[0].name.clone(), ca.clone())],
        HeadMode::Separate => vec![("a".to_string(), ca.clone()), ("b".to_string(), cb.clone())],
    };
    let original = cost(&graph);
    let merged_cost = cost(&merged.graph);
    let planned = flop_ratio(&costs, &ratios);
    let _ = param_ratio(&costs, &ratios);
    timings.push(("total", t0.elapsed().as_secs_f64()));
    Ok(MergeOutcome {
        graph: merged.graph,
        weights,
        heads,
        head_mode,
        groups: group_reports,
        layers: layer_reports,
        flop_ratio: merged_cost.macs as f64 / original.macs.max(1) as f64,
        param_ratio: merged_cost.params as f64 / original.params.max(1) as f64,
        planned_flop_ratio: planned,
        samples: n,
        ranks: ranks.size(),
        timings,
    })
}

/// Bytes of activations one chunk of one thread may hold, A's, B's and the merged network's
/// together: a chunk keeps every node a pass computes for its samples, so at 224x224 a
/// ResNet-50 sample holds about 92 MB per network and 64 samples per chunk held 17 GB.
pub const CHUNK_BYTES: usize = 1 << 30;

/// Samples per chunk: `batch`, or fewer so that four networks' activations of one chunk (A, B
/// and a merged network up to twice as wide) fit in [`CHUNK_BYTES`]; at least 1. It depends on
/// the architecture only, never on the thread count (chunks are the f32 accumulation blocks).
pub fn chunk_samples(graph: &Graph, batch: usize) -> usize {
    let per_sample: usize = graph.nodes().iter().map(|n| n.shape.len() * 4).sum();
    (CHUNK_BYTES / (4 * per_sample).max(1)).clamp(1, batch.max(1))
}

/// Estimated arithmetic of one least-squares pass over `samples` samples, in multiply-adds:
/// for a fit, the forward steps of A, B and the merged network through its layers, the Gram
/// and cross moments (`positions x (d^2 / 2 + d t)` per sample) and the Cholesky solve of each
/// output block (`k^3 / 3 + k^2 rows` for `k` columns); for a batch-norm pass, the merged
/// network's step to it. Only the ratios matter (the ETA scales elapsed time by them).
pub fn pass_cost(merged: &MergedModel, original: &Graph, barrier: &Barrier, samples: usize) -> f64 {
    let n = samples as f64;
    match barrier {
        Barrier::Fit { layers, .. } => {
            let Some(first) = layers.first().map(|&l| &merged.layers[l]) else {
                return 0.0;
            };
            let shape = merged.graph.node(first.node).shape;
            let positions = (shape.h * shape.w) as f64;
            let d = first.columns() as f64;
            let t: f64 = layers
                .iter()
                .map(|&l| merged.layers[l].outputs as f64)
                .sum();
            let forward: f64 = layers
                .iter()
                .map(|&l| {
                    let node = merged.layers[l].node;
                    let src = merged.source_node[node];
                    node_macs(&merged.graph, node) as f64 + 2.0 * node_macs(original, src) as f64
                })
                .sum();
            let solve: f64 = layers
                .iter()
                .flat_map(|&l| &merged.layers[l].blocks)
                .map(|b| {
                    let k = b.cols.len() as f64;
                    k * k * k / 3.0 + k * k * b.rows.len() as f64
                })
                .sum();
            n * (forward + positions * (d * d / 2.0 + d * t)) + solve
        }
        Barrier::BatchNorm { node } => n * merged.graph.node(*node).shape.len() as f64,
    }
}

/// The data passes in order: fits (layers reading the same input with the same geometry share
/// one pass) and, with batch-norm kept, one pass per batch-norm node (after all fits for
/// original inputs; interleaved in node order for the sequential fit).
fn plan_passes(
    merged: &MergedModel,
    settings: &MergeSettings,
    exact: &[Vec<bool>],
) -> Vec<Barrier> {
    let mut fits: Vec<(usize, Vec<usize>)> = Vec::new();
    if settings.fit != FitMode::Average {
        let mut by_input: BTreeMap<(usize, String, bool), usize> = BTreeMap::new();
        for (i, l) in merged.layers.iter().enumerate() {
            let input = merged.graph.node(l.node).inputs[0];
            let key = (input, format!("{:?}", l.kind), l.bias);
            match by_input.get(&key) {
                Some(&f) => fits[f].1.push(i),
                None => {
                    by_input.insert(key, fits.len());
                    fits.push((l.node, vec![i]));
                }
            }
        }
    }
    let sequential = settings.fit == FitMode::Sequential;
    let mut passes: Vec<(usize, u8, Barrier)> = fits
        .into_iter()
        .map(|(node, layers)| (node, 0, Barrier::Fit { layers, sequential }))
        .collect();
    if settings.bn == BnMode::Keep {
        for (id, node) in merged.graph.nodes().iter().enumerate() {
            if matches!(node.op, Op::BatchNorm { .. }) && exact[id].iter().any(|&e| !e) {
                let key = if sequential || settings.fit == FitMode::Average {
                    id
                } else {
                    usize::MAX / 2 + id
                };
                passes.push((key, 1, Barrier::BatchNorm { node: id }));
            }
        }
    }
    passes.sort_by_key(|(k, o, _)| (*k, *o));
    passes.into_iter().map(|(_, _, b)| b).collect()
}

/// Solves the fits of one pass, stores the weights and reports each layer: from the normal
/// equations of the accumulated moments, or, when the pass kept its rows (fewer rows than
/// columns), in sample space from the rows ([`sample_space_fit`]).
///
/// With the ridge towards the permute-and-average weights, a block whose columns all read
/// exact channels (`exact`, from [`exact_channels`]) keeps those weights without a solve: each
/// of its rows' targets is the same combination of its sources' outputs that the prior
/// computes from exact copies of their inputs, so the prior has zero loss and zero ridge
/// penalty and is the problem's unique minimiser. Solving instead would set the directions the
/// merge data leaves unexcited from f32 rounding divided by the ridge, which on rank-deficient
/// inputs (units that are functions of a few others) moves the model off its copy.
#[allow(clippy::too_many_arguments)]
fn solve_fit(
    merged: &MergedModel,
    layer_ids: &[usize],
    mut acc: crate::par::OwnedGram,
    rows: Option<&FitRows>,
    ridge: f64,
    prior: RidgePrior,
    exact: &[Vec<bool>],
    weights: &mut Weights,
    average: &Weights,
    started: Instant,
    par: Parallelism,
) -> Result<Vec<LayerReport>, Error> {
    let stage = "least squares";
    let d = acc.dim();
    let t = acc.targets();
    let moments = Moments::read(&mut acc, stage)?;
    // The accumulator's totals are no longer needed: free them before the solves.
    drop(acc);
    let (g, r, tt) = (&moments.g, &moments.r, &moments.tt);
    let params = RidgeParams::default().with_relative_ridge(ridge);
    let mut reports = Vec::new();
    let mut offset = 0;
    let solve_time = started.elapsed().as_secs_f64();
    for &li in layer_ids {
        let layer = &merged.layers[li];
        let name = merged.graph.node(layer.node).name.clone();
        let shifted: Vec<OutputBlock> = layer
            .blocks
            .iter()
            .map(|b| OutputBlock {
                rows: b.rows.start + offset..b.rows.end + offset,
                cols: b.cols.clone(),
            })
            .collect();
        // Ridge towards the permute-and-average weights W0: solve for W - W0 with the cross
        // moment R - G W0 (per block, on its own columns), so that directions the merge data
        // does not excite keep W0 instead of shrinking to zero. `W0 G` also gives W0's loss.
        let avg_dense = layer.dense(average);
        let avg_g = moments.product(&avg_dense, layer.outputs, par);
        let prior = match prior {
            RidgePrior::Average => Some(&avg_dense),
            RidgePrior::Zero => None,
        };
        // Blocks whose prior is their exact solution (see above), and the others, to solve.
        let input = &exact[merged.graph.node(layer.node).inputs[0]];
        let copies: Vec<bool> = layer
            .blocks
            .iter()
            .map(|b| prior.is_some() && reads_exact(layer, b, input))
            .collect();
        let to_solve: Vec<usize> = (0..copies.len()).filter(|&i| !copies[i]).collect();
        // Per output, the permute-and-average loss ||X w0_o - t_o||^2, from `W0 G`.
        let avg_losses: Vec<f64> = moments.output_losses(offset, &avg_dense, &avg_g, layer.outputs);
        // Every solved block's weights, ridge and loss (when the solve measured it).
        let solved: Vec<(Vec<f64>, f64, Option<f64>)> = if to_solve.is_empty() {
            Vec::new()
        } else if let Some(rows) = rows {
            let blocks = to_solve.iter().map(|&i| &layer.blocks[i]);
            sample_space_fit(blocks, rows, d, t, offset, prior.map(Vec::as_slice), ridge)
                .map_err(|e| err(stage, format!("layer `{name}`: {e}")))?
                .into_iter()
                .map(|(w, ridge)| (w, ridge, None))
                .collect()
        } else {
            let mut cross_fit = r.clone();
            if prior.is_some() {
                // W0 is zero outside each block's columns, so row o of `W0 G` at column i is
                // the block's sum over its own columns.
                for b in &layer.blocks {
                    for o in b.rows.clone() {
                        for &i in &b.cols {
                            cross_fit[i * t + offset + o] -= avg_g[o * d + i];
                        }
                    }
                }
            }
            // With the prior, the solve regresses the residual targets `t - X w0`, whose
            // energies are the permute-and-average losses: its residual is then the fitted
            // weights' loss relative to them, and no further `W G` product is needed.
            let mut energies = tt.to_vec();
            if prior.is_some() {
                for (o, &l) in avg_losses.iter().enumerate() {
                    energies[offset + o] = l;
                }
            }
            let eqs = NormalEquations {
                gram: MatRef::new(g, d, d).expect("d x d"),
                cross: MatRef::new(&cross_fit, d, t).expect("d x t"),
                target_sq_sums: &energies,
            };
            let blocks: Vec<OutputBlock> = to_solve.iter().map(|&i| shifted[i].clone()).collect();
            // Blocks are independent solves: one job each, results in block order.
            let solves = map_jobs(par, blocks.len(), |k| {
                fit_layer(eqs, &blocks[k..k + 1], params)
            });
            let fitted: Result<Vec<Vec<_>>, FitError> = solves.into_iter().collect();
            let mut fits: Vec<_> = fitted
                .map_err(|e| {
                    let hint = match e {
                        FitError::Solve {
                            error: LstsqError::NotPositiveDefinite { .. },
                            ..
                        } => format!(
                            " (the merge data do not determine this block, and ridge {ridge:e} is \
                         below the rounding of its Gram; a larger --ridge, e.g. the default \
                         1e-6, or more merge data regularise it)"
                        ),
                        _ => String::new(),
                    };
                    err(stage, format!("layer `{name}`: {e}{hint}"))
                })?
                .into_iter()
                .flatten()
                .collect();
            if let Some(w0) = &prior {
                for (f, b) in fits
                    .iter_mut()
                    .zip(to_solve.iter().map(|&i| &layer.blocks[i]))
                {
                    let nc = b.cols.len();
                    for (r_i, o) in b.rows.clone().enumerate() {
                        for (c, &j) in b.cols.iter().enumerate() {
                            f.weights[r_i * nc + c] += w0[o * d + j];
                        }
                    }
                }
            }
            fits.into_iter()
                .map(|f| {
                    let energy: f64 = f.rows.clone().map(|o| energies[o]).sum();
                    (
                        f.weights,
                        f.info.ridge,
                        Some(f.info.relative_residual * energy),
                    )
                })
                .collect()
        };
        // Every block's weights, ridge and loss: the prior's (no ridge, its own loss) for
        // copies, else the solve's.
        let mut solved = solved.into_iter();
        let mut fits: Vec<(Vec<f64>, f64, Option<f64>)> = Vec::with_capacity(layer.blocks.len());
        for (b, &copy) in layer.blocks.iter().zip(&copies) {
            if copy {
                let w0 = prior.expect("copies need the prior");
                let w = b
                    .rows
                    .clone()
                    .flat_map(|o| b.cols.iter().map(move |&j| w0[o * d + j]))
                    .collect();
                fits.push((w, 0.0, Some(b.rows.clone().map(|o| avg_losses[o]).sum())));
            } else {
                fits.push(solved.next().ok_or_else(|| {
                    err(stage, format!("layer `{name}`: a block's fit is missing"))
                })?);
            }
        }
        let mut max_ridge: f64 = 0.0;
        for (bi, (w, ridge, _)) in fits.iter().enumerate() {
            layer.store_block(bi, w, weights);
            max_ridge = max_ridge.max(*ridge);
        }
        // Losses of the fitted and the permute-and-average weights on this layer's targets;
        // the fitted one from the solves where they measured it (of the f64 solution, before
        // its f32 storage), else from the stored weights' product with the Gram.
        let o = layer.outputs;
        let energy = tt[offset..offset + o]
            .iter()
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        let fitted = match fits.iter().map(|f| f.2).sum::<Option<f64>>() {
            Some(loss) => loss.max(0.0) / energy,
            None => {
                let fitted_dense = layer.dense(weights);
                let fitted_g = moments.product(&fitted_dense, o, par);
                moments
                    .relative_residual(offset, &fitted_dense, &fitted_g, o)
                    .map_err(|e| err(stage, format!("layer `{name}`: {e}")))?
            }
        };
        let avg = avg_losses.iter().sum::<f64>().max(0.0) / energy;
        reports.push(LayerReport {
            name,
            columns: d,
            outputs: o,
            ridge: max_ridge,
            relative_residual: fitted,
            average_relative_residual: avg,
            seconds: solve_time / layer_ids.len() as f64,
            own_input_relative_residual: None,
        });
        offset += o;
    }
    Ok(reports)
}

/// The ridge fit of each of `blocks` (output blocks of one layer) in sample space
/// ([`pleas_core::lstsq::dual`]): `W = W0 + X_b^T (X_b X_b^T + lambda I)^{-1} (T_b - X_b W0^T)`
/// over the kept rows, `X_b` the block's columns, `T_b` its targets (columns `offset + rows` of
/// the pass's `t` targets), `W0` the prior (`None`: zero). The ridge rule is the primal solve's
/// (relative to the mean diagonal of the block's `X^T X`), so both forms solve the same problem;
/// here the directions the rows do not reach keep `W0` exactly instead of being set by f32
/// rounding of a rank-deficient Gram. Returns each of `blocks`' `rows x cols` weights and
/// ridge.
fn sample_space_fit<'b>(
    blocks: impl ExactSizeIterator<Item = &'b OutputBlock>,
    rows: &FitRows,
    d: usize,
    t: usize,
    offset: usize,
    prior: Option<&[f64]>,
    ridge: f64,
) -> Result<Vec<(Vec<f64>, f64)>, String> {
    let n = rows.x.len() / d.max(1);
    if rows.x.len() != n * d || rows.t.len() != n * t {
        return Err(format!(
            "kept rows do not match {d} columns and {t} targets ({} and {} values)",
            rows.x.len(),
            rows.t.len()
        ));
    }
    let mut out = Vec::with_capacity(blocks.len());
    for b in blocks {
        let (m, k) = (b.rows.len(), b.cols.len());
        let mut xb = Vec::with_capacity(n * k);
        for row in rows.x.chunks_exact(d) {
            xb.extend(b.cols.iter().map(|&j| row[j]));
        }
        let mut tb = Vec::with_capacity(n * m);
        for row in rows.t.chunks_exact(t) {
            tb.extend(b.rows.clone().map(|o| row[offset + o]));
        }
        // The prior holds f32 weights widened to f64: narrowing it back is exact.
        let pb: Option<Vec<f32>> = prior.map(|w0| {
            b.rows
                .clone()
                .flat_map(|o| b.cols.iter().map(move |&j| w0[o * d + j] as f32))
                .collect()
        });
        let mut w = vec![0.0f64; m * k];
        let mut scratch = vec![0.0f64; dual_ridge_scratch_len(n, m)];
        let view = |e: pleas_core::linalg::ViewError| e.to_string();
        let info = dual_ridge_solve(
            MatRef::new(&xb, n, k).map_err(view)?,
            false,
            MatRef::new(&tb, n, m).map_err(view)?,
            pb.as_deref()
                .map(|p| MatRef::new(p, m, k))
                .transpose()
                .map_err(view)?,
            DualParams::default().with_relative_ridge(ridge),
            MatMut::new(&mut w, m, k).map_err(view)?,
            &mut scratch,
        )
        .map_err(|e| e.to_string())?;
        out.push((w, info.factor.ridge));
    }
    Ok(out)
}

/// Relative residuals `||X W - T||^2 / ||T||^2` of the current weights of `layer_ids` on the
/// moments of one pass.
fn own_input_residuals(
    merged: &MergedModel,
    layer_ids: &[usize],
    acc: &mut crate::par::OwnedGram,
    weights: &Weights,
    par: Parallelism,
) -> Result<Vec<(String, f64)>, Error> {
    let stage = "diagnosis";
    let moments = Moments::read(acc, stage)?;
    let mut out = Vec::new();
    let mut offset = 0;
    for &li in layer_ids {
        let layer = &merged.layers[li];
        let o = layer.outputs;
        let w = layer.dense(weights);
        let wg = moments.product(&w, o, par);
        let residual = moments
            .relative_residual(offset, &w, &wg, o)
            .map_err(|e| err(stage, e.to_string()))?;
        out.push((merged.graph.node(layer.node).name.clone(), residual));
        offset += o;
    }
    Ok(out)
}

/// Per merged node and channel: whether the activation is, by construction, exactly one
/// original model's unit (a private unit computed only from exact channels of its own side).
/// Batch-norm statistics of exact channels are the model's own and are not re-estimated, so a
/// merge that keeps everything separate (budget 2.0) reproduces both models.
fn exact_channels(merged: &MergedModel, layouts: &[GroupLayout]) -> Vec<Vec<bool>> {
    let graph = &merged.graph;
    let mut exact: Vec<Vec<bool>> = Vec::with_capacity(graph.nodes().len());
    let layer_at: BTreeMap<usize, &super::merged_model::MergedLayer> =
        merged.layers.iter().map(|l| (l.node, l)).collect();
    for (id, node) in graph.nodes().iter().enumerate() {
        let c = node.shape.c;
        let e = if id == 0 {
            vec![true; c]
        } else if let Some(l) = layer_at.get(&id) {
            let input = &exact[node.inputs[0]];
            let mut row_exact = vec![false; c];
            for b in &l.blocks {
                let reads_exact = reads_exact(l, b, input);
                for r in b.rows.clone() {
                    let private = match l.target_rule {
                        TargetRule::Layout(g) => r >= layouts[g].merged_count(),
                        TargetRule::OnlyA | TargetRule::OnlyB => true,
                        TargetRule::Average => false,
                    };
                    row_exact[r] = private && reads_exact;
                }
            }
            row_exact
        } else {
            match &node.op {
                Op::Add => (0..c)
                    .map(|ch| node.inputs.iter().all(|&i| exact[i][ch]))
                    .collect(),
                Op::Flatten => {
                    let i = &exact[node.inputs[0]];
                    let per = c / i.len().max(1);
                    (0..c).map(|ch| i[ch / per.max(1)]).collect()
                }
                _ => exact[node.inputs[0]].clone(),
            }
        };
        exact.push(e);
    }
    exact
}

/// Whether every input column of `block` of `layer` (the bias aside) reads a channel that
/// `input_exact` marks exact.
fn reads_exact(
    layer: &super::merged_model::MergedLayer,
    block: &OutputBlock,
    input_exact: &[bool],
) -> bool {
    let patch = layer.kind.patch();
    block.cols[..block.cols.len() - usize::from(layer.bias)]
        .iter()
        .all(|&col| input_exact[col / patch])
}

/// The normal-equation moments of one fit pass: lower-triangular Gram `g` (`d x d`), cross
/// moment `r` (`d x t`) and per-target sums of squares `tt`.
struct Moments {
    g: Vec<f64>,
    r: Vec<f64>,
    tt: Vec<f64>,
}

impl Moments {
    fn read(acc: &mut crate::par::OwnedGram, stage: &'static str) -> Result<Self, Error> {
        let (d, t) = (acc.dim(), acc.targets());
        let mut m = Moments {
            g: vec![0.0; d * d],
            r: vec![0.0; d * t],
            tt: vec![0.0; t],
        };
        acc.write_gram(MatMut::new(&mut m.g, d, d).expect("d x d"))
            .and_then(|_| acc.write_cross(MatMut::new(&mut m.r, d, t).expect("d x t")))
            .and_then(|_| acc.write_sum_tt(&mut m.tt))
            .map_err(|e| err(stage, e.to_string()))?;
        Ok(m)
    }

    /// `W G` for dense weights `w` (`outputs` rows of `d`), its rows split in fixed chunks
    /// over `par`'s threads: every row is computed the same way in any chunk, so the result
    /// does not depend on the thread count.
    fn product(&self, w: &[f64], outputs: usize, par: Parallelism) -> Vec<f64> {
        let d = self.r.len() / self.tt.len().max(1);
        let gram = MatRef::new(&self.g, d, d).expect("d x d");
        let chunks = outputs.div_ceil(PRODUCT_ROWS);
        let parts = map_jobs(par, chunks, |c| {
            let rows = c * PRODUCT_ROWS..((c + 1) * PRODUCT_ROWS).min(outputs);
            let n = rows.len();
            let mut out = vec![0.0; n * d];
            let wv = MatRef::new(&w[rows.start * d..rows.end * d], n, d).expect("n x d");
            symm_rows(gram, wv, MatMut::new(&mut out, n, d).expect("n x d")).expect("shapes agree");
            out
        });
        parts.concat()
    }

    /// Per output, `||X w_o - t_o||^2` (clamped at 0 against rounding) of dense weights `w`
    /// (`o x d`) with `wg = W G`, for the targets from column `offset` on.
    fn output_losses(&self, offset: usize, w: &[f64], wg: &[f64], o: usize) -> Vec<f64> {
        let t = self.tt.len();
        let d = self.r.len() / t.max(1);
        (0..o)
            .map(|k| {
                let (wk, gk) = (&w[k * d..(k + 1) * d], &wg[k * d..(k + 1) * d]);
                let (mut quad, mut lin) = (0.0, 0.0);
                for i in 0..d {
                    quad += wk[i] * gk[i];
                    lin += wk[i] * self.r[i * t + offset + k];
                }
                (self.tt[offset + k] - 2.0 * lin + quad).max(0.0)
            })
            .collect()
    }

    /// `||X W - T||^2 / ||T||^2` of dense weights `w` (`o x d`) with `wg = W G`, for the
    /// targets from column `offset` on.
    fn relative_residual(
        &self,
        offset: usize,
        w: &[f64],
        wg: &[f64],
        o: usize,
    ) -> Result<f64, pleas_core::merge::fit::FitError> {
        let t = self.tt.len();
        let d = self.r.len() / t.max(1);
        let cross = target_columns(&self.r, d, t, offset, o);
        let eqs = NormalEquations {
            gram: MatRef::new(&self.g, d, d).expect("d x d"),
            cross: MatRef::new(&cross, d, o).expect("d x o"),
            target_sq_sums: &self.tt[offset..offset + o],
        };
        let norm = self.tt[offset..offset + o]
            .iter()
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        Ok(layer_loss_with_product(eqs, w, wg, o)?.max(0.0) / norm)
    }
}

/// Rows of dense weights per job of [`Moments::product`] (a multiple of the kernel's block of
/// four; fixed, so the split never depends on the thread count).
const PRODUCT_ROWS: usize = 16;

/// Columns `offset .. offset + o` of the `d x t` cross moment `r`, as a `d x o` matrix.
fn target_columns(r: &[f64], d: usize, t: usize, offset: usize, o: usize) -> Vec<f64> {
    let mut cross = vec![0.0f64; d * o];
    for i in 0..d {
        cross[i * o..(i + 1) * o].copy_from_slice(&r[i * t + offset..i * t + offset + o]);
    }
    cross
}
