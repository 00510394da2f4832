//! The status every function returns, and the mapping of the core's errors onto it.

use pleas_core::assign::{AuctionError, SelectError};
use pleas_core::forward::compact::CompactError;
use pleas_core::gram::GramError;
use pleas_core::linalg::ViewError;
use pleas_core::lstsq::LstsqError;
use pleas_core::lstsq::dual::DualError;
use pleas_core::merge::driver::DriverError;
use pleas_core::merge::mlp::MlpMergeError;

/// What a call of the C API did. `PLEAS_SUCCESS` is 0, errors are negative; the first five
/// values are those of CMSIS-DSP's `arm_status`. Its type is `int32_t`, whatever size the
/// compiler gives enums.
#[repr(i32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pleas_status {
    /// The call succeeded.
    PLEAS_SUCCESS = 0,
    /// A required pointer is NULL or misaligned, an output or scratch buffer overlaps another
    /// buffer of the call, a parameter is out of its documented range, or an instance was not
    /// initialised by its `*_init` function.
    PLEAS_ERROR_ARGUMENT = -1,
    /// A length or dimension is invalid: 0 where at least 1 is needed, or so large that a
    /// buffer of that many elements cannot exist in memory.
    PLEAS_ERROR_LENGTH = -2,
    /// Operand sizes disagree, e.g. a score matrix with more rows than columns.
    PLEAS_ERROR_SIZE_MISMATCH = -3,
    /// An input holds a NaN or an infinity.
    PLEAS_ERROR_NAN_INF = -4,
    /// The system is not positive definite even with the largest ridge tried.
    PLEAS_ERROR_SINGULAR = -5,
    /// A scratch or state buffer is shorter than its `*_size` query asks for (or, for the
    /// MLP merge, a buffer shorter than its plan asks for).
    PLEAS_ERROR_SCRATCH = -6,
    /// A finite input is too large to be processed without overflow (a Gram sample beyond
    /// the accumulator's value limit).
    PLEAS_ERROR_OUT_OF_RANGE = -7,
    /// The inputs are valid but the result is not representable (a ridge solve whose weights
    /// overflow, an MLP merge whose activations or weights do).
    PLEAS_ERROR_OVERFLOW = -8,
    /// An index is out of range, or repeated in a list that must not repeat it.
    PLEAS_ERROR_INDEX = -9,
    /// The call is not allowed in the instance's current state.
    PLEAS_ERROR_STATE = -10,
    /// The core reported an error this version of the C API does not know (a bug: please
    /// report it).
    PLEAS_ERROR_INTERNAL = -11,
}

use pleas_status::*;

impl pleas_status {
    /// The name of the status, as spelled in the header.
    pub const fn name(self) -> &'static core::ffi::CStr {
        match self {
            PLEAS_SUCCESS => c"PLEAS_SUCCESS",
            PLEAS_ERROR_ARGUMENT => c"PLEAS_ERROR_ARGUMENT",
            PLEAS_ERROR_LENGTH => c"PLEAS_ERROR_LENGTH",
            PLEAS_ERROR_SIZE_MISMATCH => c"PLEAS_ERROR_SIZE_MISMATCH",
            PLEAS_ERROR_NAN_INF => c"PLEAS_ERROR_NAN_INF",
            PLEAS_ERROR_SINGULAR => c"PLEAS_ERROR_SINGULAR",
            PLEAS_ERROR_SCRATCH => c"PLEAS_ERROR_SCRATCH",
            PLEAS_ERROR_OUT_OF_RANGE => c"PLEAS_ERROR_OUT_OF_RANGE",
            PLEAS_ERROR_OVERFLOW => c"PLEAS_ERROR_OVERFLOW",
            PLEAS_ERROR_INDEX => c"PLEAS_ERROR_INDEX",
            PLEAS_ERROR_STATE => c"PLEAS_ERROR_STATE",
            PLEAS_ERROR_INTERNAL => c"PLEAS_ERROR_INTERNAL",
        }
    }
}

/// Every status, in the order of their values from 0 down.
pub(crate) const ALL: [pleas_status; 12] = [
    PLEAS_SUCCESS,
    PLEAS_ERROR_ARGUMENT,
    PLEAS_ERROR_LENGTH,
    PLEAS_ERROR_SIZE_MISMATCH,
    PLEAS_ERROR_NAN_INF,
    PLEAS_ERROR_SINGULAR,
    PLEAS_ERROR_SCRATCH,
    PLEAS_ERROR_OUT_OF_RANGE,
    PLEAS_ERROR_OVERFLOW,
    PLEAS_ERROR_INDEX,
    PLEAS_ERROR_STATE,
    PLEAS_ERROR_INTERNAL,
];

/// The name of a status value as a NUL-terminated string (`"PLEAS_ERROR_NAN_INF"`), or
/// `"PLEAS_STATUS_UNKNOWN"` for a value that is not a status. Never NULL; the string is
/// static.
///
/// The argument is a plain `int32_t` so that any value can be passed safely.
#[unsafe(no_mangle)]
pub extern "C" fn pleas_status_name(status: i32) -> *const core::ffi::c_char {
    ALL.iter()
        .find(|s| **s as i32 == status)
        .map_or(c"PLEAS_STATUS_UNKNOWN", |s| s.name())
        .as_ptr()
}

impl From<GramError> for pleas_status {
    fn from(e: GramError) -> Self {
        match e {
            GramError::ShapeMismatch { .. } => PLEAS_ERROR_SIZE_MISMATCH,
            GramError::NonFinite { .. } => PLEAS_ERROR_NAN_INF,
            GramError::OutOfRange { .. } => PLEAS_ERROR_OUT_OF_RANGE,
            GramError::ShiftAfterData
            | GramError::GramNotAccumulated
            | GramError::InvalidState { .. } => PLEAS_ERROR_STATE,
            _ => PLEAS_ERROR_INTERNAL,
        }
    }
}

impl From<AuctionError> for pleas_status {
    fn from(e: AuctionError) -> Self {
        match e {
            AuctionError::NonFinite { .. } | AuctionError::NonFinitePrice { .. } => {
                PLEAS_ERROR_NAN_INF
            }
            AuctionError::TooManyRows { .. }
            | AuctionError::PermLength { .. }
            | AuctionError::PriceLength { .. } => PLEAS_ERROR_SIZE_MISMATCH,
            AuctionError::StridedColumns { .. } | AuctionError::InvalidParam { .. } => {
                PLEAS_ERROR_ARGUMENT
            }
            AuctionError::ScratchTooSmall { .. } => PLEAS_ERROR_SCRATCH,
            _ => PLEAS_ERROR_INTERNAL,
        }
    }
}

impl From<SelectError> for pleas_status {
    fn from(e: SelectError) -> Self {
        match e {
            SelectError::TooMany { .. } => PLEAS_ERROR_LENGTH,
            SelectError::PermLength { .. } => PLEAS_ERROR_SIZE_MISMATCH,
            SelectError::ColumnOutOfRange { .. } => PLEAS_ERROR_INDEX,
            SelectError::NanScore { .. } => PLEAS_ERROR_NAN_INF,
            SelectError::OutputTooSmall { .. } => PLEAS_ERROR_SCRATCH,
            _ => PLEAS_ERROR_INTERNAL,
        }
    }
}

impl From<LstsqError> for pleas_status {
    fn from(e: LstsqError) -> Self {
        match e {
            LstsqError::InvalidRidge { .. } => PLEAS_ERROR_ARGUMENT,
            LstsqError::ShapeMismatch { .. } => PLEAS_ERROR_SIZE_MISMATCH,
            LstsqError::IndexOutOfRange { .. } | LstsqError::DuplicateIndex { .. } => {
                PLEAS_ERROR_INDEX
            }
            LstsqError::ScratchTooSmall { .. } => PLEAS_ERROR_SCRATCH,
            LstsqError::NonFinite { .. } => PLEAS_ERROR_NAN_INF,
            LstsqError::NotPositiveDefinite { .. } => PLEAS_ERROR_SINGULAR,
            LstsqError::SolutionOverflow { .. } => PLEAS_ERROR_OVERFLOW,
            _ => PLEAS_ERROR_INTERNAL,
        }
    }
}

/// The MLP merge's errors. The C API hands the core slices whose lengths it computed from
/// the dims, so shape errors other than a bias given or missing only happen through a bug.
impl From<MlpMergeError> for pleas_status {
    fn from(e: MlpMergeError) -> Self {
        match e {
            MlpMergeError::TooManyLayers { .. }
            | MlpMergeError::EmptyLayer { .. }
            | MlpMergeError::NoSamples
            | MlpMergeError::SizeOverflow => PLEAS_ERROR_LENGTH,
            MlpMergeError::ShapeMismatch { .. } | MlpMergeError::BiasMismatch { .. } => {
                PLEAS_ERROR_SIZE_MISMATCH
            }
            MlpMergeError::BudgetOutOfRange { .. } | MlpMergeError::InvalidRidge { .. } => {
                PLEAS_ERROR_ARGUMENT
            }
            MlpMergeError::ScratchTooSmall { .. } => PLEAS_ERROR_SCRATCH,
            MlpMergeError::NonFinite { .. } => PLEAS_ERROR_NAN_INF,
            MlpMergeError::Driver(e) => e.into(),
            _ => PLEAS_ERROR_INTERNAL,
        }
    }
}

/// The merge driver's errors (the MLP and CNN merges).
impl From<DriverError> for pleas_status {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::NonFiniteSimilarity { .. } | DriverError::NonFiniteResult { .. } => {
                PLEAS_ERROR_OVERFLOW
            }
            DriverError::Assignment { error, .. } => error.into(),
            DriverError::Selection { error, .. } => error.into(),
            DriverError::Singular { .. } => PLEAS_ERROR_SINGULAR,
            DriverError::DualSolve { error, .. } => match error {
                // The kernel and right-hand sides are the merged network's own activations,
                // checked finite on input: non-finite values there are an overflow.
                DualError::NonFinite { .. } | DualError::SolutionOverflow { .. } => {
                    PLEAS_ERROR_OVERFLOW
                }
                DualError::NotPositiveDefinite { .. } => PLEAS_ERROR_SINGULAR,
                DualError::InvalidRidge { .. } => PLEAS_ERROR_ARGUMENT,
                DualError::ScratchTooSmall { .. } => PLEAS_ERROR_SCRATCH,
                DualError::ShapeMismatch { .. } => PLEAS_ERROR_SIZE_MISMATCH,
                _ => PLEAS_ERROR_INTERNAL,
            },
            DriverError::SizeOverflow => PLEAS_ERROR_LENGTH,
            _ => PLEAS_ERROR_INTERNAL,
        }
    }
}

/// Where the compact network's errors land among the statuses.
impl From<CompactError> for pleas_status {
    fn from(e: CompactError) -> Self {
        match e {
            CompactError::LayerCount { .. }
            | CompactError::EmptyInput
            | CompactError::Size { .. } => PLEAS_ERROR_LENGTH,
            CompactError::NodeOrder { .. } | CompactError::UnknownOutput { .. } => {
                PLEAS_ERROR_INDEX
            }
            CompactError::Window { .. } | CompactError::AddShapes { .. } => {
                PLEAS_ERROR_SIZE_MISMATCH
            }
            CompactError::Buffer {
                what: "scratch", ..
            } => PLEAS_ERROR_SCRATCH,
            CompactError::Buffer { .. } => PLEAS_ERROR_SIZE_MISMATCH,
            _ => PLEAS_ERROR_INTERNAL,
        }
    }
}

/// The C API builds its views over slices whose lengths it computed from the same
/// dimensions, so this only happens through a bug.
impl From<ViewError> for pleas_status {
    fn from(_: ViewError) -> Self {
        PLEAS_ERROR_INTERNAL
    }
}

/// Runs a body written with `?` and turns its result into a status.
pub(crate) fn run(body: impl FnOnce() -> Result<(), pleas_status>) -> pleas_status {
    match body() {
        Ok(()) => PLEAS_SUCCESS,
        Err(s) => s,
    }
}
