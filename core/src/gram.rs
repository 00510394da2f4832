//! Streaming accumulation of the moment sums behind least squares: `sum x x^T`, `sum x t^T`,
//! `sum x`, `sum t`, `sum t^2` and the sample count.
//!
//! Samples arrive in batches of any size (rows of `X`, and optionally the matching rows of a
//! target matrix `T`). The accumulator multiplies up to [`GramParams::block_samples`] samples at
//! a time in f32 with the blocked SYRK / GEMM kernels and folds each finished block into f64
//! totals, so rounding error grows with the block length, not with the number of samples.
//!
//! To keep cancellation out of the f32 products, every sample is centred on a per-feature
//! *shift* while it is packed (`x - s`, `t - u`); the shift is the mean of the first block seen
//! (rounded to f32) unless the caller sets one. All sums are kept about the shift and turned back
//! into uncentred moments in f64 when read ([`GramAccumulator::write_gram`] and friends), and
//! the covariance is read directly from the centred sums.
//!
//! Two accumulators [`combine`](GramAccumulator::combine) exactly as far as f64 addition goes:
//! this is how threads and shards reduce. With equal shifts the combination is a plain sum of
//! the totals; otherwise the other side's sums are moved to this side's shift first.
//!
//! Storage is caller-owned: an f64 buffer of [`GramAccumulator::storage_len`] for the totals and
//! an f32 buffer of [`GramAccumulator::workspace_len`] for the block products, shifts and
//! packing. With the `alloc` feature, [`GramAccumulator::new_owned`] allocates both.

use core::fmt;

use crate::linalg::blocked::{
    Dest, add_tiled_row_f64, tiled_len, tiled_row_strips, zero_lower_tiles,
};
use crate::linalg::{MatMut, MatRef, first_outside, gemm, syrk};

pub mod conv;
pub mod planes;

/// Tuning knobs of [`GramAccumulator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GramParams {
    /// Samples multiplied in f32 before the block is folded into the f64 totals. Larger blocks
    /// fold less often (each fold reads `dim^2` values) but let f32 rounding grow as the square
    /// root of the block length; 4096 keeps the relative error near `64 * 2^-24 = 4e-6` per
    /// block (with centred data), well below what the least-squares fits can notice.
    pub block_samples: usize,
    /// Whether to accumulate `sum x x^T`. Matching statistics need only the cross moment and
    /// per-feature squares: turning the Gram off saves `dim^2 / 2` multiply-adds per sample.
    pub gram: bool,
}

impl Default for GramParams {
    fn default() -> Self {
        Self {
            block_samples: 4096,
            gram: true,
        }
    }
}

impl GramParams {
    /// Parameters with the given block length (at least 1).
    pub fn with_block_samples(block_samples: usize) -> Self {
        Self {
            block_samples: block_samples.max(1),
            ..Self::default()
        }
    }

    /// The same parameters without the Gram (`sum x x^T`): cross moments and sums only.
    pub fn without_gram(self) -> Self {
        Self {
            gram: false,
            ..self
        }
    }
}

/// Which operand an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// The sample matrix `X`.
    Samples,
    /// The target matrix `T`.
    Targets,
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operand::Samples => "samples X",
            Operand::Targets => "targets T",
        })
    }
}

/// Why the accumulator rejected a call. On error no sample of the call is counted.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum GramError {
    /// A batch or buffer has the wrong width or length.
    ShapeMismatch {
        /// What has the wrong shape.
        what: &'static str,
        /// The size expected.
        expected: usize,
        /// The size found.
        found: usize,
    },
    /// A NaN or infinity in the input; `sample` counts from the first sample ever pushed.
    NonFinite {
        /// The operand holding it.
        operand: Operand,
        /// Global sample index (row).
        sample: u64,
        /// Feature index (column).
        column: usize,
    },
    /// A finite value too large for the f32 block products (its square, summed over a block,
    /// would overflow f32); `limit` is the largest magnitude accepted.
    OutOfRange {
        /// The operand holding it.
        operand: Operand,
        /// Global sample index (row).
        sample: u64,
        /// Feature index (column).
        column: usize,
        /// The largest accepted magnitude for the current block length.
        limit: f32,
    },
    /// A shift can only be set before any sample is pushed.
    ShiftAfterData,
    /// The Gram was asked for but the accumulator was built without it
    /// ([`GramParams::gram`] is false).
    GramNotAccumulated,
    /// [`GramAccumulator::resume`] was given a state no accumulator with these parameters
    /// can be in (`what` says which part).
    InvalidState {
        /// What is inconsistent.
        what: &'static str,
    },
}

impl fmt::Display for GramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GramError::ShapeMismatch {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected {expected}, found {found}"),
            GramError::NonFinite {
                operand,
                sample,
                column,
            } => write!(
                f,
                "non-finite value in {operand} at sample {sample}, column {column}"
            ),
            GramError::OutOfRange {
                operand,
                sample,
                column,
                limit,
            } => write!(
                f,
                "value in {operand} at sample {sample}, column {column} exceeds {limit:e} in \
                 magnitude (its square would overflow the f32 block products)"
            ),
            GramError::ShiftAfterData => {
                f.write_str("the shift can only be set before the first sample")
            }
            GramError::GramNotAccumulated => {
                f.write_str("this accumulator was built without the Gram (sum x x^T)")
            }
            GramError::InvalidState { what } => write!(f, "invalid accumulator state: {what}"),
        }
    }
}

impl core::error::Error for GramError {}

impl GramError {
    /// The same error with its sample index moved by `offset` (for a batch that was pushed
    /// into an accumulator of its own, reported in the frame of the whole input).
    pub fn with_sample_offset(self, offset: u64) -> Self {
        match self {
            GramError::NonFinite {
                operand,
                sample,
                column,
            } => GramError::NonFinite {
                operand,
                sample: sample + offset,
                column,
            },
            GramError::OutOfRange {
                operand,
                sample,
                column,
                limit,
            } => GramError::OutOfRange {
                operand,
                sample: sample + offset,
                column,
                limit,
            },
            other => other,
        }
    }
}

/// Offsets of the f64 totals inside the storage buffer.
#[derive(Debug, Clone, Copy)]
struct StorageLayout {
    gram: usize,
    cross: usize,
    sum_x: usize,
    sum_xx: usize,
    sum_t: usize,
    sum_tt: usize,
    len: usize,
}

impl StorageLayout {
    fn new(dim: usize, targets: usize, with_gram: bool) -> Self {
        let gram = 0;
        let cross = gram + if with_gram { dim * dim } else { 0 };
        let sum_x = cross + dim * targets;
        let sum_xx = sum_x + dim;
        let sum_t = sum_xx + dim;
        let sum_tt = sum_t + targets;
        let len = sum_tt + targets;
        Self {
            gram,
            cross,
            sum_x,
            sum_xx,
            sum_t,
            sum_tt,
            len,
        }
    }
}

/// Offsets of the f32 block products, shifts and packing scratch inside the workspace.
#[derive(Debug, Clone, Copy)]
struct WorkspaceLayout {
    gram: usize,
    cross: usize,
    sum_x: usize,
    shift_x: usize,
    shift_t: usize,
    pack: usize,
    len: usize,
}

impl WorkspaceLayout {
    fn new(dim: usize, targets: usize, block: usize, with_gram: bool) -> Self {
        // The f32 block products are kept tile-major (see `blocked::Dest::Tiled`).
        let gram = 0;
        let cross = gram + if with_gram { tiled_len(dim, dim) } else { 0 };
        let sum_x = cross + tiled_len(dim, targets);
        let shift_x = sum_x + 2 * dim;
        let shift_t = shift_x + dim;
        let pack = shift_t + targets;
        let pack_len = syrk::syrk_lower_scratch_len(block, dim)
            .max(gemm::gemm_scratch_len(dim, targets, block))
            .max(planes::plane_scratch_len(dim, targets, block));
        Self {
            gram,
            cross,
            sum_x,
            shift_x,
            shift_t,
            pack,
            len: pack + pack_len,
        }
    }
}

/// `sums[j] += sum_i (x[i, j] - shift[j])` and `squares[j] += sum_i (x[i, j] - shift[j])^2`,
/// in f32 (one block of centred samples).
#[inline(always)]
fn add_centred_sums_f32(x: MatRef<'_, f32>, shift: &[f32], sums: &mut [f32], squares: &mut [f32]) {
    for i in 0..x.rows() {
        match x.row(i) {
            // Element-wise over the columns: vectorises without reassociating any sum.
            Some(row) => {
                for (((s, q), &v), &c) in
                    sums.iter_mut().zip(squares.iter_mut()).zip(row).zip(shift)
                {
                    let d = v - c;
                    *s += d;
                    *q += d * d;
                }
            }
            None => {
                for (j, ((s, q), &c)) in sums
                    .iter_mut()
                    .zip(squares.iter_mut())
                    .zip(shift)
                    .enumerate()
                {
                    let d = x.at(i, j) - c;
                    *s += d;
                    *q += d * d;
                }
            }
        }
    }
}

/// `sums[j] += sum_i (t[i, j] - shift[j])` and `squares[j] += sum_i (...)^2`, in f64.
#[inline(always)]
fn add_centred_sums_f64(t: MatRef<'_, f32>, shift: &[f32], sums: &mut [f64], squares: &mut [f64]) {
    for i in 0..t.rows() {
        if let Some(row) = t.row(i) {
            // Element-wise over the columns: vectorises without reassociating any sum.
            for (((s, q), &v), &c) in sums.iter_mut().zip(squares.iter_mut()).zip(row).zip(shift) {
                let v = f64::from(v - c);
                *s += v;
                *q += v * v;
            }
            continue;
        }
        for (j, ((s, q), &c)) in sums
            .iter_mut()
            .zip(squares.iter_mut())
            .zip(shift)
            .enumerate()
        {
            let v = f64::from(t.at(i, j) - c);
            *s += v;
            *q += v * v;
        }
    }
}

/// The part of a [`GramAccumulator`]'s state that is not in its buffers: with the storage
/// and workspace it left behind, [`GramAccumulator::resume`] rebuilds the same accumulator.
///
/// This lets a caller that cannot keep a Rust value between calls (a C API over buffers it
/// owns) hold the accumulator as plain memory plus these three numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GramState {
    /// Samples folded into the f64 totals.
    pub folded: u64,
    /// Samples in the current f32 block of the workspace, not yet folded (below
    /// [`GramParams::block_samples`]).
    pub pending: usize,
    /// Whether the centring shifts in the workspace are set.
    pub shift_set: bool,
}

impl GramState {
    /// A state from its parts (as read from [`GramAccumulator::state`] earlier).
    pub const fn new(folded: u64, pending: usize, shift_set: bool) -> Self {
        Self {
            folded,
            pending,
            shift_set,
        }
    }
}

/// Streaming accumulator of `sum x x^T` (lower triangle), `sum x t^T`, `sum x`, `sum t`,
/// `sum t^2` and the count, over caller-owned storage `S` (f64) and workspace `W` (f32).
pub struct GramAccumulator<S, W> {
    dim: usize,
    targets: usize,
    params: GramParams,
    storage: S,
    workspace: W,
    slay: StorageLayout,
    wlay: WorkspaceLayout,
    /// Samples folded into the f64 totals.
    folded: u64,
    /// Samples in the current f32 block, not yet folded.
    pending: usize,
    shift_set: bool,
}

impl<S, W> fmt::Debug for GramAccumulator<S, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GramAccumulator")
            .field("dim", &self.dim)
            .field("targets", &self.targets)
            .field("count", &(self.folded + self.pending as u64))
            .finish()
    }
}

#[cfg(feature = "alloc")]
impl GramAccumulator<alloc::vec::Vec<f64>, alloc::vec::Vec<f32>> {
    /// An accumulator that owns heap buffers of the right sizes.
    pub fn new_owned(dim: usize, targets: usize, params: GramParams) -> Self {
        let storage = alloc::vec![0.0; Self::storage_len_for(dim, targets, params)];
        let workspace = alloc::vec![0.0; Self::workspace_len(dim, targets, params)];
        // The vectors are zeroed already (and not yet touched: calloc'd pages).
        match Self::over_zeroed(dim, targets, params, storage, workspace) {
            Ok(acc) => acc,
            // The buffers were sized by the queries above.
            Err(_) => unreachable!("buffers sized by storage_len / workspace_len"),
        }
    }
}

impl<S, W> GramAccumulator<S, W>
where
    S: AsRef<[f64]> + AsMut<[f64]>,
    W: AsRef<[f32]> + AsMut<[f32]>,
{
    /// f64 elements of storage for `dim` features and `targets` target columns.
    pub fn storage_len(dim: usize, targets: usize) -> usize {
        Self::storage_len_for(dim, targets, GramParams::default())
    }

    /// f64 elements of storage for `dim` features, `targets` target columns and `params`
    /// (smaller when [`GramParams::gram`] is off).
    pub fn storage_len_for(dim: usize, targets: usize, params: GramParams) -> usize {
        StorageLayout::new(dim, targets, params.gram).len
    }

    /// f32 elements of workspace for `dim` features, `targets` target columns and `params`.
    pub fn workspace_len(dim: usize, targets: usize, params: GramParams) -> usize {
        WorkspaceLayout::new(dim, targets, params.block_samples.max(1), params.gram).len
    }

    /// An empty accumulator over caller buffers (their contents are overwritten).
    pub fn new(
        dim: usize,
        targets: usize,
        params: GramParams,
        storage: S,
        workspace: W,
    ) -> Result<Self, GramError> {
        let mut acc = Self::over_zeroed(dim, targets, params, storage, workspace)?;
        acc.storage.as_mut()[..acc.slay.len].fill(0.0);
        acc.workspace.as_mut()[..acc.wlay.len].fill(0.0);
        Ok(acc)
    }

    /// [`Self::new`] over buffers the caller guarantees hold zeros (not checked; other
    /// contents are a wrong state, not unsafety): freshly allocated zeroed memory is then not
    /// written, so its pages are first touched by the thread that uses them.
    fn over_zeroed(
        dim: usize,
        targets: usize,
        params: GramParams,
        storage: S,
        workspace: W,
    ) -> Result<Self, GramError> {
        let params = GramParams {
            block_samples: params.block_samples.max(1),
            ..params
        };
        let slay = StorageLayout::new(dim, targets, params.gram);
        let wlay = WorkspaceLayout::new(dim, targets, params.block_samples, params.gram);
        let (slen, wlen) = (storage.as_ref().len(), workspace.as_ref().len());
        if slen < slay.len {
            return Err(GramError::ShapeMismatch {
                what: "storage length",
                expected: slay.len,
                found: slen,
            });
        }
        if wlen < wlay.len {
            return Err(GramError::ShapeMismatch {
                what: "workspace length",
                expected: wlay.len,
                found: wlen,
            });
        }
        Ok(Self {
            dim,
            targets,
            params,
            storage,
            workspace,
            slay,
            wlay,
            folded: 0,
            pending: 0,
            shift_set: false,
        })
    }

    /// The counters that, with the buffers, make up the accumulator (see [`Self::resume`]).
    pub fn state(&self) -> GramState {
        GramState {
            folded: self.folded,
            pending: self.pending,
            shift_set: self.shift_set,
        }
    }

    /// Rebuilds an accumulator over buffers that an earlier one with the same `dim`, `targets`
    /// and `params` left behind, with the [`state`](Self::state) it reported then. Unlike
    /// [`Self::new`] the buffers are not cleared.
    ///
    /// The buffers are not checked beyond their lengths: if they were changed in between, the
    /// sums are wrong but nothing else goes wrong. States that no accumulator can be in
    /// (pending samples without a shift, a full pending block) are rejected with
    /// [`GramError::InvalidState`].
    pub fn resume(
        dim: usize,
        targets: usize,
        params: GramParams,
        storage: S,
        workspace: W,
        state: GramState,
    ) -> Result<Self, GramError> {
        let params = GramParams {
            block_samples: params.block_samples.max(1),
            ..params
        };
        if state.pending >= params.block_samples {
            return Err(GramError::InvalidState {
                what: "pending samples fill a whole block",
            });
        }
        if (state.folded > 0 || state.pending > 0) && !state.shift_set {
            return Err(GramError::InvalidState {
                what: "samples counted but no shift set",
            });
        }
        let slay = StorageLayout::new(dim, targets, params.gram);
        let wlay = WorkspaceLayout::new(dim, targets, params.block_samples, params.gram);
        let (slen, wlen) = (storage.as_ref().len(), workspace.as_ref().len());
        if slen < slay.len {
            return Err(GramError::ShapeMismatch {
                what: "storage length",
                expected: slay.len,
                found: slen,
            });
        }
        if wlen < wlay.len {
            return Err(GramError::ShapeMismatch {
                what: "workspace length",
                expected: wlay.len,
                found: wlen,
            });
        }
        Ok(Self {
            dim,
            targets,
            params,
            storage,
            workspace,
            slay,
            wlay,
            folded: state.folded,
            pending: state.pending,
            shift_set: state.shift_set,
        })
    }

    /// Gives up the accumulator and returns its storage and workspace: with the
    /// [`state`](Self::state) read before, [`Self::resume`] rebuilds the same accumulator (how
    /// a caller that owns the buffers moves an accumulator through plain memory, for example to
    /// another process).
    pub fn into_buffers(self) -> (S, W) {
        (self.storage, self.workspace)
    }

    /// Forgets every sample (totals back to zero) and keeps the buffers and the shift, so one
    /// accumulator can serve many shards without reallocating.
    ///
    /// The Gram's strict upper triangle is left alone: nothing writes or reads it once the
    /// accumulator is built, so its pages are never touched again.
    pub fn reset(&mut self) {
        let (s, d) = (self.slay, self.dim);
        let store = self.storage.as_mut();
        if self.params.gram {
            for i in 0..d {
                store[s.gram + i * d..s.gram + i * d + i + 1].fill(0.0);
            }
        }
        store[s.cross..s.len].fill(0.0);
        self.folded = 0;
        self.pending = 0;
    }

    /// Number of features (columns of `X`).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of target columns (columns of `T`; 0 when only the Gram is accumulated).
    pub fn targets(&self) -> usize {
        self.targets
    }

    /// Samples accumulated so far.
    pub fn count(&self) -> u64 {
        self.folded + self.pending as u64
    }

    /// The parameters in use.
    pub fn params(&self) -> GramParams {
        self.params
    }

    /// Sets the centring shifts (`x_shift` of length `dim`, `t_shift` of length `targets`).
    /// Only allowed before the first sample. Accumulators that will be combined should share
    /// one shift, which makes the combination a plain sum.
    pub fn set_shift(&mut self, x_shift: &[f32], t_shift: &[f32]) -> Result<(), GramError> {
        if self.count() > 0 {
            return Err(GramError::ShiftAfterData);
        }
        self.check_len("x shift length", self.dim, x_shift.len())?;
        self.check_len("t shift length", self.targets, t_shift.len())?;
        if let Some(column) = x_shift.iter().position(|v| !v.is_finite()) {
            return Err(GramError::NonFinite {
                operand: Operand::Samples,
                sample: 0,
                column,
            });
        }
        if let Some(column) = t_shift.iter().position(|v| !v.is_finite()) {
            return Err(GramError::NonFinite {
                operand: Operand::Targets,
                sample: 0,
                column,
            });
        }
        let w = self.wlay;
        let ws = self.workspace.as_mut();
        ws[w.shift_x..w.shift_x + self.dim].copy_from_slice(x_shift);
        ws[w.shift_t..w.shift_t + self.targets].copy_from_slice(t_shift);
        self.shift_set = true;
        Ok(())
    }

    /// The shift of the features (zeros until set or chosen by the first push).
    pub fn x_shift(&self) -> &[f32] {
        &self.workspace.as_ref()[self.wlay.shift_x..self.wlay.shift_x + self.dim]
    }

    /// The shift of the targets.
    pub fn t_shift(&self) -> &[f32] {
        &self.workspace.as_ref()[self.wlay.shift_t..self.wlay.shift_t + self.targets]
    }

    fn check_len(
        &self,
        what: &'static str,
        expected: usize,
        found: usize,
    ) -> Result<(), GramError> {
        if expected != found {
            return Err(GramError::ShapeMismatch {
                what,
                expected,
                found,
            });
        }
        Ok(())
    }

    /// Adds a batch: the rows of `x` (`n x dim`) and, when the accumulator has targets, the
    /// matching rows of `t` (`n x targets`). The whole batch is checked for shape and
    /// non-finite values before anything is counted.
    pub fn push(
        &mut self,
        x: MatRef<'_, f32>,
        t: Option<MatRef<'_, f32>>,
    ) -> Result<(), GramError> {
        self.check_len("columns of X", self.dim, x.cols())?;
        let n = x.rows();
        match t {
            Some(t) => {
                self.check_len("columns of T", self.targets, t.cols())?;
                self.check_len("rows of T (must equal rows of X)", n, t.rows())?;
            }
            None => self.check_len("columns of T (no T given)", self.targets, 0)?,
        }
        let first = self.count();
        self.check_values(x, Operand::Samples, first)?;
        if let Some(t) = t {
            self.check_values(t, Operand::Targets, first)?;
        }
        if n == 0 {
            return Ok(());
        }
        if !self.shift_set {
            self.choose_shift(x, t, x.rows().min(self.params.block_samples));
        }
        let mut start = 0;
        while start < n {
            let take = (n - start).min(self.params.block_samples - self.pending);
            let xb = x.submatrix(start, 0, take, self.dim).expect("in range");
            let tb = t.map(|t| t.submatrix(start, 0, take, self.targets).expect("in range"));
            self.push_block(xb, tb);
            start += take;
            if self.pending == self.params.block_samples {
                self.flush();
            }
        }
        Ok(())
    }

    /// Sets the shifts to the means (rounded to f32) of the rows of `x` and `t`, as the first
    /// push would choose them from its first block. Only allowed before the first sample.
    pub fn set_shift_to_mean(
        &mut self,
        x: MatRef<'_, f32>,
        t: Option<MatRef<'_, f32>>,
    ) -> Result<(), GramError> {
        if self.count() > 0 {
            return Err(GramError::ShiftAfterData);
        }
        self.check_len("columns of X", self.dim, x.cols())?;
        if let Some(t) = t {
            self.check_len("columns of T", self.targets, t.cols())?;
            self.check_len("rows of T (must equal rows of X)", x.rows(), t.rows())?;
        }
        self.check_values(x, Operand::Samples, 0)?;
        if let Some(t) = t {
            self.check_values(t, Operand::Targets, 0)?;
        }
        if x.rows() > 0 {
            self.choose_shift(x, t, x.rows());
        }
        Ok(())
    }

    /// The largest magnitude accepted: `(2 v)^2`, summed over a block, must stay below
    /// `f32::MAX` (centred values are at most twice the largest magnitude).
    pub fn value_limit(&self) -> f32 {
        libm::sqrtf(f32::MAX / self.params.block_samples as f32) / 2.0
    }

    /// Rejects non-finite values and values beyond [`Self::value_limit`], naming the first one.
    fn check_values(
        &self,
        m: MatRef<'_, f32>,
        operand: Operand,
        first: u64,
    ) -> Result<(), GramError> {
        let limit = self.value_limit();
        match first_outside(m, limit) {
            None => Ok(()),
            Some((r, column)) => {
                let sample = first + r as u64;
                Err(conv::bad_value(
                    m.at(r, column),
                    operand,
                    sample,
                    column,
                    limit,
                ))
            }
        }
    }

    /// Centres on the mean of the first `rows` rows, rounded to f32 ([`column_means`]).
    fn choose_shift(&mut self, x: MatRef<'_, f32>, t: Option<MatRef<'_, f32>>, rows: usize) {
        let w = self.wlay;
        let ws = self.workspace.as_mut();
        column_means(x, rows, &mut ws[w.shift_x..][..self.dim]);
        if let Some(t) = t {
            column_means(t, rows, &mut ws[w.shift_t..][..self.targets]);
        }
        self.shift_set = true;
    }

    /// Multiplies one run of samples that fits in the current block.
    fn push_block(&mut self, x: MatRef<'_, f32>, t: Option<MatRef<'_, f32>>) {
        let (d, nt) = (self.dim, self.targets);
        let w = self.wlay;
        let s = self.slay;
        let ws = self.workspace.as_mut();
        let (products, rest) = ws.split_at_mut(w.sum_x);
        let (sum_x, rest) = rest.split_at_mut(w.shift_x - w.sum_x);
        let (shifts, pack) = rest.split_at_mut(w.pack - w.shift_x);
        let (sx, st) = shifts.split_at(d);
        let (g32, r32) = products.split_at_mut(if self.params.gram { tiled_len(d, d) } else { 0 });
        if self.pending == 0 {
            if self.params.gram {
                zero_lower_tiles(g32, d);
            }
            r32.fill(0.0);
            sum_x.fill(0.0);
        }
        let row_strips = tiled_row_strips(d);
        if self.params.gram {
            let g = Dest::Tiled {
                data: g32,
                row_strips,
            };
            syrk::syrk_lower_shifted(x, sx, g, pack);
        }
        let (sum_x, sum_xx) = sum_x.split_at_mut(d);
        crate::simd::vectorised(
            #[inline(always)]
            || add_centred_sums_f32(x, sx, sum_x, sum_xx),
        );
        if let Some(t) = t {
            let r = Dest::Tiled {
                data: r32,
                row_strips,
            };
            gemm::gemm_shifted(
                1.0,
                x.transpose(),
                t,
                r,
                crate::linalg::blocked::Shifts {
                    a_rows: Some(sx),
                    b_cols: Some(st),
                },
                pack,
            );
            // Target sums and squares directly in f64.
            let store = self.storage.as_mut();
            let (sum_t, sum_tt) = store[s.sum_t..s.sum_tt + nt].split_at_mut(nt);
            crate::simd::vectorised(
                #[inline(always)]
                || add_centred_sums_f64(t, st, sum_t, sum_tt),
            );
        }
        self.pending += x.rows();
    }

    /// Folds the pending f32 block into the f64 totals. Reading methods call it; pushing calls
    /// it whenever a block fills.
    pub fn flush(&mut self) {
        if self.pending == 0 {
            return;
        }
        let (d, nt) = (self.dim, self.targets);
        let w = self.wlay;
        let s = self.slay;
        let ws = self.workspace.as_ref();
        let store = self.storage.as_mut();
        let row_strips = tiled_row_strips(d);
        let gram = self.params.gram;
        crate::simd::vectorised(
            #[inline(always)]
            || {
                for i in 0..d {
                    if gram {
                        let row = &mut store[s.gram + i * d..s.gram + i * d + i + 1];
                        add_tiled_row_f64(&ws[w.gram..w.cross], i, row_strips, row);
                    }
                    let row = &mut store[s.cross + i * nt..s.cross + (i + 1) * nt];
                    add_tiled_row_f64(&ws[w.cross..w.sum_x], i, row_strips, row);
                }
                for j in 0..d {
                    store[s.sum_x + j] += f64::from(ws[w.sum_x + j]);
                    store[s.sum_xx + j] += f64::from(ws[w.sum_x + d + j]);
                }
            },
        );
        self.folded += self.pending as u64;
        self.pending = 0;
    }

    /// Adds another accumulator's samples to this one (the other is flushed, not changed
    /// otherwise). If this one is empty and has no shift yet it adopts the other's shift;
    /// if the shifts differ, the other's sums are moved to this shift in f64 first.
    pub fn combine<S2, W2>(&mut self, other: &mut GramAccumulator<S2, W2>) -> Result<(), GramError>
    where
        S2: AsRef<[f64]> + AsMut<[f64]>,
        W2: AsRef<[f32]> + AsMut<[f32]>,
    {
        self.check_len("dim of the other accumulator", self.dim, other.dim)?;
        self.check_len(
            "targets of the other accumulator",
            self.targets,
            other.targets,
        )?;
        self.flush();
        other.flush();
        if other.folded == 0 {
            return Ok(());
        }
        if !self.shift_set && self.count() == 0 {
            let (xs, ts) = (other.x_shift(), other.t_shift());
            let w = self.wlay;
            let ws = self.workspace.as_mut();
            ws[w.shift_x..w.shift_x + self.dim].copy_from_slice(xs);
            ws[w.shift_t..w.shift_t + self.targets].copy_from_slice(ts);
            self.shift_set = true;
        }
        let (d, nt) = (self.dim, self.targets);
        let n = other.folded as f64;
        if self.x_shift() == other.x_shift() && self.t_shift() == other.t_shift() {
            // Same centring: the totals simply add, the Gram's lower triangle only (its strict
            // upper triangle is never written: half the memory traffic of a whole-buffer sum).
            let s = self.slay;
            let o = other.storage.as_ref();
            let store = self.storage.as_mut();
            let add = |a: &mut [f64], b: &[f64]| a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            if self.params.gram {
                for i in 0..d {
                    let row = s.gram + i * d..s.gram + i * d + i + 1;
                    add(&mut store[row.clone()], &o[row]);
                }
            }
            add(&mut store[s.cross..s.len], &o[s.cross..s.len]);
            self.folded += other.folded;
            return Ok(());
        }
        // delta = other's shift - this shift: (x - s_self) = (x - s_other) + delta.
        let s = self.slay;
        let o = other.storage.as_ref();
        let (oxs, ots) = (other.x_shift(), other.t_shift());
        let w = self.wlay;
        let ws = self.workspace.as_ref();
        let dx = |j: usize| f64::from(oxs[j]) - f64::from(ws[w.shift_x + j]);
        let dt = |j: usize| f64::from(ots[j]) - f64::from(ws[w.shift_t + j]);
        let store = self.storage.as_mut();
        let with_gram = self.params.gram;
        for i in 0..d {
            if with_gram {
                for j in 0..=i {
                    store[s.gram + i * d + j] += o[s.gram + i * d + j]
                        + o[s.sum_x + i] * dx(j)
                        + dx(i) * o[s.sum_x + j]
                        + n * dx(i) * dx(j);
                }
            }
            for j in 0..nt {
                store[s.cross + i * nt + j] += o[s.cross + i * nt + j]
                    + o[s.sum_x + i] * dt(j)
                    + dx(i) * o[s.sum_t + j]
                    + n * dx(i) * dt(j);
            }
        }
        for j in 0..d {
            store[s.sum_xx + j] +=
                o[s.sum_xx + j] + 2.0 * dx(j) * o[s.sum_x + j] + n * dx(j) * dx(j);
            store[s.sum_x + j] += o[s.sum_x + j] + n * dx(j);
        }
        for j in 0..nt {
            store[s.sum_tt + j] +=
                o[s.sum_tt + j] + 2.0 * dt(j) * o[s.sum_t + j] + n * dt(j) * dt(j);
            store[s.sum_t + j] += o[s.sum_t + j] + n * dt(j);
        }
        self.folded += other.folded;
        Ok(())
    }

    /// Writes the uncentred Gram `sum x x^T` into the lower triangle of `out` (`dim x dim`;
    /// the strict upper triangle is not touched).
    pub fn write_gram(&mut self, mut out: MatMut<'_, f64>) -> Result<(), GramError> {
        if !self.params.gram {
            return Err(GramError::GramNotAccumulated);
        }
        self.check_len("rows of the Gram output", self.dim, out.rows())?;
        self.check_len("columns of the Gram output", self.dim, out.cols())?;
        self.flush();
        let (d, n) = (self.dim, self.folded as f64);
        let st = self.storage.as_ref();
        let sx = self.x_shift();
        for i in 0..d {
            for j in 0..=i {
                let (si, sj) = (f64::from(sx[i]), f64::from(sx[j]));
                *out.at_mut(i, j) = st[self.slay.gram + i * d + j]
                    + si * st[self.slay.sum_x + j]
                    + st[self.slay.sum_x + i] * sj
                    + n * si * sj;
            }
        }
        Ok(())
    }

    /// Writes the uncentred cross moment `sum x t^T` into `out` (`dim x targets`).
    pub fn write_cross(&mut self, mut out: MatMut<'_, f64>) -> Result<(), GramError> {
        self.check_len("rows of the cross output", self.dim, out.rows())?;
        self.check_len("columns of the cross output", self.targets, out.cols())?;
        self.flush();
        let (d, nt, n) = (self.dim, self.targets, self.folded as f64);
        let st = self.storage.as_ref();
        let (sx, stt) = (self.x_shift(), self.t_shift());
        for i in 0..d {
            for j in 0..nt {
                let (si, uj) = (f64::from(sx[i]), f64::from(stt[j]));
                *out.at_mut(i, j) = st[self.slay.cross + i * nt + j]
                    + si * st[self.slay.sum_t + j]
                    + st[self.slay.sum_x + i] * uj
                    + n * si * uj;
            }
        }
        Ok(())
    }

    /// Writes the population covariance `sum (x - mean)(x - mean)^T / n` into the lower
    /// triangle of `out`, straight from the centred sums (no cancellation). Zero when empty.
    pub fn write_covariance(&mut self, mut out: MatMut<'_, f64>) -> Result<(), GramError> {
        if !self.params.gram {
            return Err(GramError::GramNotAccumulated);
        }
        self.check_len("rows of the covariance output", self.dim, out.rows())?;
        self.check_len("columns of the covariance output", self.dim, out.cols())?;
        self.flush();
        let (d, n) = (self.dim, self.folded as f64);
        let st = self.storage.as_ref();
        for i in 0..d {
            for j in 0..=i {
                *out.at_mut(i, j) = if n == 0.0 {
                    0.0
                } else {
                    let mi = st[self.slay.sum_x + i] / n;
                    let mj = st[self.slay.sum_x + j] / n;
                    st[self.slay.gram + i * d + j] / n - mi * mj
                };
            }
        }
        Ok(())
    }

    /// Writes the centred cross moment `sum (x - mean_x)(t - mean_t)^T` (`dim x targets`) from
    /// the shifted sums, without the cancellation of the uncentred form. Zero when empty.
    pub fn write_centred_cross(&mut self, mut out: MatMut<'_, f64>) -> Result<(), GramError> {
        self.check_len("rows of the cross output", self.dim, out.rows())?;
        self.check_len("columns of the cross output", self.targets, out.cols())?;
        self.flush();
        let (d, nt, n) = (self.dim, self.targets, self.folded as f64);
        let st = self.storage.as_ref();
        for i in 0..d {
            for j in 0..nt {
                *out.at_mut(i, j) = if n == 0.0 {
                    0.0
                } else {
                    st[self.slay.cross + i * nt + j]
                        - st[self.slay.sum_x + i] * st[self.slay.sum_t + j] / n
                };
            }
        }
        Ok(())
    }

    /// Writes the centred sums of squares `sum (x_j - mean_j)^2` per feature (length `dim`).
    pub fn write_centred_squares_x(&mut self, out: &mut [f64]) -> Result<(), GramError> {
        self.check_len("length of the x squares output", self.dim, out.len())?;
        self.flush();
        let n = self.folded as f64;
        let st = self.storage.as_ref();
        for (j, o) in out.iter_mut().enumerate() {
            let s = st[self.slay.sum_x + j];
            *o = if n == 0.0 {
                0.0
            } else {
                (st[self.slay.sum_xx + j] - s * s / n).max(0.0)
            };
        }
        Ok(())
    }

    /// Writes the centred sums of squares `sum (t_j - mean_j)^2` per target (length `targets`).
    pub fn write_centred_squares_t(&mut self, out: &mut [f64]) -> Result<(), GramError> {
        self.check_len("length of the t squares output", self.targets, out.len())?;
        self.flush();
        let n = self.folded as f64;
        let st = self.storage.as_ref();
        for (j, o) in out.iter_mut().enumerate() {
            let s = st[self.slay.sum_t + j];
            *o = if n == 0.0 {
                0.0
            } else {
                (st[self.slay.sum_tt + j] - s * s / n).max(0.0)
            };
        }
        Ok(())
    }

    /// Writes `sum x` (length `dim`) into `out`.
    pub fn write_sum_x(&mut self, out: &mut [f64]) -> Result<(), GramError> {
        self.check_len("length of the sum-x output", self.dim, out.len())?;
        self.flush();
        let n = self.folded as f64;
        let st = self.storage.as_ref();
        let sx = self.x_shift();
        for (j, o) in out.iter_mut().enumerate() {
            *o = st[self.slay.sum_x + j] + n * f64::from(sx[j]);
        }
        Ok(())
    }

    /// Writes `sum t` (length `targets`) into `out`.
    pub fn write_sum_t(&mut self, out: &mut [f64]) -> Result<(), GramError> {
        self.check_len("length of the sum-t output", self.targets, out.len())?;
        self.flush();
        let n = self.folded as f64;
        let st = self.storage.as_ref();
        let su = self.t_shift();
        for (j, o) in out.iter_mut().enumerate() {
            *o = st[self.slay.sum_t + j] + n * f64::from(su[j]);
        }
        Ok(())
    }

    /// Writes `sum t^2` per target column (length `targets`) into `out`.
    pub fn write_sum_tt(&mut self, out: &mut [f64]) -> Result<(), GramError> {
        self.check_len("length of the sum-t^2 output", self.targets, out.len())?;
        self.flush();
        let n = self.folded as f64;
        let st = self.storage.as_ref();
        let su = self.t_shift();
        for (j, o) in out.iter_mut().enumerate() {
            let u = f64::from(su[j]);
            *o = st[self.slay.sum_tt + j] + 2.0 * u * st[self.slay.sum_t + j] + n * u * u;
        }
        Ok(())
    }
}

/// The means of the first `rows` rows of each column of `m`, rounded to f32, into `means`
/// (one per column): the centring shifts of [`GramAccumulator`] and the target shifts of
/// [`conv::ConvGram`]. Each column is summed in f64 in row order, from zero; `m` is read row by
/// row in memory order (a column walk adds the same values in the same order), 64 columns at a
/// time.
fn column_means(m: MatRef<'_, f32>, rows: usize, means: &mut [f32]) {
    let mut sums = [0.0f64; 64];
    for j0 in (0..means.len()).step_by(sums.len()) {
        let cols = (means.len() - j0).min(sums.len());
        let sums = &mut sums[..cols];
        sums.fill(0.0);
        for r in 0..rows {
            match m.row(r) {
                Some(row) => {
                    for (s, &v) in sums.iter_mut().zip(&row[j0..j0 + cols]) {
                        *s += f64::from(v);
                    }
                }
                None => {
                    for (j, s) in sums.iter_mut().enumerate() {
                        *s += f64::from(m.at(r, j0 + j));
                    }
                }
            }
        }
        for (mean, s) in means[j0..j0 + cols].iter_mut().zip(sums.iter()) {
            *mean = (s / rows as f64) as f32;
        }
    }
}
