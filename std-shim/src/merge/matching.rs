//! Step 1 of a merge: the similarity of every permutation group (activation moments streamed
//! over the merge data, weight matching, or none), the budget turned into per-group ratios,
//! and each group's assignment and layout (the core's matching).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use pleas_core::assign::AuctionParams;
use pleas_core::graph::{Graph, Groups, Weights};
use pleas_core::linalg::MatRef;
use pleas_core::merge::budget::{LayerCost, stage_schedule, uniform_ratio, weighted_ratios};
use pleas_core::merge::layout::GroupLayout;
use pleas_core::merge::matching::{GroupMatch, match_group};
use pleas_core::merge::weight_matching::{WeightMatchParams, weight_matching};
use pleas_core::similarity::Metric;

use super::activation_stats::{self, activation_moments_streamed, group_similarities};
use super::layers;
use super::prepare::err;
use super::recorded::RecordedTargets;
use super::report::{Event, GroupReport};
use super::settings::{MatchingMode, MergeSettings, RatioMode, SHARD_SAMPLES};
use crate::error::Error;
use crate::io::data::DataSpec;
use crate::par::Parallelism;
use crate::ranks::Ranks;

/// What the matching reads: the prepared pair and how to stream the data.
pub(crate) struct MatchInputs<'a> {
    /// The shared architecture.
    pub(crate) graph: &'a Graph,
    /// Its permutation groups.
    pub(crate) groups: &'a Groups,
    /// A's weights.
    pub(crate) wa: &'a Weights,
    /// B's weights.
    pub(crate) wb: &'a Weights,
    /// The merge data.
    pub(crate) data: &'a DataSpec,
    /// Samples per chunk.
    pub(crate) batch: usize,
    /// Threads.
    pub(crate) par: Parallelism,
    /// The processes computing the merge.
    pub(crate) ranks: &'a dyn Ranks,
    /// Where the activation matching records A's and B's layer outputs, if it does.
    pub(crate) record: Option<&'a RecordedTargets>,
}

/// Progress of a pass over shards as [`Event`]s of `stage`: the stage event at `done = 0`
/// (before any shard), then a step per wave with an ETA from the rate so far (every shard has
/// the same number of samples, but the last).
fn shard_progress<'p>(
    stage: &'static str,
    progress: &'p mut dyn FnMut(&Event),
) -> impl FnMut(usize, usize) + 'p {
    let start = Instant::now();
    move |done, total| {
        if done == 0 {
            progress(&Event::Stage { name: stage, total });
            return;
        }
        let elapsed = start.elapsed().as_secs_f64();
        progress(&Event::Step {
            stage,
            done,
            total,
            what: format!("{done} of {total} shards"),
            elapsed,
            eta: Some(elapsed * (total - done) as f64 / done as f64),
        });
    }
}

/// Similarity per group (`n x n`, A's units as rows), and the correlations where activation
/// moments give them (for measured group weights).
type Scores = (Vec<Vec<f64>>, Option<Vec<Vec<f64>>>);

/// Every group's similarity, by the settings' matching (the streamed statistics reported to
/// `progress` as their own stage).
fn scores(
    m: &MatchInputs<'_>,
    settings: &MergeSettings,
    progress: &mut dyn FnMut(&Event),
) -> Result<Scores, Error> {
    let (graph, groups, wa, wb) = (m.graph, m.groups, m.wa, m.wb);
    let (data, batch, par, ranks) = (m.data, m.batch, m.par, m.ranks);
    let widths: Vec<usize> = groups.groups().iter().map(|g| g.width).collect();
    Ok(match settings.matching {
        MatchingMode::Activation => {
            let mut accs = activation_moments_streamed(
                graph,
                groups,
                wa,
                wb,
                data,
                batch,
                SHARD_SAMPLES,
                par,
                ranks,
                m.record,
                &mut shard_progress(activation_stats::STAGE, progress),
            )?;
            let s = group_similarities(&mut accs, settings.metric)?;
            let c = group_similarities(&mut accs, Metric::Correlation)?;
            (s, Some(c))
        }
        MatchingMode::Weight => {
            let wm = weight_matching(groups, wa, wb, &WeightMatchParams::default())
                .map_err(|e| Error::core("weight matching", e))?;
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
    })
}

/// 1 - the mean over A's units of their best correlation with B's, per group: groups whose
/// units have no good partner weigh more (stay separate first).
fn measured_group_weights(correlations: &[Vec<f64>], widths: &[usize]) -> Vec<f64> {
    correlations
        .iter()
        .zip(widths)
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
        .collect()
}

/// The budget as one separate fraction per group, by the settings' ratio mode.
pub(crate) fn ratios(
    graph: &Graph,
    groups: &Groups,
    costs: &[LayerCost],
    settings: &MergeSettings,
    correlations: Option<&[Vec<f64>]>,
) -> Result<Vec<f64>, Error> {
    let widths: Vec<usize> = groups.groups().iter().map(|g| g.width).collect();
    Ok(match &settings.ratios {
        RatioMode::Uniform => {
            let r = uniform_ratio(costs, groups.len(), settings.budget)
                .map_err(|e| Error::core("budget", e))?;
            vec![r; groups.len()]
        }
        RatioMode::Stages => {
            let stages = layers::group_stages(graph, groups);
            stage_schedule(costs, &stages, settings.budget)
                .map_err(|e| Error::core("budget", e))?
                .ratios
        }
        RatioMode::Weighted { file } => {
            let w = match (file, correlations) {
                (Some(p), _) => read_group_weights(p, groups)?,
                (None, Some(c)) => measured_group_weights(c, &widths),
                (None, None) => {
                    return Err(err(
                        "budget",
                        "measured group weights need activation matching; give \
                         --group-weights FILE",
                    ));
                }
            };
            weighted_ratios(costs, &widths, &w, settings.budget)
                .map_err(|e| Error::core("budget", e))?
        }
    })
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

/// Every group's layout, separate fraction and report.
pub(crate) type Matched = (Vec<GroupLayout>, Vec<f64>, Vec<GroupReport>);

/// Step 1: every group's similarity, the ratios and every group's layout, with a report per
/// group and a progress step per group.
pub(crate) fn match_groups(
    m: &MatchInputs<'_>,
    costs: &[LayerCost],
    settings: &MergeSettings,
    progress: &mut dyn FnMut(&Event),
) -> Result<Matched, Error> {
    let (graph, groups) = (m.graph, m.groups);
    let t1 = Instant::now();
    let (scores, correlations) = scores(m, settings, progress)?;
    let ratios = ratios(graph, groups, costs, settings, correlations.as_deref())?;
    progress(&Event::Stage {
        name: "matching",
        total: groups.len(),
    });
    let auction = AuctionParams::default();
    let mut matches: Vec<GroupMatch> = Vec::with_capacity(groups.len());
    let mut group_reports = Vec::new();
    for (g, pg) in groups.groups().iter().enumerate() {
        let w = pg.width;
        let sim = MatRef::new(&scores[g], w, w).map_err(|e| Error::core("matching", e))?;
        let gm = match_group(sim, ratios[g], &auction)
            .map_err(|e| Error::core_at("matching", format!("group `{}`", pg.name), e))?;
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
    Ok((layouts, ratios, group_reports))
}
