//! The whole PLeaS merge of two small convolutional networks in caller-owned memory, without
//! allocation: for microcontrollers, and for C callers that own their buffers.
//!
//! The two models share one architecture, given as a compact network description
//! ([`Network`]): convolutions (any kernel, stride and padding; bias allowed), linear layers,
//! batch-norm, ReLU, max / average pooling, global average pooling and residual adds, ending
//! in one linear head that is the network's only output. Every batch-norm is folded into the
//! conv or linear layer before it first ([`compact_fold`](crate::forward::compact_fold), the
//! arithmetic of `pleas merge --bn fold`, the default, bit for bit), into the front of the
//! forward scratch; a batch-norm that cannot be folded is not supported. The permutation
//! groups are the host's (`graph::groups`): every conv or linear layer before the head starts
//! a group, carried by its output and the ReLU and pooling nodes after it, and a residual add
//! makes the groups of its two operands one (the convs of both branches then write the same
//! group, and the layers reading it read the sum). An add of the network input (which no
//! group permutes) is refused.
//!
//! The merge is the one of [`merge::driver`](crate::merge::driver), the driver the MLP merge
//! uses, with an in-place source on the compact forward pass
//! ([`forward::compact`](crate::forward::compact)):
//!
//! 1. **Matching**: per group, neg-l2 from the moments of A's and B's units over every
//!    sample and every position of every node carrying the group (as the host's
//!    `activation_stats` counts them), one auction, the top-k pairs by score.
//! 2. **Budget**: one ratio for every group by bisection on the FLOP ratio (conv layers cost
//!    their multiply-adds over the output positions, as the host counts them).
//! 3. **Least squares**, layer by layer, sequentially: a conv layer's rows are its output
//!    positions, its columns the im2row patch of the merged network's own input (zero
//!    padding included), per merged input channel its `kh x kw` taps in PyTorch order, then
//!    the bias; targets are A's and B's outputs of the layer in the merged layout. Output
//!    blocks, the prior, the copy rule and the ridge rule are the driver's.
//! 4. **Heads** as for the MLP: two heads with [`Heads::Separate`], one with
//!    [`Heads::Shared`].
//!
//! # Memory
//!
//! The caller passes the merged parameters' buffer ([`CnnMergePlan::output_len`] f32, laid
//! out as the compact forward pass reads [`CnnMergePlan::merged_network`]), an f64 scratch
//! ([`CnnMergePlan::scratch_len`]), an f32 forward scratch ([`CnnMergePlan::forward_len`]:
//! both models' folded parameters when there is a batch-norm to fold, then one network's
//! activation slots and kernel scratch, shared by A, B and the merged network in turn) and an
//! index scratch. For the `cnn_split` pair (28 x 28 inputs, 8-16-16 channels) at budget 1.2:
//! 18.8 kB of parameters, 139 kB of f64 scratch, 265 to 272 kB of forward scratch (by
//! instruction-set path) and 160 indices, whatever the number of samples. The f64 scratch is the largest of, over the groups,
//! `n^2 + auction(n) + 4n` plus A's activations of the group's nodes for one sample, and over
//! the solved blocks with `k` columns (bias included) and `C` right-hand sides,
//! `k (k + 1) / 2 + k C` plus A's and B's outputs of the layer for one sample and `k + C`.
//! Models and samples are only read (they can stay in flash); samples can be bytes read
//! through a normalisation table ([`Samples::U8`]).
//!
//! # Arithmetic
//!
//! Forward passes are the compact pass's f32 kernels, one sample at a time; all sums over
//! samples and positions are f64; the prior and the targets are formed in f32 as the host
//! forms them, fitted weights stored as `f32(W0 + delta)`. The host sums f32 blocks of
//! samples (and, for stride-1 convolutions, lag moments) into f64: both agree to the
//! rounding of those sums.

mod error;
mod plan;
mod source;

pub use error::{CnnBuffer, CnnMergeError, CnnOperand};
pub use plan::{CnnMergePlan, cnn_merge_plan};

pub use crate::forward::compact::Network;
pub use crate::merge::driver::{
    DriverError, GroupInfo, LayerFitInfo, MAX_FITTED, MAX_GROUPS, Model, Samples,
};
pub use crate::merge::sources::Heads;

use self::source::CnnSource;
use crate::forward::compact::CompactPlan;
use crate::forward::compact_fold::FoldedNetwork;
use crate::merge::driver::{SolveKnobs, fit_layers, match_groups};

/// The knobs of a CNN merge: those of the MLP merge (the host pipeline's defaults).
pub type CnnMergeParams = crate::merge::mlp::MlpMergeParams;

/// Everything one merge reads.
#[derive(Debug, Clone, Copy)]
pub struct CnnMergeInputs<'a> {
    /// The architecture of both models (batch-norm folded).
    pub net: Network<'a>,
    /// One head or two.
    pub heads: Heads,
    /// Model A's parameters, as the compact forward pass lays them out for `net`.
    pub a: &'a [f32],
    /// Model B's parameters, likewise.
    pub b: &'a [f32],
    /// Merge samples, `N x input` values (NCHW per sample), as the models take them.
    pub samples: Samples<'a>,
    /// FLOP ratio to one model, in `[1, 2]`.
    pub budget: f64,
}

/// What a merge did (its plan is [`cnn_merge_plan`]'s for the same inputs: not repeated
/// here, to keep a device's stack small).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CnnMergeInfo {
    /// Per group: the matching.
    pub groups: heapless::Vec<GroupInfo, MAX_GROUPS>,
    /// Per fitted layer, in order (the head `b` last).
    pub layers: heapless::Vec<LayerFitInfo, MAX_FITTED>,
}

/// Checks the inputs' lengths and that `plan` is [`cnn_merge_plan`]'s for them (planned again
/// here, in a frame of its own that is gone before the merge runs).
#[inline(never)]
fn check_inputs(
    plan: &CnnMergePlan,
    inputs: &CnnMergeInputs<'_>,
    params: &CnnMergeParams,
) -> Result<(), CnnMergeError> {
    let original = CompactPlan::new(inputs.net).map_err(CnnMergeError::Network)?;
    for (model, p) in [(Model::A, inputs.a), (Model::B, inputs.b)] {
        if p.len() != original.params_len() {
            return Err(CnnMergeError::ShapeMismatch {
                operand: CnnOperand::Params(model),
                expected: original.params_len(),
                found: p.len(),
            });
        }
    }
    let d = inputs.net.input.len();
    let n = inputs.samples.len() / d;
    if inputs.samples.len() != n * d {
        return Err(CnnMergeError::ShapeMismatch {
            operand: CnnOperand::Samples,
            expected: d,
            found: inputs.samples.len(),
        });
    }
    if cnn_merge_plan(&inputs.net, inputs.heads, n, inputs.budget, params)? != *plan {
        return Err(CnnMergeError::PlanMismatch);
    }
    Ok(())
}

/// Merges the two CNNs of `inputs` (see the module docs) into `out` (the merged network's
/// parameters) following `plan` ([`cnn_merge_plan`] of the same inputs and params: the
/// caller has it to size its buffers, and a device's stack then holds one plan), using
/// `scratch` (f64), `forward` (f32) and `indices` of at least the plan's lengths. Inputs are
/// checked before anything is computed: the description, the models' and the samples'
/// lengths, budget, params, the plan, buffer lengths, finiteness (A, B, samples). A merge that
/// fails leaves `out` unspecified.
pub fn cnn_merge(
    plan: &CnnMergePlan,
    inputs: &CnnMergeInputs<'_>,
    params: &CnnMergeParams,
    out: &mut [f32],
    scratch: &mut [f64],
    forward: &mut [f32],
    indices: &mut [usize],
) -> Result<CnnMergeInfo, CnnMergeError> {
    check_inputs(plan, inputs, params)?;
    plan::check_buffers(plan, out.len(), scratch.len(), forward.len(), indices.len())?;
    merge_checked(plan, inputs, params, out, scratch, forward, indices)
}

/// [`cnn_merge`] after the checks of the plan and the buffers (a frame of its own: the
/// checks' is gone while the merge runs).
#[inline(never)]
fn merge_checked(
    plan: &CnnMergePlan,
    inputs: &CnnMergeInputs<'_>,
    params: &CnnMergeParams,
    out: &mut [f32],
    scratch: &mut [f64],
    forward: &mut [f32],
    indices: &mut [usize],
) -> Result<CnnMergeInfo, CnnMergeError> {
    let original = CompactPlan::new(inputs.net).map_err(CnnMergeError::Network)?;
    for (model, p) in [(Model::A, inputs.a), (Model::B, inputs.b)] {
        if let Some(index) = p.iter().position(|v| !v.is_finite()) {
            return Err(CnnMergeError::NonFinite {
                operand: CnnOperand::Params(model),
                index,
            });
        }
    }
    if let Some(index) = inputs.samples.first_non_finite() {
        return Err(CnnMergeError::NonFinite {
            operand: CnnOperand::Samples,
            index,
        });
    }
    let merged = CompactPlan::new(plan.merged_network()).map_err(CnnMergeError::Network)?;
    let out = &mut out[..plan.output_len];
    let folded = FoldedNetwork::new(&inputs.net).map_err(CnnMergeError::Network)?;
    // The folded models go first in the forward scratch.
    let (fa, rest) = forward.split_at_mut(plan.folded_params_len);
    let (fb, forward) = rest.split_at_mut(plan.folded_params_len);
    let (a, b) = if plan.folded_params_len > 0 {
        fold(
            &folded,
            &original,
            [inputs.a, inputs.b],
            [&mut *fa, &mut *fb],
        )?;
        (&*fa, &*fb)
    } else {
        (inputs.a, inputs.b)
    };
    let folded_net = folded.network(inputs.net.input);
    let mut source = CnnSource {
        plan,
        original: CompactPlan::new(folded_net).map_err(CnnMergeError::Network)?,
        merged,
        a,
        b,
        samples: inputs.samples,
        forward,
        indices: &[],
    };
    let knobs = SolveKnobs {
        relative_ridge: params.relative_ridge,
        max_retries: params.max_retries,
        auction: params.auction,
    };
    // The forward pass reads every merged parameter: start from zeros, not the caller's.
    out.fill(0.0);
    let groups = match_groups(&mut source, &knobs, out, scratch, indices)?;
    source.indices = &*indices;
    let layers = fit_layers(&mut source, &knobs, indices, out, scratch)?;
    if let Some(index) = out.iter().position(|v| !v.is_finite()) {
        return Err(DriverError::NonFiniteResult { index }.into());
    }
    Ok(CnnMergeInfo { groups, layers })
}

/// Folds both models' batch-norms into `dst`.
#[inline(never)]
fn fold(
    folded: &FoldedNetwork,
    original: &CompactPlan<'_>,
    params: [&[f32]; 2],
    dst: [&mut [f32]; 2],
) -> Result<(), CnnMergeError> {
    for (p, d) in params.into_iter().zip(dst) {
        folded
            .fold_params(original, p, d)
            .map_err(CnnMergeError::Forward)?;
    }
    Ok(())
}
