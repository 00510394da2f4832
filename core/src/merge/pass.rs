//! The contract between the merge driver and whoever owns the merge data: a [`PassSource`].
//!
//! The driver (matching -> budget -> layouts -> sequential fits) never touches samples. For
//! every data pass it schedules it describes what it needs ([`Pass`]), hands the source
//! caller-owned buffers for the result ([`Moments`]) and a scratch of the length the source
//! asked for ([`PassSource::scratch_len`]); the source streams the merge samples through the
//! original models and the merged network so far, and accumulates the moments. This is how
//! faer's `LinOp` hands a solver its products: the solver (here, the driver) only sees the
//! products (here, moment sums), so one driver serves every way of holding the data. The
//! host's source is sharded, threaded and spills activations to disk
//! (`pleas::merge::stream`); a device's source keeps nothing and recomputes activations
//! sample by sample in the scratch (`merge::mlp`). Nothing here allocates.
//!
//! **What a source must guarantee.**
//! - Every sum is over all merge samples (all positions of a convolution), accumulated
//!   **into** the buffers: the driver zeroes them first, so a source may add shard totals.
//!   Row-wise parts (the dual form's rows) are written, in sample order.
//! - A fit pass fills exactly the parts its [`FitWants`] name; the others are `None`.
//! - The result does not depend on how the source batches, shards or threads the data, or the
//!   merge is not reproducible (a fixed fold order, as the host's shards have).
//! - Inputs are in the merged layout, read from the merged network's own activations
//!   ([`InputForm::Merged`], the sequential fit) or from the layout of the original models'
//!   activations ([`InputForm::Layout`]); targets are the rows' sources' outputs combined by
//!   [`RowSource::target`](super::sources::RowSource::target) (pre-activation), minus the
//!   prior's output when [`TargetForm::Residual`].
//! - A failure is returned as the source's own error type; the driver wraps it, it never
//!   turns it into a string.

use core::ops::Range;

/// Which columns of a fitted layer's merged input a pass reads: ranges of input channels
/// (each channel owning `patch` consecutive columns), then the bias column if `bias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSet<'c> {
    /// Input channel ranges, increasing and disjoint (all channels: one range).
    pub channels: &'c [Range<usize>],
    /// Columns per channel (`kh * kw`, 1 for a linear layer).
    pub patch: usize,
    /// Whether the constant bias column follows.
    pub bias: bool,
}

impl ColumnSet<'_> {
    /// Columns, the bias included.
    pub fn len(&self) -> usize {
        self.channels.iter().map(|r| r.len()).sum::<usize>() * self.patch + usize::from(self.bias)
    }

    /// Whether there are no columns at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a fit pass takes its inputs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputForm {
    /// The merged network's own activations, with the layers fitted so far (sequential fit).
    Merged,
    /// The layout of the original models' activations (`--fit original`, the paper's form).
    Layout,
}

/// What a fit pass regresses on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// The targets themselves.
    Targets,
    /// The targets minus the prior's output `W0 x` (the residual a ridge towards the prior
    /// solves for), in f64.
    Residual,
}

/// One fit pass: moments of the merged input of `layers` (which all read the same input)
/// against their target rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitPass<'p> {
    /// Fitted layers, in the driver's numbering; the target rows of several layers follow
    /// each other in this order.
    pub layers: &'p [usize],
    /// The input columns; the Gram and the cross moments are over these, in this order.
    pub columns: ColumnSet<'p>,
    /// The target rows (of the concatenated layers) the cross moments are for.
    pub rows: Range<usize>,
    /// Inputs of the merged network or of the originals' layout.
    pub input: InputForm,
    /// Targets or residuals against the prior.
    pub target: TargetForm,
    /// Which parts of [`FitMoments`] the pass fills (the others are `None`).
    pub wants: FitWants,
}

/// Which parts of [`FitMoments`] a fit pass fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FitWants {
    /// [`FitMoments::gram`].
    pub gram: bool,
    /// [`FitMoments::cross`].
    pub cross: bool,
    /// [`FitMoments::target_sq_sums`].
    pub target_sq_sums: bool,
    /// [`FitMoments::inputs`].
    pub inputs: bool,
    /// [`FitMoments::targets`].
    pub targets: bool,
}

/// A pass the driver schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass<'p> {
    /// Matching statistics of permutation group `group`: over every node carrying the group
    /// (and every sample and position), A's and B's unit sums, sums of squares, and the
    /// cross moments `sum a_i b_j`.
    Matching {
        /// The group.
        group: usize,
    },
    /// Least-squares moments of one fit.
    Fit(FitPass<'p>),
    /// Per-channel moments of a merged node (batch-norm statistics).
    Channels {
        /// The node.
        node: usize,
    },
}

/// The matching moments of one group of width `n` (all sums over samples, positions and the
/// group's nodes; `count` is how many values each unit's sums hold).
#[derive(Debug)]
pub struct GroupMoments<'m> {
    /// `sum a_i b_j`, `n x n` row-major (A's units as rows).
    pub cross: &'m mut [f64],
    /// `sum a_i`.
    pub sum_a: &'m mut [f64],
    /// `sum b_j`.
    pub sum_b: &'m mut [f64],
    /// `sum a_i^2`.
    pub sq_a: &'m mut [f64],
    /// `sum b_j^2`.
    pub sq_b: &'m mut [f64],
    /// Values per unit.
    pub count: &'m mut f64,
}

/// Where the Gram of a fit goes.
#[derive(Debug)]
pub enum GramOut<'m> {
    /// Not wanted in this pass.
    None,
    /// Lower triangle, packed row by row (`k (k + 1) / 2` values,
    /// [`packed_index`](crate::linalg::packed_index)).
    Packed(&'m mut [f64]),
    /// Dense `k x k` row-major; only the lower triangle needs to be valid.
    Dense(&'m mut [f64]),
}

/// The moments of one fit pass, for `k` columns and `c` target rows over `N` rows (samples,
/// or samples times positions). Any part may be left out (`None`) when the pass does not want
/// it. The row-wise parts are for the dual form, which needs the rows themselves.
#[derive(Debug)]
pub struct FitMoments<'m> {
    /// `sum x x^T` over the columns.
    pub gram: GramOut<'m>,
    /// `sum x t^T`, `k x c` row-major.
    pub cross: Option<&'m mut [f64]>,
    /// `sum t_o^2` per target row.
    pub target_sq_sums: Option<&'m mut [f64]>,
    /// The input rows themselves, `N x k` row-major (with the bias column only if the column
    /// set has it), in sample order: written, not added.
    pub inputs: Option<&'m mut [f64]>,
    /// The target rows themselves (residuals with [`TargetForm::Residual`]), `N x c`
    /// row-major, in sample order: written, not added.
    pub targets: Option<&'m mut [f64]>,
}

impl<'m> FitMoments<'m> {
    /// Nothing wanted (fill in what is).
    pub fn none() -> Self {
        Self {
            gram: GramOut::None,
            cross: None,
            target_sq_sums: None,
            inputs: None,
            targets: None,
        }
    }
}

/// Per-channel moments of a node over samples and positions.
#[derive(Debug)]
pub struct ChannelMoments<'m> {
    /// Values per channel.
    pub count: &'m mut f64,
    /// Mean per channel.
    pub mean: &'m mut [f64],
    /// Sum of squared deviations from the mean per channel.
    pub m2: &'m mut [f64],
}

/// The caller-owned buffers a pass fills, one variant per [`Pass`] variant.
#[derive(Debug)]
pub enum Moments<'m> {
    /// For [`Pass::Matching`].
    Group(GroupMoments<'m>),
    /// For [`Pass::Fit`].
    Fit(FitMoments<'m>),
    /// For [`Pass::Channels`].
    Channels(ChannelMoments<'m>),
}

/// A source of data passes for the merge driver (see the [module docs](self) for the
/// contract).
///
/// `Weights` is the merged network as the source reads it (the device: its output buffer;
/// the host: the named tensors), passed to every run so the source sees the layers fitted so
/// far without owning them.
pub trait PassSource {
    /// The merged network's weights as this source reads them.
    type Weights: ?Sized;
    /// Why a pass failed.
    type Error;

    /// f64 scratch values [`run`](Self::run) needs for `pass` (0 if it allocates its own, as
    /// the host's source does).
    fn scratch_len(&self, pass: &Pass<'_>) -> usize;

    /// Streams the merge data once for `pass`, adding its moments into `moments` (zeroed by
    /// the caller; the variant matching `pass`), reading the merged network from `weights`
    /// and using `scratch` (at least [`scratch_len`](Self::scratch_len) values).
    fn run(
        &mut self,
        pass: &Pass<'_>,
        weights: &Self::Weights,
        moments: &mut Moments<'_>,
        scratch: &mut [f64],
    ) -> Result<(), Self::Error>;
}
