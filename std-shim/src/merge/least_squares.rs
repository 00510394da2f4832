//! Step 2 of a merge: every scheduled data pass through the host's streamer (sharded,
//! threaded, spilling), its least-squares solves or batch-norm statistics stored into the
//! merged weights; then the outcome.

use std::cell::Cell;
use std::time::Instant;

use pleas_core::graph::{Op, Weights, cost};
use pleas_core::lstsq::LsForm;
use pleas_core::merge::Heads;
use pleas_core::merge::budget::{LayerCost, flop_ratio};
use pleas_core::merge::layout::GroupLayout;
use pleas_core::merge::pass::{
    ChannelMoments, ColumnSet, FitPass, FitWants, InputForm, Moments, Pass, PassSource, TargetForm,
};

use super::host_source::HostSource;
use super::merged_model::MergedModel;
use super::prepare::{Prepared, err};
use super::recorded::RecordedTargets;
use super::report::{Event, GroupReport, LayerReport, MergeOutcome};
use super::schedule::{pass_cost, pass_schedule};
use super::settings::{BnMode, FitMode, MergeSettings, SHARD_SAMPLES};
use super::solve::{FitPassInputs, FitTotals, own_input_residuals, solve_fit};
use super::store::Net;
use super::stream::{Barrier, Networks, StreamParams, Streamer};
use crate::error::Error;
use crate::io::data::DataSpec;
use crate::par::Parallelism;
use crate::ranks::Ranks;

/// The least-squares stage: every scheduled data pass through the streamer, its solves or
/// batch-norm statistics stored into the merged weights.
pub(crate) struct LeastSquares<'a> {
    pub(crate) prepared: &'a Prepared,
    pub(crate) merged: &'a MergedModel,
    pub(crate) layouts: &'a [GroupLayout],
    pub(crate) exact: Vec<Vec<bool>>,
    pub(crate) settings: &'a MergeSettings,
    pub(crate) data: &'a DataSpec,
    pub(crate) batch: usize,
    pub(crate) par: Parallelism,
    pub(crate) ranks: &'a dyn Ranks,
    /// A's and B's layer outputs the matching recorded (taken by the streamer).
    pub(crate) recorded: Cell<Option<RecordedTargets>>,
}

impl LeastSquares<'_> {
    fn streamer(&self) -> Streamer<'_> {
        let p = self.prepared;
        let nets = Networks {
            original: &p.graph,
            a: &p.wa,
            b: &p.wb,
            merged: self.merged,
            layouts: self.layouts,
        };
        let params = StreamParams {
            batch: self.batch,
            par: self.par,
            shard_samples: SHARD_SAMPLES,
            memory_budget: self.settings.memory_budget,
            spill_dir: self.settings.spill_dir.clone(),
        };
        let recorded = self.recorded.take();
        Streamer::new(nets, params, self.data.clone(), p.samples, recorded)
    }

    /// Runs every pass, reporting progress with an ETA weighted by the passes' arithmetic.
    pub(crate) fn run(
        &self,
        average: &Weights,
        weights: &mut Weights,
        progress: &mut dyn FnMut(&Event),
    ) -> Result<Vec<LayerReport>, Error> {
        let (settings, merged) = (self.settings, self.merged);
        let t2 = Instant::now();
        let barriers = pass_schedule(merged, settings, &self.exact);
        let total = barriers.len();
        let n = self.prepared.samples;
        let pass_costs: Vec<f64> = (barriers.iter())
            .map(|b| pass_cost(merged, &self.prepared.graph, b, n))
            .collect();
        let total_cost: f64 = pass_costs.iter().sum();
        let mut done_cost = 0.0;
        progress(&Event::Stage {
            name: "least squares",
            total,
        });
        let fit = FitPassInputs {
            merged,
            ridge: settings.ridge,
            toward: settings.ridge_toward,
            exact: &self.exact,
            average,
            par: self.par,
        };
        let mut layer_reports = Vec::new();
        let mut source = HostSource::new(self.streamer(), barriers.clone(), self.ranks);
        let mut fits_done = false;
        for (i, barrier) in barriers.iter().enumerate() {
            let tl = Instant::now();
            if let Barrier::BatchNorm { .. } = barrier
                && !fits_done
                && settings.fit == FitMode::Original
            {
                // A and B are no longer needed.
                source.reset(Net::A);
                source.reset(Net::B);
                fits_done = true;
            }
            let what = match barrier {
                Barrier::Fit { layers, sequential } => {
                    let totals = self.fit_totals(&mut source, layers, *sequential, weights)?;
                    let reports = solve_fit(&fit, layers, &totals, weights, tl)?;
                    let names: Vec<String> = reports.iter().map(|r| r.name.clone()).collect();
                    layer_reports.extend(reports);
                    names.join(", ")
                }
                Barrier::BatchNorm { node } => {
                    let c = merged.graph.node(*node).shape.c;
                    let (mut count, mut mean, mut m2) = (0.0, vec![0.0; c], vec![0.0; c]);
                    let mut moments = Moments::Channels(ChannelMoments {
                        count: &mut count,
                        mean: &mut mean,
                        m2: &mut m2,
                    });
                    source.run(
                        &Pass::Channels { node: *node },
                        weights,
                        &mut moments,
                        &mut [],
                    )?;
                    self.store_batchnorm(*node, (count, &mean, &m2), weights)?
                }
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
            self.diagnose(source, weights, &mut layer_reports)?;
        }
        Ok(layer_reports)
    }

    /// Runs the fit pass of `layers` (inputs of the merged network if `sequential`, else the
    /// layout of the originals') and returns its totals, with its rows when it has fewer rows
    /// (samples x positions) than columns.
    fn fit_totals(
        &self,
        source: &mut HostSource<'_>,
        layers: &[usize],
        sequential: bool,
        weights: &Weights,
    ) -> Result<FitTotals, Error> {
        let merged = self.merged;
        let first = &merged.layers[layers[0]];
        let (d, t) = (
            first.columns(),
            layers.iter().map(|&l| merged.layers[l].outputs).sum(),
        );
        let shape = merged.graph.node(first.node).shape;
        let rows = self.prepared.samples.saturating_mul(shape.h * shape.w);
        let keep = LsForm::Auto.dual(rows, d);
        let mut totals = FitTotals::new(d, t, keep.then_some(rows));
        let all = 0..first.in_channels;
        let channels = std::slice::from_ref(&all);
        let pass = Pass::Fit(FitPass {
            layers,
            columns: ColumnSet {
                channels,
                patch: first.kind.patch(),
                bias: first.bias,
            },
            rows: 0..t,
            input: if sequential {
                InputForm::Merged
            } else {
                InputForm::Layout
            },
            target: TargetForm::Targets,
            wants: FitWants {
                gram: true,
                cross: true,
                target_sq_sums: true,
                inputs: keep,
                targets: keep,
            },
        });
        source.run(&pass, weights, &mut totals.moments(), &mut [])?;
        Ok(totals)
    }

    /// Stores re-estimated batch-norm statistics of `node`, except for exact channels (which
    /// keep their model's own); returns the node's name.
    fn store_batchnorm(
        &self,
        node: usize,
        (count, mean, m2): (f64, &[f64], &[f64]),
        weights: &mut Weights,
    ) -> Result<String, Error> {
        let Op::BatchNorm {
            running_mean,
            running_var,
            ..
        } = &self.merged.graph.node(node).op
        else {
            return Err(err("batch-norm", "not a batch-norm node"));
        };
        // Population variance per channel.
        let var: Vec<f64> = (m2.iter())
            .map(|&m| if count > 0.0 { m / count } else { 0.0 })
            .collect();
        let keep = &self.exact[node];
        for (name, values) in [(running_mean, mean), (running_var, &var[..])] {
            if let Some(t) = weights.get_mut(name) {
                for ((d, &v), &exact) in t.data_mut().iter_mut().zip(values).zip(keep) {
                    if !exact {
                        *d = v as f32;
                    }
                }
            }
        }
        Ok(self.merged.graph.node(node).name.clone())
    }

    /// The fitted layers' residuals on the merged network's own inputs: what they meet at
    /// inference, as opposed to the layout of the original models' inputs.
    fn diagnose(
        &self,
        mut source: HostSource<'_>,
        weights: &Weights,
        layer_reports: &mut [LayerReport],
    ) -> Result<(), Error> {
        for net in [Net::A, Net::B, Net::M] {
            source.reset(net);
        }
        let seq = MergeSettings {
            fit: FitMode::Sequential,
            bn: BnMode::Fold,
            ..self.settings.clone()
        };
        let passes: Vec<Barrier> = pass_schedule(self.merged, &seq, &self.exact)
            .into_iter()
            .filter(|b| matches!(b, Barrier::Fit { .. }))
            .collect();
        source.set_schedule(passes.clone());
        for barrier in &passes {
            let Barrier::Fit { layers, sequential } = barrier else {
                continue;
            };
            let totals = self.fit_totals(&mut source, layers, *sequential, weights)?;
            let residuals = own_input_residuals(self.merged, layers, &totals, weights, self.par)?;
            for (name, residual) in residuals {
                if let Some(r) = layer_reports.iter_mut().find(|r| r.name == name) {
                    r.own_input_relative_residual = Some(residual);
                }
            }
        }
        Ok(())
    }
}

/// The outcome: the weights checked finite, the heads' classes, the FLOP and parameter
/// ratios, the reports, whether the targets were recorded outputs, and the timings.
#[allow(clippy::too_many_arguments)]
pub(crate) fn outcome(
    prepared: &Prepared,
    merged: MergedModel,
    weights: Weights,
    costs: &[LayerCost],
    ratios: &[f64],
    (groups, layers): (Vec<GroupReport>, Vec<LayerReport>),
    ranks: &dyn Ranks,
    recorded_targets: bool,
    (mut timings, t0): (Vec<(&'static str, f64)>, Instant),
) -> Result<MergeOutcome, Error> {
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
    let (ca, cb) = (&prepared.classes_a, &prepared.classes_b);
    let head_classes = match prepared.heads {
        Heads::Shared => vec![(merged.graph.outputs()[0].name.clone(), ca.clone())],
        Heads::Separate => vec![("a".to_string(), ca.clone()), ("b".to_string(), cb.clone())],
    };
    let original = cost(&prepared.graph);
    let merged_cost = cost(&merged.graph);
    let planned = flop_ratio(costs, ratios);
    timings.push(("total", t0.elapsed().as_secs_f64()));
    Ok(MergeOutcome {
        graph: merged.graph,
        weights,
        head_classes,
        heads: prepared.heads,
        groups,
        layers,
        flop_ratio: merged_cost.macs as f64 / original.macs.max(1) as f64,
        param_ratio: merged_cost.params as f64 / original.params.max(1) as f64,
        planned_flop_ratio: planned,
        samples: prepared.samples,
        ranks: ranks.size(),
        recorded_targets,
        timings,
    })
}
