//! The whole merge: check the pair, prepare (fold batch-norm), match every group, turn the
//! budget into ratios and layouts, build the block-structured merged network, fit it by least
//! squares layer by layer, re-estimate batch-norm statistics, and report. Each step lives in
//! its own module; this one runs them in order.

use std::time::Instant;

use pleas_core::graph::permutation_groups;

use super::layers;
use super::least_squares::{LeastSquares, outcome};
use super::matching::{MatchInputs, match_groups};
use super::merged_model;
use super::prepare::prepare;
use super::recorded;
use super::schedule::exact_channels;
use super::settings::{MergeSettings, SHARD_SAMPLES};
use crate::error::Error;
use crate::io::data::DataSpec;
use crate::model::Model;
use crate::par::{Parallelism, shard_ranges};
use crate::ranks::{Ranks, Single, agree};

pub use super::report::{Event, GroupReport, LayerReport, MergeOutcome};
pub use super::schedule::{CHUNK_BYTES, chunk_samples};

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
    let prepared = prepare(a, b, data, settings)?;
    let (graph, wa, wb) = (&prepared.graph, &prepared.wa, &prepared.wb);
    let groups = permutation_groups(graph);
    let layers = layers::layers(graph, &groups);
    let costs = layers::layer_costs(graph, &layers);
    let par = Parallelism::from_count(settings.threads);
    let batch = chunk_samples(graph, settings.batch);
    timings.push(("prepare", t0.elapsed().as_secs_f64()));

    // Step 1: matching (recording A's and B's layer outputs for step 2 where memory allows).
    let t1 = Instant::now();
    let record = recorded::plan(
        graph,
        layers.iter().map(|l| l.node),
        settings,
        shard_ranges(prepared.samples, SHARD_SAMPLES),
        ranks.size(),
    );
    let inputs = MatchInputs {
        graph,
        groups: &groups,
        wa,
        wb,
        data,
        batch,
        par,
        ranks,
        record: record.as_ref(),
    };
    let recorded_targets = record.is_some();
    let (layouts, ratios, group_reports) = match_groups(&inputs, &costs, settings, progress)?;
    timings.push(("matching", t1.elapsed().as_secs_f64()));

    // The merged network, permute-and-average.
    let heads = prepared.heads;
    let mut merged = merged_model::build(graph, &groups, &layers, &layouts, heads, wa, wb)?;
    let average = merged.weights.clone();
    let mut weights = std::mem::take(&mut merged.weights);

    // Step 2: least squares and batch-norm statistics.
    let t2 = Instant::now();
    let stage = LeastSquares {
        prepared: &prepared,
        merged: &merged,
        layouts: &layouts,
        exact: exact_channels(&merged, &layouts),
        settings,
        data,
        batch,
        par,
        ranks,
        recorded: std::cell::Cell::new(record),
    };
    let layer_reports = stage.run(&average, &mut weights, progress)?;
    timings.push(("least squares", t2.elapsed().as_secs_f64()));
    let reports = (group_reports, layer_reports);
    outcome(
        &prepared,
        merged,
        weights,
        &costs,
        &ratios,
        reports,
        ranks,
        recorded_targets,
        (timings, t0),
    )
}
