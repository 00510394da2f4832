//! Proptest strategies for matrices and strided views, and conversions to nalgebra.

use nalgebra::DMatrix;
use pleas_core::linalg::MatRef;
use proptest::prelude::*;

/// Dimensions that sit on SIMD and block edges (MR = 6 / 12, NR = 16 / 32, 8 / 16 lanes) plus
/// small ones; strategies for the shared `k` dimension go past `KC = 320` / `256` and
/// `MC = 120` too.
pub const EDGE_DIMS: &[usize] = &[1, 2, 7, 8, 9, 13, 15, 17, 31, 33, 63, 65, 129];

/// Under Miri (`scripts/miri.sh`, `MIRI_FULL=1`), which interprets about a million times
/// slower: edge dimensions up to one 16-wide tile and a lane past it.
pub const MIRI_EDGE_DIMS: &[usize] = &[1, 2, 7, 8, 9, 17];

/// A dimension: one of [`EDGE_DIMS`] or any value in `1..=max` (under Miri, one of
/// [`MIRI_EDGE_DIMS`] or up to 9).
pub fn dim(max: usize) -> impl Strategy<Value = usize> {
    if cfg!(miri) {
        let small = max.min(9);
        prop_oneof![proptest::sample::select(MIRI_EDGE_DIMS.to_vec()), 1..=small,]
    } else {
        prop_oneof![proptest::sample::select(EDGE_DIMS.to_vec()), 1..=max,]
    }
}

/// A dense matrix stored with (possibly) non-unit strides: the buffer and its layout.
#[derive(Debug, Clone)]
pub struct StridedMatrix {
    /// Backing buffer (elements outside the view hold NaN, so any stray read shows up).
    pub data: Vec<f32>,
    /// Rows of the view.
    pub rows: usize,
    /// Columns of the view.
    pub cols: usize,
    /// Row stride.
    pub row_stride: usize,
    /// Column stride.
    pub col_stride: usize,
}

impl StridedMatrix {
    /// The view.
    pub fn view(&self) -> MatRef<'_, f32> {
        MatRef::from_strided(
            &self.data,
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
        .expect("layout generated in bounds")
    }

    /// The view as an f64 nalgebra matrix.
    pub fn to_f64(&self) -> DMatrix<f64> {
        to_f64(self.view())
    }
}

/// An f32 view as an f64 nalgebra matrix.
pub fn to_f64(v: MatRef<'_, f32>) -> DMatrix<f64> {
    DMatrix::from_fn(v.rows(), v.cols(), |i, j| f64::from(v.at(i, j)))
}

/// A `rows x cols` matrix with values in `[-1, 1]`, laid out row-major or column-major with a
/// random padding between rows (or columns), so strides are often not the trivial ones.
pub fn strided_matrix(rows: usize, cols: usize) -> impl Strategy<Value = StridedMatrix> {
    (any::<bool>(), 0usize..4, any::<u64>()).prop_map(move |(col_major, pad, seed)| {
        let (row_stride, col_stride, len) = if col_major {
            let ld = rows + pad;
            (1, ld, ld * cols.max(1))
        } else {
            let ld = cols + pad;
            (ld, 1, ld * rows.max(1))
        };
        let mut data = vec![f32::NAN; len];
        let mut state = seed | 1;
        for i in 0..rows {
            for j in 0..cols {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                data[i * row_stride + j * col_stride] =
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            }
        }
        StridedMatrix {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    })
}

/// Deterministic uniform values in `[-1, 1)` from a seed (xorshift), for large test inputs.
pub fn uniform_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
