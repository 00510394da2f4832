//! Turning a FLOP budget into per-group merge ratios.
//!
//! For each permutation group `g`, `r_g` in `[0, 1]` is the fraction of its units kept
//! separate (`r = 0`: fully merged, the size of one model; `r = 1`: both models side by side).
//! A conv or linear layer whose input axis is in group `gi` and output axis in group `go` costs
//! `1 + r_in + r_out - r_in r_out` times its original multiply-adds: the two cross blocks
//! (A-only inputs to B-only outputs and back) are structurally zero and never computed. With
//! one grouped axis the multiplier is `1 + r`, with none it is 1. The budget is the ratio of
//! the merged network's multiply-adds to one original model's, in `[1, 2]`.
//!
//! Three ways to choose the ratios, all deterministic:
//! - [`uniform_ratio`]: one `r` for every group, found by bisection;
//! - [`stage_schedule`]: whole stages fully merged up to a cut, later stages separate
//!   (ZipIt!-style partial zipping); only the budgets the cuts produce are reachable;
//! - [`weighted_ratios`]: maximise `sum_g w_g r_g` under the budget, greedily by weight per
//!   marginal multiply-add, one unit at a time.
//!
//! The ratio arithmetic ([`flop_ratio`], [`param_ratio`], [`uniform_ratio`],
//! [`merged_pairs`]) needs no allocation and is available without the `alloc` feature (the
//! heap-free whole-MLP merge of [`mlp`](super::mlp) uses it); the schedules that return lists
//! need `alloc`.

#[cfg(feature = "alloc")]
use alloc::vec;
#[cfg(feature = "alloc")]
use alloc::vec::Vec;
use core::fmt;

/// The cost of one conv or linear layer, in the terms the budget needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerCost {
    /// The group of the layer's input axis, if any (none for the network input).
    pub input_group: Option<usize>,
    /// The group of the layer's output axis, if any (none for the logits).
    pub output_group: Option<usize>,
    /// Multiply-adds of the original layer at the model's input size.
    pub macs: f64,
    /// Weight parameters of the original layer (for the parameter ratio).
    pub weights: f64,
    /// Bias (or folded BN shift) parameters, one per output unit.
    pub biases: f64,
}

/// Why a budget could not be turned into ratios.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BudgetError {
    /// The budget is not a number in `[1, 2]`.
    OutOfRange {
        /// The budget asked for.
        budget: f64,
    },
    /// A layer names a group index that does not exist.
    UnknownGroup {
        /// The layer's position.
        layer: usize,
        /// The group index it names.
        group: usize,
        /// How many groups there are.
        groups: usize,
    },
    /// A per-group list has the wrong length.
    LengthMismatch {
        /// What has the wrong length.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Found length.
        found: usize,
    },
    /// A weight or cost is negative or not finite.
    InvalidValue {
        /// What is invalid.
        what: &'static str,
        /// Its position.
        index: usize,
    },
    /// The network has no multiply-adds, so no ratio is defined.
    NoCost,
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BudgetError::OutOfRange { budget } => {
                write!(
                    f,
                    "budget {budget} is outside [1, 2] (a FLOP ratio to one model)"
                )
            }
            BudgetError::UnknownGroup {
                layer,
                group,
                groups,
            } => write!(
                f,
                "layer {layer} names group {group}, but there are {groups} groups"
            ),
            BudgetError::LengthMismatch {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected {expected} entries, found {found}"),
            BudgetError::InvalidValue { what, index } => {
                write!(f, "{what} at index {index} is negative or not finite")
            }
            BudgetError::NoCost => f.write_str("the network has no conv or linear multiply-adds"),
        }
    }
}

impl core::error::Error for BudgetError {}

fn ratio_of(r: &[f64], g: Option<usize>) -> f64 {
    g.map_or(0.0, |g| r[g])
}

/// The cost multiplier of a layer with input ratio `ri` and output ratio `ro`.
pub fn layer_multiplier(ri: f64, ro: f64) -> f64 {
    1.0 + ri + ro - ri * ro
}

fn validate(layers: &[LayerCost], groups: usize) -> Result<f64, BudgetError> {
    let mut total = 0.0;
    for (i, l) in layers.iter().enumerate() {
        for g in [l.input_group, l.output_group].into_iter().flatten() {
            if g >= groups {
                return Err(BudgetError::UnknownGroup {
                    layer: i,
                    group: g,
                    groups,
                });
            }
        }
        for (what, v) in [
            ("layer multiply-adds", l.macs),
            ("layer weights", l.weights),
            ("layer biases", l.biases),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(BudgetError::InvalidValue { what, index: i });
            }
        }
        total += l.macs;
    }
    if total <= 0.0 {
        return Err(BudgetError::NoCost);
    }
    Ok(total)
}

/// `budget` is a FLOP ratio in `[1, 2]` (a NaN is not).
pub(crate) fn check_budget(budget: f64) -> Result<(), BudgetError> {
    if (1.0..=2.0).contains(&budget) {
        Ok(())
    } else {
        Err(BudgetError::OutOfRange { budget })
    }
}

/// The FLOP (multiply-add) ratio of a merged network with per-group ratios `r`.
pub fn flop_ratio(layers: &[LayerCost], r: &[f64]) -> f64 {
    flop_ratio_by(layers, |g| r[g])
}

/// [`flop_ratio`] with the ratio of group `g` given by `ratio(g)` (the same arithmetic, in the
/// same order, without a per-group list).
fn flop_ratio_by(layers: &[LayerCost], ratio: impl Fn(usize) -> f64) -> f64 {
    let of = |g: Option<usize>| g.map_or(0.0, &ratio);
    let (mut merged, mut original) = (0.0, 0.0);
    for l in layers {
        let m = layer_multiplier(of(l.input_group), of(l.output_group));
        merged += l.macs * m;
        original += l.macs;
    }
    if original > 0.0 {
        merged / original
    } else {
        1.0
    }
}

/// Number of pairs merged in a group of width `n` kept separate by fraction `ratio`:
/// `round((1 - ratio) n)`, clamped to `0..=n`.
pub fn merged_pairs(n: usize, ratio: f64) -> usize {
    let k = libm::round((1.0 - ratio) * n as f64);
    (k.max(0.0) as usize).min(n)
}

/// The parameter ratio of a merged network with per-group ratios `r` (weights scale like
/// multiply-adds, biases like the output width `1 + r_out`).
pub fn param_ratio(layers: &[LayerCost], r: &[f64]) -> f64 {
    let (mut merged, mut original) = (0.0, 0.0);
    for l in layers {
        let (ri, ro) = (ratio_of(r, l.input_group), ratio_of(r, l.output_group));
        merged += l.weights * layer_multiplier(ri, ro) + l.biases * (1.0 + ro);
        original += l.weights + l.biases;
    }
    if original > 0.0 {
        merged / original
    } else {
        1.0
    }
}

/// One ratio for all `groups` groups whose FLOP ratio is `budget` (to 1e-12), by bisection.
/// The FLOP ratio grows monotonically with a common `r`, from 1 at `r = 0` to 2 at `r = 1`.
pub fn uniform_ratio(layers: &[LayerCost], groups: usize, budget: f64) -> Result<f64, BudgetError> {
    check_budget(budget)?;
    validate(layers, groups)?;
    let at = |r: f64| flop_ratio_by(layers, |_| r);
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    if at(hi) <= budget {
        return Ok(1.0);
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if at(mid) <= budget {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    Ok(lo)
}

/// A stage cut: stages before `cut` fully merged, the rest separate.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq)]
pub struct StageCut {
    /// Index of the first separate stage (`stages` means everything merged).
    pub cut: usize,
    /// The per-group ratios (0 or 1).
    pub ratios: Vec<f64>,
    /// The FLOP ratio this cut gives.
    pub flop_ratio: f64,
}

/// Every stage cut with its FLOP ratio, from all separate (cut 0, budget 2) to all merged
/// (cut = number of stages, budget 1). `group_stage[g]` is the stage of group `g`.
#[cfg(feature = "alloc")]
pub fn stage_cuts(
    layers: &[LayerCost],
    group_stage: &[usize],
) -> Result<Vec<StageCut>, BudgetError> {
    validate(layers, group_stage.len())?;
    let stages = group_stage.iter().map(|s| s + 1).max().unwrap_or(0);
    Ok((0..=stages)
        .map(|cut| {
            let ratios: Vec<f64> = group_stage
                .iter()
                .map(|&s| if s < cut { 0.0 } else { 1.0 })
                .collect();
            let flop_ratio = flop_ratio(layers, &ratios);
            StageCut {
                cut,
                ratios,
                flop_ratio,
            }
        })
        .collect())
}

/// The stage cut with the largest FLOP ratio not above `budget` (the most separate network
/// the budget pays for). Budgets between two cuts get the cheaper one; the caller reports the
/// achieved ratio.
#[cfg(feature = "alloc")]
pub fn stage_schedule(
    layers: &[LayerCost],
    group_stage: &[usize],
    budget: f64,
) -> Result<StageCut, BudgetError> {
    check_budget(budget)?;
    let cuts = stage_cuts(layers, group_stage)?;
    let best = cuts
        .into_iter()
        .filter(|c| c.flop_ratio <= budget + 1e-12)
        .max_by(|a, b| {
            a.flop_ratio
                .total_cmp(&b.flop_ratio)
                .then(b.cut.cmp(&a.cut))
        });
    // The all-merged cut costs exactly 1 and budgets are >= 1, so a cut always qualifies.
    Ok(best.expect("the fully merged cut costs 1"))
}

/// Ratios maximising `sum_g weights[g] * r_g` under the budget, filled greedily one unit at a
/// time (`widths[g]` units in group `g`, so `r_g` moves in steps of `1 / widths[g]`): each step
/// takes the group with the highest weight per marginal multiply-add that still fits; ties go
/// to the lower group index. Groups with weight 0 are separated only if budget is left over
/// after every positively weighted group is fully separate, in the same marginal-cost order.
#[cfg(feature = "alloc")]
pub fn weighted_ratios(
    layers: &[LayerCost],
    widths: &[usize],
    weights: &[f64],
    budget: f64,
) -> Result<Vec<f64>, BudgetError> {
    check_budget(budget)?;
    let groups = widths.len();
    let total = validate(layers, groups)?;
    if weights.len() != groups {
        return Err(BudgetError::LengthMismatch {
            what: "group weights",
            expected: groups,
            found: weights.len(),
        });
    }
    if let Some(index) = weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
        return Err(BudgetError::InvalidValue {
            what: "group weight",
            index,
        });
    }
    let mut units = vec![0usize; groups];
    let ratio = |units: &[usize]| -> Vec<f64> {
        units
            .iter()
            .zip(widths)
            .map(|(&u, &w)| if w == 0 { 0.0 } else { u as f64 / w as f64 })
            .collect()
    };
    let allowed = budget * total;
    let mut cost = total;
    loop {
        let r = ratio(&units);
        let mut best: Option<(usize, f64, f64)> = None; // (group, score, new cost)
        for g in 0..groups {
            if units[g] >= widths[g] {
                continue;
            }
            let mut next = r.clone();
            next[g] = (units[g] + 1) as f64 / widths[g] as f64;
            let new_cost = flop_ratio(layers, &next) * total;
            if new_cost > allowed * (1.0 + 1e-12) {
                continue;
            }
            let marginal = (new_cost - cost).max(f64::MIN_POSITIVE);
            // Positive weights first (by weight per marginal cost), then free riders by cost.
            let score = if weights[g] > 0.0 {
                weights[g] / marginal
            } else {
                -marginal
            };
            let better = match best {
                None => true,
                Some((_, s, _)) => {
                    let (pos_new, pos_old) = (weights[g] > 0.0, s > 0.0);
                    (pos_new && !pos_old) || (pos_new == pos_old && score > s)
                }
            };
            if better {
                best = Some((g, score, new_cost));
            }
        }
        match best {
            Some((g, _, new_cost)) => {
                units[g] += 1;
                cost = new_cost;
            }
            None => break,
        }
    }
    Ok(ratio(&units))
}
