//! Errors of the assignment routines. Nothing is written to the outputs on error.

use core::fmt;

/// Why [`auction`](super::auction) rejected its input.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum AuctionError {
    /// A score is NaN or infinite; the first such position in row-major order.
    NonFinite {
        /// Row of the bad score.
        row: usize,
        /// Column of the bad score.
        col: usize,
        /// The bad value, widened to f64.
        value: f64,
    },
    /// More rows than columns: every row must get its own column.
    TooManyRows {
        /// Rows of the score matrix.
        rows: usize,
        /// Columns of the score matrix.
        cols: usize,
    },
    /// The output permutation's length differs from the number of rows.
    PermLength {
        /// Rows of the score matrix.
        rows: usize,
        /// Length of the output slice.
        len: usize,
    },
    /// The score view's columns are not contiguous (`col_stride != 1`); copy or transpose it.
    StridedColumns {
        /// Column stride of the view.
        col_stride: usize,
    },
    /// The caller's scratch is shorter than [`auction_scratch_len`](super::auction_scratch_len).
    ScratchTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        provided: usize,
    },
    /// The warm-start prices' length differs from the number of columns.
    PriceLength {
        /// Columns of the score matrix.
        cols: usize,
        /// Length of the price slice.
        len: usize,
    },
    /// A warm-start price is NaN or infinite.
    NonFinitePrice {
        /// Column of the bad price.
        col: usize,
        /// The bad value.
        value: f64,
    },
    /// A parameter is out of its documented range.
    InvalidParam {
        /// Name of the field of [`AuctionParams`](super::AuctionParams).
        name: &'static str,
        /// The rejected value.
        value: f64,
    },
}

impl fmt::Display for AuctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AuctionError::NonFinite { row, col, value } => {
                write!(f, "score at ({row}, {col}) is not finite: {value}")
            }
            AuctionError::TooManyRows { rows, cols } => write!(
                f,
                "cannot assign {rows} rows to {cols} columns: need rows <= columns"
            ),
            AuctionError::PermLength { rows, len } => write!(
                f,
                "output permutation has length {len}, the score matrix has {rows} rows"
            ),
            AuctionError::StridedColumns { col_stride } => write!(
                f,
                "score rows must be contiguous (column stride 1), got column stride {col_stride}"
            ),
            AuctionError::ScratchTooSmall { needed, provided } => write!(
                f,
                "scratch too small: {needed} elements needed, {provided} provided"
            ),
            AuctionError::PriceLength { cols, len } => write!(
                f,
                "warm-start prices have length {len}, the score matrix has {cols} columns"
            ),
            AuctionError::NonFinitePrice { col, value } => {
                write!(f, "warm-start price of column {col} is not finite: {value}")
            }
            AuctionError::InvalidParam { name, value } => {
                write!(f, "auction parameter `{name}` out of range: {value}")
            }
        }
    }
}

impl core::error::Error for AuctionError {}

/// Why [`select_top`](super::select_top) rejected its input.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SelectError {
    /// More pairs were asked for than there are rows.
    TooMany {
        /// Pairs asked for.
        k: usize,
        /// Rows available.
        rows: usize,
    },
    /// The assignment's length differs from the number of rows of the scores.
    PermLength {
        /// Rows of the score matrix.
        rows: usize,
        /// Length of the assignment.
        len: usize,
    },
    /// `perm[row]` is not a column of the score matrix.
    ColumnOutOfRange {
        /// The row whose column is out of range.
        row: usize,
        /// The column given for it.
        col: usize,
        /// Columns of the score matrix.
        cols: usize,
    },
    /// The score of a pair of the assignment is NaN (infinities are ordered and allowed).
    NanScore {
        /// Row of the pair.
        row: usize,
        /// Column of the pair.
        col: usize,
    },
    /// The output slice is shorter than the number of rows (it doubles as scratch).
    OutputTooSmall {
        /// Elements needed (the number of rows).
        needed: usize,
        /// Elements provided.
        provided: usize,
    },
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SelectError::TooMany { k, rows } => {
                write!(f, "cannot select {k} pairs out of {rows} rows")
            }
            SelectError::PermLength { rows, len } => write!(
                f,
                "assignment has length {len}, the score matrix has {rows} rows"
            ),
            SelectError::ColumnOutOfRange { row, col, cols } => write!(
                f,
                "assignment maps row {row} to column {col}, but there are only {cols} columns"
            ),
            SelectError::NanScore { row, col } => {
                write!(f, "score of the assigned pair ({row}, {col}) is NaN")
            }
            SelectError::OutputTooSmall { needed, provided } => write!(
                f,
                "output too small: {needed} elements needed, {provided} provided"
            ),
        }
    }
}

impl core::error::Error for SelectError {}
