//! The whole PLeaS merge of two MLPs in caller-owned memory, without allocation: for
//! microcontrollers, and for C callers that own their buffers.
//!
//! Two MLPs `A` and `B` of the same shape (`inputs -> hidden[0] -> ... -> classes`, linear
//! layers with ReLU between them, PyTorch weight layout `out x in`) are merged on `N` unlabeled
//! merge samples into one MLP whose size is set by a FLOP budget in `[1, 2]`. The result is the
//! network the host pipeline `pleas merge` builds for an MLP with its default settings:
//!
//! 1. **Matching** (docs/ALGORITHM.md section 2): for each hidden layer (one permutation group), the
//!    neg-l2 similarity `S[i, j] = -||a_i - b_j||` between A's and B's units over the merge
//!    samples, summed over the group's two nodes (the linear output and its ReLU), from
//!    moment sums; one auction per group maximising `sum_i S[i, P(i)]`.
//! 2. **Budget** (section 3): one separate fraction `r` for every group, by bisection on the
//!    FLOP ratio ([`uniform_ratio`]); `k = round((1 - r) n)` pairs with the highest scores are
//!    merged ([`select_top`]: ties to the lower A unit); the merged layer has width `2n - k`,
//!    laid out `[merged | A-only | B-only]`, each block in increasing A order.
//! 3. **Least squares** (section 4, the sequential variant): layer by layer, each merged
//!    layer's inputs are the merged network's own activations (already-fitted layers, ReLU),
//!    its targets the layout of A's and B's pre-activations (`(a + b) / 2` for merged units);
//!    output blocks are fitted separately with their allowed input columns (merged rows on
//!    `[m, A, B]`, A-only rows on `[m, A]`, B-only rows on `[m, B]`, the cross blocks stay
//!    zero), the bias as a constant column, by ridge least squares pulled towards the
//!    permute-and-average weights `W0` ([`RidgeToward::Average`]) with
//!    `lambda = 1e-6 * mean(diag G[c, c])` of the block's Gram, retried with `10 lambda` after
//!    a failed factorization (the rule of [`RidgeParams`](crate::lstsq::RidgeParams)).
//!    A layer that reads only exact copies of the models' units keeps `W0` without a solve
//!    (a *copy*): the first layer, which reads the samples both models share, and at budget
//!    2.0 every layer (each hidden layer with no merged pair passes its models' units on
//!    unchanged). Every row's target is then the combination of its sources' outputs that
//!    `W0` computes, so `W0` has zero loss and zero ridge penalty: it is the exact solution,
//!    which a solve would only blur with rounding in the directions the samples leave
//!    unexcited. With [`RidgeToward::Zero`] nothing is a copy.
//! 4. **Heads**: with different label spaces ([`Heads::Separate`]) two heads, `a` reading
//!    `[m | A-only]` fitted to A's logits and `b` reading `[m | B-only]` fitted to B's; with a
//!    shared label space ([`Heads::Shared`]) one head on all units fitted to the mean logits.
//!
//! # Structure
//!
//! The decisions are the core's, shared with the host: where a merged unit comes from
//! ([`merge::sources`](crate::merge::sources)), the prior and the exact-copy rule
//! ([`merge::prior`](crate::merge::prior)), neg-l2 and the auction tail
//! ([`similarity::neg_l2`](crate::similarity::neg_l2),
//! [`merge::pairs`](crate::merge::pairs)), the ridge retries and the form choice
//! ([`lstsq::retry`](crate::lstsq::retry)). The steps are those of the one device driver,
//! [`merge::driver`](crate::merge::driver) (which the CNN merge runs too): this module
//! builds its schedule from the dims and gives it an in-place source (private `source.rs`,
//! through the pass contract of [`merge::pass`](crate::merge::pass)), which computes the
//! moment sums by recomputing activations sample by sample in the scratch.
//!
//! # Primal or dual least squares
//!
//! A block with `k` input columns (bias included) is solved in the primal form
//! (`(G + lambda I) (W - W0)^T = X^T (T - X W0^T)` with the `k x k` Gram, accumulated over the
//! samples) when `k <= N`, and in the dual form of [`lstsq::dual`](crate::lstsq::dual)
//! (`W = W0 + (X^T (X X^T + lambda I)^{-1} (T - X W0^T))^T` with the `N x N` kernel) when
//! `k > N`: the first layer of a 784-input MLP has 785 columns, against a few hundred merge
//! samples, when it is solved (with [`RidgeToward::Zero`]; with the default it is a copy).
//! Both solve the same problem with the same `lambda` (`trace(X X^T) = trace(X^T X)`).
//! That is [`LsForm::Auto`], the default; [`MlpMergeParams::form`] can force either form.
//! Copies need no form and no scratch.
//!
//! # Memory
//!
//! Nothing is allocated, and the inputs are only read: the models' weights and the samples
//! can stay in flash. Samples come as f32 values or as bytes with a 256-entry table of their
//! normalised values ([`Samples::U8`], read through the table at every use, with the same
//! result bit for bit), so 8-bit images need no normalised copy in RAM (250 Fashion-MNIST
//! images are 196 kB as bytes, 784 kB as f32). The caller passes the merged weights' buffer
//! (`f32`, [`MlpMergePlan::output_len`]), an f64 scratch ([`MlpMergePlan::scratch_len`]) and
//! an index scratch ([`MlpMergePlan::index_len`]); [`mlp_merge_plan`] computes all three from
//! the shapes, the sample count and the budget. Every symmetric system is kept in packed storage
//! and every pass over the data is streamed sample by sample (activations are recomputed
//! rather than stored), so with `W = max(hidden, classes)`, `M` the widest merged layer,
//! `n_g` the hidden widths, `C = min(rhs_chunk, rows)` right-hand sides per solve:
//!
//! ```text
//! scratch = 4 W + 2 M + max( n_g^2 + 56 n_g                       (matching group g),
//!                            k (k + 1) / 2 + (k + 1) C + k          (primal block, k <= N),
//!                            N (N + 1) / 2 + N C [+ N (k - bias)]   (dual block, k > N) )
//! index   = 4 sum_g n_g
//! ```
//!
//! f64 elements, the maximum over the blocks that are solved (copies need nothing), the
//! bracket only for dual blocks whose inputs are hidden activations (which are then kept).
//! For the 784-64-64 pair with two 5-way heads, the first layer is a copy and the largest
//! solved block reads the merged first layer: 8,064 to 8,192 f64 (64.5 to 65.5 kB) at any
//! budget and any `N`, and 512 indices. With the ridge towards zero the first layer is solved
//! in the dual form and dominates: `45,150 + 4,800` f64 at `N = 300`, 403 kB. The merged
//! weights themselves take `m_1 (784 + 1) + ...` f32: 220 kB at budget 1.0, 265 kB at 1.2,
//! 473 kB at budget 2.0 (`m_1 = 128`).
//!
//! # Arithmetic (what matches the host and what does not)
//!
//! Forward passes are f32, like the host's; the permute-and-average weights and the
//! targets are formed in f32 exactly as the host forms them (`0.5 a + 0.5 b`); the fitted
//! weights are stored as `f32(W0 + delta)` with `delta` in f64, as the host stores them. All
//! sums over samples (moments, Grams, kernels, right-hand sides) are accumulated in f64 from
//! the f32 values, one sample at a time; the host multiplies blocks of samples in f32 (with a
//! centring shift) and folds them into f64. The two agree to f32 rounding of those sums, which
//! is what the results agree to where the fit is determined by the data. Where it is not (a
//! block with more columns than samples: the Gram is singular up to the ridge), both solve in
//! sample space and keep the prior exactly in the directions the samples do not span, which
//! is the exact solution of the problem (from the f32 Gram, rounding amplified by `1 / lambda`
//! would set those directions). Copies are the same bits on both: `W0` is formed in f32 in
//! the same order.
//!
//! # Work
//!
//! Activations are recomputed for every pass over the samples (one per chunk of `rhs_chunk`
//! output rows per block), so the f32 forward passes dominate. For the 784-64-64 pair at
//! `N = 250`, budget 1.2, through the C API's release build on one x86-64 core: 0.43 s of CPU
//! with the default (the first layer a copy), 0.60 s with the ridge towards zero (the first
//! layer solved in the dual form: its kernel, `N^2 / 2 x 785` f64 multiply-adds, and its
//! residuals and update, `m_1 x 785 x N` each); under QEMU's Cortex-M4F, which does f64 in
//! software, 13.2 s and 23.6 s. Speed was traded for memory and for agreement with the host.
//!
//! [`uniform_ratio`]: super::budget::uniform_ratio
//! [`select_top`]: crate::assign::select_top

mod error;
mod forward;
mod layout;
mod plan;
mod source;

pub use crate::merge::driver::{DriverError, GroupInfo, LayerFitInfo, Model, Samples};
pub use error::{MlpMergeError, MlpOperand, ScratchKind};
pub use layout::MergedUnits;
pub use plan::{MlpMergePlan, mlp_merge_plan};

use crate::assign::AuctionParams;
pub use crate::lstsq::LsForm;
pub use crate::merge::prior::RidgeToward;
pub use crate::merge::sources::Heads;

use self::source::InPlaceSource;
use crate::merge::driver::{SolveKnobs, fit_layers, match_groups};

/// Most hidden layers an MLP may have here (the plan and the report keep per-layer values in
/// fixed-capacity lists).
pub const MAX_HIDDEN: usize = 8;

/// The shape of the two MLPs: `inputs -> hidden[0] -> ... -> classes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlpDims<'a> {
    /// Input features (784 for 28 x 28 images).
    pub inputs: usize,
    /// Hidden widths, at most [`MAX_HIDDEN`] layers (each followed by a ReLU).
    pub hidden: &'a [usize],
    /// Outputs of each model's head.
    pub classes: usize,
    /// Whether every layer has a bias.
    pub bias: bool,
}

/// One linear layer of an original model: `weight` is `out x in` row-major (PyTorch's layout),
/// `bias` has `out` values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerRef<'a> {
    /// `out x in` weights.
    pub weight: &'a [f32],
    /// `out` biases (`None` when the MLP has no biases).
    pub bias: Option<&'a [f32]>,
}

/// Everything one merge reads.
#[derive(Debug, Clone, Copy)]
pub struct MlpMergeInputs<'a> {
    /// The shape of both models.
    pub dims: MlpDims<'a>,
    /// One head or two.
    pub heads: Heads,
    /// Model A: its hidden layers then its head (`hidden.len() + 1` layers).
    pub a: &'a [LayerRef<'a>],
    /// Model B, likewise.
    pub b: &'a [LayerRef<'a>],
    /// Merge samples, `N x inputs` row-major, as the models take them (f32 values, or bytes
    /// read through a normalisation table).
    pub samples: Samples<'a>,
    /// FLOP ratio to one model, in `[1, 2]`.
    pub budget: f64,
}

/// Tuning knobs of [`mlp_merge`]. The defaults are the host pipeline's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct MlpMergeParams {
    /// Ridge relative to the mean diagonal of each block's Gram. Default `1e-6`.
    pub relative_ridge: f64,
    /// What the ridge pulls towards. Default [`RidgeToward::Average`].
    pub ridge_toward: RidgeToward,
    /// How many times a block's ridge may be multiplied by 10 after a failed factorization.
    /// Default 4.
    pub max_retries: u32,
    /// The assignment's knobs. Default [`AuctionParams::default`].
    pub auction: AuctionParams,
    /// Output rows solved per pass over the samples (each pass recomputes the targets).
    /// Larger values need more scratch (see the module docs) and fewer passes. Default 16;
    /// values below 1 count as 1.
    pub rhs_chunk: usize,
    /// Which form solves each block. Default [`LsForm::Auto`]; the others exist to compare
    /// the two forms (they solve the same problem) and cost more memory.
    pub form: LsForm,
}

impl Default for MlpMergeParams {
    fn default() -> Self {
        Self {
            relative_ridge: 1e-6,
            ridge_toward: RidgeToward::Average,
            max_retries: 4,
            auction: AuctionParams::default(),
            rhs_chunk: 16,
            form: LsForm::Auto,
        }
    }
}

impl MlpMergeParams {
    /// These params with `relative_ridge` replaced.
    pub const fn with_relative_ridge(mut self, relative_ridge: f64) -> Self {
        self.relative_ridge = relative_ridge;
        self
    }

    /// These params with `ridge_toward` replaced.
    pub const fn with_ridge_toward(mut self, ridge_toward: RidgeToward) -> Self {
        self.ridge_toward = ridge_toward;
        self
    }

    /// These params with `max_retries` replaced.
    pub const fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// These params with the auction params replaced.
    pub const fn with_auction(mut self, auction: AuctionParams) -> Self {
        self.auction = auction;
        self
    }

    /// These params with `form` replaced.
    pub const fn with_form(mut self, form: LsForm) -> Self {
        self.form = form;
        self
    }

    /// These params with `rhs_chunk` replaced.
    pub const fn with_rhs_chunk(mut self, rhs_chunk: usize) -> Self {
        self.rhs_chunk = rhs_chunk;
        self
    }
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MlpMergeInfo {
    /// The plan it followed.
    pub plan: MlpMergePlan,
    /// Per hidden layer: the matching.
    pub groups: heapless::Vec<GroupInfo, MAX_HIDDEN>,
    /// Per fitted layer, in order: the hidden layers, then head `a` (or the shared head), then
    /// head `b`.
    pub layers: heapless::Vec<LayerFitInfo, { MAX_HIDDEN + 2 }>,
}

/// Merges the two MLPs of `inputs` (see the module docs) into `out`, laid out as
/// [`MlpMergePlan`] describes (dense `out x in` weights per layer with the cross blocks zero,
/// then biases; heads last), using `scratch` (f64) and `indices` of at least the plan's
/// lengths.
///
/// Inputs are checked before anything is computed, in this order: shapes (dims, then A's and
/// B's layers, then samples), budget, params, buffer lengths, finiteness (A, B, samples). A
/// merge that fails leaves `out` unspecified.
pub fn mlp_merge(
    inputs: &MlpMergeInputs<'_>,
    params: &MlpMergeParams,
    out: &mut [f32],
    scratch: &mut [f64],
    indices: &mut [usize],
) -> Result<MlpMergeInfo, MlpMergeError> {
    let plan = plan::validate(inputs, params, out.len(), scratch.len(), indices.len())?;
    let mut source = InPlaceSource {
        plan: &plan,
        a: inputs.a,
        b: inputs.b,
        samples: inputs.samples,
        indices: &[],
        schedule: plan.schedule(),
    };
    let knobs = SolveKnobs {
        relative_ridge: params.relative_ridge,
        max_retries: params.max_retries,
        auction: params.auction,
    };
    let groups = match_groups(&mut source, &knobs, out, scratch, indices)?;
    source.indices = &*indices;
    let layers = fit_layers(&mut source, &knobs, indices, out, scratch)?;
    if let Some(index) = out[..plan.output_len].iter().position(|v| !v.is_finite()) {
        return Err(DriverError::NonFiniteResult { index }.into());
    }
    Ok(MlpMergeInfo {
        plan,
        groups,
        layers,
    })
}
