//! f64 matrices stored inside larger buffers with non-trivial strides, for the Cholesky,
//! triangular-solve and ridge tests: row- or column-major (a transposed view), a gap between
//! consecutive elements, padding between rows and an offset into the buffer. Every element
//! outside the view holds NaN, so a stray read poisons the result and a stray write shows.

use nalgebra::DMatrix;
use pleas_core::linalg::{MatMut, MatRef};
use proptest::prelude::*;

/// How a matrix sits in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Column-major (`row_stride == step`): the transposed view of a row-major buffer.
    pub col_major: bool,
    /// Distance between consecutive elements of the contiguous direction (1 or 2).
    pub step: usize,
    /// Extra elements between consecutive rows (or columns, when column-major).
    pub pad: usize,
    /// Elements before the first one.
    pub offset: usize,
}

impl Layout {
    /// Plain contiguous row-major.
    pub const ROW_MAJOR: Layout = Layout {
        col_major: false,
        step: 1,
        pad: 0,
        offset: 0,
    };
}

/// Any layout: either orientation, unit or doubled element step, padding 0..3, offset 0..3.
pub fn layout() -> impl Strategy<Value = Layout> {
    (any::<bool>(), 1usize..=2, 0usize..3, 0usize..3).prop_map(|(col_major, step, pad, offset)| {
        Layout {
            col_major,
            step,
            pad,
            offset,
        }
    })
}

/// A matrix in a NaN-filled buffer with a [`Layout`].
#[derive(Debug, Clone)]
pub struct StridedF64 {
    /// The whole buffer.
    pub data: Vec<f64>,
    /// Where element `(0, 0)` is.
    pub offset: usize,
    /// Rows of the view.
    pub rows: usize,
    /// Columns of the view.
    pub cols: usize,
    /// Row stride.
    pub row_stride: usize,
    /// Column stride.
    pub col_stride: usize,
}

impl StridedF64 {
    /// A NaN-filled `rows x cols` matrix in `layout`.
    pub fn nan(rows: usize, cols: usize, layout: Layout) -> Self {
        let (inner, outer) = if layout.col_major {
            (rows, cols)
        } else {
            (cols, rows)
        };
        let lead = inner * layout.step + layout.pad;
        let (row_stride, col_stride) = if layout.col_major {
            (layout.step, lead)
        } else {
            (lead, layout.step)
        };
        let len = layout.offset + lead * outer.max(1) + layout.pad;
        Self {
            data: vec![f64::NAN; len],
            offset: layout.offset,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// `m` copied into `layout`.
    pub fn from_matrix(m: &DMatrix<f64>, layout: Layout) -> Self {
        let mut s = Self::nan(m.nrows(), m.ncols(), layout);
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                s.set(i, j, m[(i, j)]);
            }
        }
        s
    }

    /// The lower triangle (diagonal included) of the square `m` copied into `layout`; the
    /// strict upper triangle stays NaN.
    pub fn lower_from_matrix(m: &DMatrix<f64>, layout: Layout) -> Self {
        let mut s = Self::nan(m.nrows(), m.ncols(), layout);
        for i in 0..m.nrows() {
            for j in 0..=i.min(m.ncols().saturating_sub(1)) {
                s.set(i, j, m[(i, j)]);
            }
        }
        s
    }

    fn index(&self, i: usize, j: usize) -> usize {
        assert!(i < self.rows && j < self.cols);
        self.offset + i * self.row_stride + j * self.col_stride
    }

    /// Element `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[self.index(i, j)]
    }

    /// Sets element `(i, j)`.
    pub fn set(&mut self, i: usize, j: usize, v: f64) {
        let k = self.index(i, j);
        self.data[k] = v;
    }

    /// The read-only view.
    pub fn view(&self) -> MatRef<'_, f64> {
        MatRef::from_strided(
            &self.data[self.offset..],
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
        .expect("layout is in bounds")
    }

    /// The mutable view.
    pub fn view_mut(&mut self) -> MatMut<'_, f64> {
        MatMut::from_strided(
            &mut self.data[self.offset..],
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
        .expect("layout is in bounds and does not alias")
    }

    /// The view as a nalgebra matrix.
    pub fn to_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_fn(self.rows, self.cols, |i, j| self.get(i, j))
    }

    /// The lower triangle (diagonal included) as a nalgebra matrix, zeros above.
    pub fn lower_to_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_fn(self.rows, self.cols, |i, j| {
            if j <= i { self.get(i, j) } else { 0.0 }
        })
    }

    /// Whether every buffer element outside the view is still NaN.
    pub fn outside_untouched(&self) -> bool {
        let mut inside = vec![false; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                inside[self.index(i, j)] = true;
            }
        }
        self.data
            .iter()
            .zip(&inside)
            .all(|(v, &is_in)| is_in || v.is_nan())
    }

    /// Whether the whole buffer equals `other`'s bit for bit (NaN included).
    pub fn same_bits(&self, other: &StridedF64) -> bool {
        self.data.len() == other.data.len()
            && self
                .data
                .iter()
                .zip(&other.data)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}
