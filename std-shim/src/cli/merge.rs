//! `pleas merge MODEL_A MODEL_B --data FILE --budget B -o OUT_DIR`.
//!
//! With `--onnx` the merged model is also written as `merged.onnx` (split blocks, the default
//! opset). Everything is checked and computed before anything is written; the outputs are written to
//! temporary names in OUT_DIR and renamed, and on any failure OUT_DIR is left as it was (removed
//! again if this command created it). OUT_DIR is probed before the merge and created only when
//! the results are written.
//!
//! With the `mpi` feature the command is one rank of an MPI job (see [`crate::ranks`]): every
//! rank checks the arguments, loads the models and merges; failures are agreed between the
//! ranks; rank 0 alone prints progress and the error, evaluates and writes OUT_DIR.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::interrupt::{self, OutputGuard};
use super::{MergeArgs, Outcome, parse_normalize};
use crate::error::Error;
use crate::eval::{EvalReport, evaluate};
use crate::export::ModelWriter as _;
use crate::io::data::{self, DataSpec, Normalize};
use crate::merge::pipeline::{Event, MergeOutcome, merge_on};
use crate::merge::settings::{
    BnMode, FitMode, Heads, MatchingMode, MergeSettings, RatioMode, RidgeToward,
};
use crate::model::Model;
use crate::ranks::{ROOT, Ranks, agree};
use pleas_core::simd;
use pleas_core::similarity::Metric;

fn usage(s: String) -> Error {
    Error::Usage(s)
}

fn settings_from(a: &MergeArgs) -> Result<MergeSettings, Error> {
    let d = MergeSettings::default();
    let ratios = match a.ratios.as_str() {
        "uniform" => RatioMode::Uniform,
        "stages" => RatioMode::Stages,
        "weighted" => RatioMode::Weighted {
            file: a.group_weights.clone(),
        },
        o => {
            return Err(usage(format!(
                "--ratios `{o}`: expected uniform, stages or weighted"
            )));
        }
    };
    if a.group_weights.is_some() && !matches!(ratios, RatioMode::Weighted { .. }) {
        return Err(usage("--group-weights needs --ratios weighted".into()));
    }
    let metric = Metric::from_name(&a.metric).ok_or_else(|| {
        usage(format!(
            "--metric `{}`: expected neg-l2, inner or correlation",
            a.metric
        ))
    })?;
    let matching = match a.matching.as_str() {
        "activation" => MatchingMode::Activation,
        "weight" => MatchingMode::Weight,
        "identity" | "none" => MatchingMode::Identity,
        o => {
            return Err(usage(format!(
                "--matching `{o}`: expected activation, weight or identity"
            )));
        }
    };
    let bn = match a.bn.as_str() {
        "fold" => BnMode::Fold,
        "keep" => BnMode::Keep,
        o => return Err(usage(format!("--bn `{o}`: expected fold or keep"))),
    };
    let fit = match (a.fit.as_str(), a.sequential) {
        (_, true) => FitMode::Sequential,
        ("sequential", _) => FitMode::Sequential,
        ("original", _) => FitMode::Original,
        ("none", _) => FitMode::Average,
        (o, _) => {
            return Err(usage(format!(
                "--fit `{o}`: expected sequential, original or none"
            )));
        }
    };
    let heads = match a.heads.as_str() {
        "auto" => None,
        "shared" => Some(Heads::Shared),
        "separate" => Some(Heads::Separate),
        o => {
            return Err(usage(format!(
                "--heads `{o}`: expected auto, shared or separate"
            )));
        }
    };
    let ridge_toward = match a.ridge_toward.as_str() {
        "average" => RidgeToward::Average,
        "zero" => RidgeToward::Zero,
        o => {
            return Err(usage(format!(
                "--ridge-toward `{o}`: expected average or zero"
            )));
        }
    };
    if !a.budget.is_finite() {
        return Err(usage(format!("--budget {} is not a number", a.budget)));
    }
    if a.batch == 0 {
        return Err(usage("--batch must be at least 1".into()));
    }
    Ok(MergeSettings {
        budget: a.budget,
        ratios,
        metric,
        matching,
        ridge: a.ridge.unwrap_or(d.ridge),
        ridge_toward,
        bn,
        fit,
        heads,
        threads: a.threads.unwrap_or(d.threads).max(1),
        batch: a.batch,
        memory_budget: a.memory_mib.map_or(d.memory_budget, |m| m << 20),
        spill_dir: d.spill_dir,
        diagnose: a.diagnose,
    })
}

fn model_normalize(model: &Model) -> Result<Option<Normalize>, Error> {
    model
        .metadata
        .get("normalize")
        .map(|s| {
            Normalize::parse(s).ok_or_else(|| Error::Metadata {
                path: model.path.clone(),
                key: "normalize".into(),
                reason: format!("`{s}` is not none, x/255, x/255*2-1 or MEAN,STD"),
            })
        })
        .transpose()
}

/// An output directory being written: created if missing, cleaned on drop unless committed,
/// and registered with the interrupt watcher (SIGINT/SIGTERM clean it the same way).
struct OutDir {
    dir: PathBuf,
    created: bool,
    temps: Vec<PathBuf>,
    committed: bool,
    guard: Option<OutputGuard>,
}

fn write_err(dir: &Path, source: std::io::Error) -> Error {
    Error::Write {
        path: dir.to_path_buf(),
        source,
    }
}

impl OutDir {
    /// Fails now, not after the merge, if `dir` cannot be created or written. A directory
    /// this creates is removed again: OUT_DIR only exists while the outputs are written, so a
    /// merge killed before that (even by SIGKILL) leaves none.
    fn probe(dir: &Path) -> Result<(), Error> {
        let existed = dir.is_dir();
        if !existed {
            std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
        }
        let probe = dir.join(interrupt::temp_name("probe"));
        let written = std::fs::write(&probe, b"");
        let _ = std::fs::remove_file(&probe);
        if !existed {
            let _ = std::fs::remove_dir(dir);
        }
        written.map_err(|e| write_err(dir, e))
    }

    fn open(dir: &Path) -> Result<Self, Error> {
        let existed = dir.is_dir();
        if !existed {
            std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
        }
        let mut out = OutDir {
            dir: dir.to_path_buf(),
            created: !existed,
            temps: Vec::new(),
            committed: false,
            guard: None,
        };
        out.guard = Some(
            OutputGuard::register(dir, !existed)
                .map_err(|reason| usage(format!("cannot watch for interrupts: {reason}")))?,
        );
        Ok(out)
    }

    fn temp(&mut self, name: &str) -> PathBuf {
        let p = self.dir.join(interrupt::temp_name(name));
        self.temps.push(p.clone());
        p
    }

    /// Writes `merged.safetensors`, `report.json` and the `extra` files (name, bytes) under
    /// temporary names and renames them, with interrupts held off until all are in place.
    fn write(mut self, model: &Model, report: &[u8], extra: &[(&str, &[u8])]) -> Result<(), Error> {
        let guard = self.guard.take();
        let mut lock = guard.as_ref().map(OutputGuard::writing);
        let model_tmp = self.temp("merged.safetensors");
        model.save(&model_tmp)?;
        let mut files = vec![(model_tmp, "merged.safetensors")];
        for &(name, bytes) in [("report.json", report)].iter().chain(extra) {
            let tmp = self.temp(name);
            std::fs::write(&tmp, bytes).map_err(|e| write_err(&self.dir.join(name), e))?;
            files.push((tmp, name));
        }
        for (tmp, name) in files {
            let dst = self.dir.join(name);
            std::fs::rename(tmp, &dst).map_err(|source| Error::Write { path: dst, source })?;
        }
        self.committed = true;
        if let Some(l) = lock.as_mut() {
            l.committed();
        }
        Ok(())
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for t in &self.temps {
            let _ = std::fs::remove_file(t);
        }
        if self.created {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// `1h02m`, `3m05s` or `12s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

fn report_json(a: &MergeArgs, s: &MergeSettings, o: &MergeOutcome, eval: Option<&Value>) -> Value {
    let groups: Vec<Value> = o
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": g.name,
                "width": g.width,
                "ratio": g.ratio,
                "merged": g.merged,
                "merged_width": g.merged_width,
                "mean_merged_score": if g.mean_merged_score.is_finite() { json!(g.mean_merged_score) } else { Value::Null },
                "total_score": g.total_score,
                "auction": g.auction.map(|(phases, bids, bound)| json!({
                    "phases": phases, "bids": bids, "optimality_bound": bound
                })),
            })
        })
        .collect();
    let layers: Vec<Value> = o
        .layers
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "columns": l.columns,
                "outputs": l.outputs,
                "ridge": l.ridge,
                "relative_residual": l.relative_residual,
                "average_relative_residual": l.average_relative_residual,
                "seconds": l.seconds,
                "own_input_relative_residual": l.own_input_relative_residual,
            })
        })
        .collect();
    let timings: serde_json::Map<String, Value> = o
        .timings
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "models": [a.model_a.display().to_string(), a.model_b.display().to_string()],
        "data": a.data.display().to_string(),
        "samples": o.samples,
        "settings": {
            "budget": s.budget,
            "ratios": s.ratios.name(),
            "group_weights": match &s.ratios { RatioMode::Weighted { file: Some(f) } => json!(f.display().to_string()), RatioMode::Weighted { file: None } => json!("measured"), _ => Value::Null },
            "metric": s.metric.name(),
            "matching": s.matching.name(),
            "ridge": s.ridge,
            "ridge_toward": s.ridge_toward.name(),
            "bn": match s.bn { BnMode::Fold => "fold", BnMode::Keep => "keep" },
            "fit": s.fit.name(),
            "heads": match o.heads { Heads::Shared => "shared", Heads::Separate => "separate" },
            "threads": s.threads,
            "batch": s.batch,
            "memory_budget_bytes": s.memory_budget,
            "recorded_layer_outputs": o.recorded_targets,
            "ranks": o.ranks,
        },
        "flop_ratio": o.flop_ratio,
        "planned_flop_ratio": o.planned_flop_ratio,
        "param_ratio": o.param_ratio,
        "heads": o.head_classes.iter().map(|(n, c)| json!({"name": n, "classes": c})).collect::<Vec<_>>(),
        "groups": groups,
        "layers": layers,
        "seconds": timings,
        "eval": eval.cloned().unwrap_or(Value::Null),
    })
}

pub(super) fn run(
    a: &MergeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, Error> {
    #[cfg(feature = "mpi")]
    {
        let world = crate::ranks::mpi::World::init()?;
        interrupt::set_rank(world.rank(), world.size());
        let result = run_on(a, &world, out, err);
        if let Err(e @ Error::RankFailed { .. }) = &result {
            // An agreed failure: rank 0 prints it, once, and no rank exits before it has (the
            // launcher kills the job when the first rank exits with an error).
            if world.rank() == ROOT {
                let _ = err.write_all(super::error_line(e).as_bytes());
            }
            world.min_over_ranks(0);
            return Ok(Outcome::FailedReported);
        }
        result
    }
    #[cfg(not(feature = "mpi"))]
    run_on(a, &crate::ranks::Single, out, err)
}

/// What every rank checks and loads before merging: settings, models, merge data and the
/// `--onnx` writer.
type Prepared = (
    MergeSettings,
    Model,
    Model,
    DataSpec,
    Option<crate::export::onnx::OnnxWriter>,
);

/// Checks the arguments and loads the models; on rank 0 also checks that OUT_DIR can be
/// written.
fn prepare(a: &MergeArgs, root: bool) -> Result<Prepared, Error> {
    let settings = settings_from(a)?;
    let onnx_writer = a
        .onnx
        .then(|| crate::export::onnx::OnnxWriter::new(&crate::export::ExportSettings::default()))
        .transpose()
        .map_err(|source| Error::Export {
            path: a.out.join("merged.onnx"),
            format: "onnx",
            source,
        })?;
    let ma = Model::load(&a.model_a, a.arch.as_deref())?;
    let mb = Model::load(&a.model_b, a.arch.as_deref())?;
    let normalize = match a.normalize.as_deref() {
        Some(s) => parse_normalize(s)?,
        None => {
            let (na, nb) = (model_normalize(&ma)?, model_normalize(&mb)?);
            if na != nb {
                return Err(usage(format!(
                    "the models' metadata `normalize` differ ({na:?} vs {nb:?}); choose one with --normalize"
                )));
            }
            na.unwrap_or(Normalize::Identity)
        }
    };
    let spec = DataSpec {
        path: a.data.clone(),
        data_key: a.data_key.clone(),
        label_key: None,
        labels_path: None,
        normalize,
    };
    if root {
        // Fail now, not after the merge, if OUT_DIR cannot be written; it is left as it was
        // (a directory made for the probe is removed again) and is created for real only when
        // the results are written, so a merge killed on the way (SIGKILL, a killed MPI rank)
        // leaves nothing behind.
        OutDir::probe(&a.out)?;
    }
    interrupt::install()
        .map_err(|reason| usage(format!("cannot watch for interrupts: {reason}")))?;
    Ok((settings, ma, mb, spec, onnx_writer))
}

/// Every rank takes the narrowest SIMD path any rank runs (the paths' kernels sum in different
/// orders, so ranks on a mixed partition would otherwise not give the single process's bits);
/// one process keeps its own.
fn same_simd_path(ranks: &dyn Ranks) -> Result<(), Error> {
    let mine = simd::Path::ALL
        .iter()
        .position(|&p| p == simd::path())
        .unwrap_or(0);
    let path = simd::Path::ALL[ranks.min_over_ranks(mine as u64) as usize];
    simd::set_path(path).map_err(|source| Error::SimdPath {
        value: path.name().into(),
        source,
    })
}

/// The merge as one of `ranks`: every rank merges (see [`crate::ranks`]); only rank 0 reports
/// progress, evaluates and writes OUT_DIR, after every rank succeeded.
fn run_on(
    a: &MergeArgs,
    ranks: &dyn Ranks,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, Error> {
    let root = ranks.rank() == ROOT;
    let (mut settings, ma, mb, spec, onnx_writer) = agree(ranks, prepare(a, root))?;
    // Every rank cuts the passes' shards into the same waves (`ranks::fold_shards`): the
    // smallest thread count of all ranks sets them.
    settings.threads = ranks.min_over_ranks(settings.threads as u64) as usize;
    same_simd_path(ranks)?;
    let mut progress = Progress {
        out: &mut *out,
        err,
        interactive: root && !a.quiet && !a.json && std::io::stderr().is_terminal(),
        json: root && a.json,
    };
    let outcome = merge_on(&ma, &mb, &spec, &settings, ranks, &mut |e| {
        progress.event(e)
    })?;
    if !root {
        // Every rank has the merged model; writing it is rank 0's.
        return Ok(Outcome::Ok);
    }
    // The merged model as a loadable model, evaluated if asked.
    let merged_model = Model::from_parts(
        &a.out.join("merged.safetensors"),
        "pleas-merged".into(),
        outcome.graph.clone(),
        outcome.weights.clone(),
        merged_metadata(a, &ma, &settings, &outcome),
    )?;
    let eval = match &a.eval {
        Some(path) => Some(evaluate_merged(a, path, spec.normalize, &merged_model)?),
        None => None,
    };
    let eval_json = eval.as_ref().map(eval_json);
    let report = report_json(a, &settings, &outcome, eval_json.as_ref());
    let report = serde_json::to_string_pretty(&report).expect("report serialises");
    let onnx = match &onnx_writer {
        Some(w) => Some(w.encode(&merged_model).map_err(|source| Error::Export {
            path: a.out.join("merged.onnx"),
            format: "onnx",
            source,
        })?),
        None => None,
    };
    let extra: Vec<(&str, &[u8])> = onnx.iter().map(|b| ("merged.onnx", b.as_slice())).collect();
    OutDir::open(&a.out)?.write(&merged_model, report.as_bytes(), &extra)?;
    let write_err = |source| Error::Write {
        path: "<stdout>".into(),
        source,
    };
    if a.json {
        let done = json!({"event": "done", "out": a.out.display().to_string(), "flop_ratio": outcome.flop_ratio, "param_ratio": outcome.param_ratio, "eval": eval_json});
        writeln!(out, "{done}").map_err(write_err)?;
    } else if !a.quiet {
        let s = summary(a, &settings, &outcome, eval.as_ref());
        out.write_all(s.as_bytes()).map_err(write_err)?;
    }
    Ok(Outcome::Ok)
}

/// Where progress events go: JSON lines on stdout (`--json`), or one updated line on stderr
/// when it is a terminal; nowhere otherwise (and on every rank but 0).
struct Progress<'w> {
    out: &'w mut dyn Write,
    err: &'w mut dyn Write,
    interactive: bool,
    json: bool,
}

impl Progress<'_> {
    fn event(&mut self, e: &Event) {
        match e {
            Event::Stage { name, total } => {
                if self.json {
                    let _ = writeln!(
                        self.out,
                        "{}",
                        json!({"event": "stage", "name": name, "total": total})
                    );
                } else if self.interactive {
                    let _ = write!(self.err, "\r\x1b[K{name}: 0/{total}");
                }
            }
            Event::Step {
                stage,
                done,
                total,
                what,
                elapsed,
                eta,
            } => {
                if self.json {
                    let _ = writeln!(
                        self.out,
                        "{}",
                        json!({"event": "step", "stage": stage, "done": done, "total": total, "what": what,
                               "elapsed_s": elapsed, "eta_s": eta})
                    );
                } else if self.interactive {
                    let left =
                        eta.map_or(String::new(), |s| format!(", about {} left", duration(s)));
                    let _ = write!(
                        self.err,
                        "\r\x1b[K{stage}: {done}/{total} {what} ({}{left})",
                        duration(*elapsed)
                    );
                    if done == total {
                        let _ = writeln!(self.err);
                    }
                }
            }
        }
    }
}

/// The merged model's metadata: `arch`, `normalize` (`--normalize`, else model A's), the
/// `classes` of each head, the budget and the achieved FLOP ratio.
fn merged_metadata(
    a: &MergeArgs,
    ma: &Model,
    settings: &MergeSettings,
    outcome: &MergeOutcome,
) -> crate::io::safetensors::Metadata {
    let mut metadata = crate::io::safetensors::Metadata::new();
    metadata.insert("arch".into(), "pleas-merged".into());
    metadata.insert(
        "normalize".into(),
        ma.metadata
            .get("normalize")
            .cloned()
            .unwrap_or_else(|| "none".into()),
    );
    if a.normalize.is_some() {
        metadata.insert("normalize".into(), a.normalize.clone().unwrap_or_default());
    }
    let single = outcome.head_classes.len() == 1;
    for (name, classes) in &outcome.head_classes {
        let key = if single {
            "classes".to_string()
        } else {
            format!("classes.{name}")
        };
        metadata.insert(
            key,
            serde_json::to_string(classes).expect("list of integers"),
        );
    }
    metadata.insert("budget".into(), format!("{}", settings.budget));
    metadata.insert("flop_ratio".into(), format!("{:.6}", outcome.flop_ratio));
    metadata
}

/// `--eval FILE`: the merged model's accuracy per head on the labeled data in `path`,
/// normalised as the merge data were.
fn evaluate_merged(
    a: &MergeArgs,
    path: &Path,
    normalize: Normalize,
    merged_model: &Model,
) -> Result<EvalReport, Error> {
    let spec = DataSpec {
        path: path.to_path_buf(),
        data_key: a.eval_data_key.clone(),
        label_key: Some(a.eval_label_key.clone()),
        labels_path: None,
        normalize,
    };
    let dataset = data::load(&spec)?;
    evaluate(merged_model, &dataset, path, 256)
}

/// The `eval` object of the report and of the `done` event.
fn eval_json(r: &EvalReport) -> Value {
    json!({
        "accuracy": r.accuracy,
        "heads": r.heads.iter().map(|h| json!({
            "name": h.name, "classes": h.classes, "accuracy": h.accuracy, "samples": h.samples
        })).collect::<Vec<_>>(),
    })
}

/// The lines printed after a merge without `--json` or `--quiet`.
fn summary(
    a: &MergeArgs,
    settings: &MergeSettings,
    outcome: &MergeOutcome,
    eval: Option<&EvalReport>,
) -> String {
    let mut s = format!(
        "merged {} groups at budget {} ({} fit, {} samples): FLOP ratio {:.3}, parameter ratio {:.3}, {:.1} s\n",
        outcome.groups.len(),
        settings.budget,
        settings.fit.name(),
        outcome.samples,
        outcome.flop_ratio,
        outcome.param_ratio,
        outcome.timings.last().map_or(0.0, |t| t.1),
    );
    s.push_str(&format!(
        "wrote {} and {}{}\n",
        a.out.join("merged.safetensors").display(),
        a.out.join("report.json").display(),
        if a.onnx {
            format!(" and {}", a.out.join("merged.onnx").display())
        } else {
            String::new()
        }
    ));
    if let Some(r) = eval {
        s.push_str(&format!("accuracy {:.4} (mean over heads)\n", r.accuracy));
        for h in &r.heads {
            s.push_str(&format!(
                "  head {}: {:.4} ({} samples, classes {:?})\n",
                h.name, h.accuracy, h.samples, h.classes
            ));
        }
    }
    s
}
