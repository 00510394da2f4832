//! Strided row-major matrix views.
//!
//! A view is a slice plus a shape and two strides: element `(i, j)` lives at
//! `data[i * row_stride + j * col_stride]`. A contiguous row-major matrix has
//! `row_stride = cols` and `col_stride = 1`; its transpose is the same slice with the strides
//! swapped. Construction checks that every element is inside the slice, so indexing through a
//! view never reads out of bounds.

use core::fmt;

/// Why a view could not be built over a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewError {
    /// Rows requested.
    pub rows: usize,
    /// Columns requested.
    pub cols: usize,
    /// Row stride requested.
    pub row_stride: usize,
    /// Column stride requested.
    pub col_stride: usize,
    /// Length of the slice the view was to cover.
    pub len: usize,
}

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {}x{} view with strides ({}, {}) does not fit in a slice of {} elements",
            self.rows, self.cols, self.row_stride, self.col_stride, self.len
        )
    }
}

impl core::error::Error for ViewError {}

/// Number of elements a view of this shape and these strides spans (0 for an empty view),
/// or `None` on arithmetic overflow.
fn span(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(row_stride)?
        .checked_add((cols - 1).checked_mul(col_stride)?)?
        .checked_add(1)
}

fn check(
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> Result<(), ViewError> {
    match span(rows, cols, row_stride, col_stride) {
        Some(n) if n <= len => Ok(()),
        _ => Err(ViewError {
            rows,
            cols,
            row_stride,
            col_stride,
            len,
        }),
    }
}

/// A read-only strided view of a matrix.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<T> fmt::Debug for MatRef<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MatRef({}x{}, strides ({}, {}))",
            self.rows, self.cols, self.row_stride, self.col_stride
        )
    }
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A contiguous row-major `rows x cols` view of the first `rows * cols` elements.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Result<Self, ViewError> {
        Self::from_strided(data, rows, cols, cols, 1)
    }

    /// A view with explicit strides (in elements).
    pub fn from_strided(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, ViewError> {
        check(data.len(), rows, cols, row_stride, col_stride)?;
        Ok(Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// Number of rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    #[inline]
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Distance in elements between consecutive rows.
    #[inline]
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Distance in elements between consecutive columns.
    #[inline]
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// Element `(i, j)`. Panics if out of range (like slice indexing).
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> T {
        assert!(i < self.rows && j < self.cols, "index out of view");
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Element `(i, j)`, or `None` if out of range.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> Option<T> {
        (i < self.rows && j < self.cols)
            .then(|| self.data[i * self.row_stride + j * self.col_stride])
    }

    /// The transposed view (no copy: the strides are swapped).
    #[inline]
    pub fn transpose(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// The `nrows x ncols` sub-view starting at `(row, col)`, or `None` if it does not fit.
    pub fn submatrix(&self, row: usize, col: usize, nrows: usize, ncols: usize) -> Option<Self> {
        if row.checked_add(nrows)? > self.rows || col.checked_add(ncols)? > self.cols {
            return None;
        }
        if nrows == 0 || ncols == 0 {
            return Some(Self {
                data: &self.data[..0],
                rows: nrows,
                cols: ncols,
                row_stride: self.row_stride,
                col_stride: self.col_stride,
            });
        }
        let start = row * self.row_stride + col * self.col_stride;
        Some(Self {
            data: &self.data[start..],
            rows: nrows,
            cols: ncols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        })
    }

    /// The underlying slice (element `(i, j)` is at `i * row_stride + j * col_stride`).
    #[inline]
    pub(crate) fn raw(&self) -> &'a [T] {
        self.data
    }

    /// Row `i` as a slice when columns are contiguous (`col_stride == 1`), else `None`.
    #[inline]
    pub fn row(&self, i: usize) -> Option<&'a [T]> {
        if i >= self.rows || (self.col_stride != 1 && self.cols > 1) {
            return None;
        }
        let start = i * self.row_stride;
        Some(&self.data[start..start + self.cols])
    }

    /// The first position (row by row) whose element satisfies `is_bad`.
    pub fn find(&self, mut is_bad: impl FnMut(T) -> bool) -> Option<(usize, usize)> {
        for i in 0..self.rows {
            if let Some(row) = self.row(i) {
                if let Some(j) = row.iter().position(|&v| is_bad(v)) {
                    return Some((i, j));
                }
                continue;
            }
            for j in 0..self.cols {
                if is_bad(self.data[i * self.row_stride + j * self.col_stride]) {
                    return Some((i, j));
                }
            }
        }
        None
    }
}

/// A mutable strided view of a matrix.
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<T> fmt::Debug for MatMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MatMut({}x{}, strides ({}, {}))",
            self.rows, self.cols, self.row_stride, self.col_stride
        )
    }
}

impl<'a, T: Copy> MatMut<'a, T> {
    /// A contiguous row-major `rows x cols` view of the first `rows * cols` elements.
    pub fn new(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self, ViewError> {
        Self::from_strided(data, rows, cols, cols, 1)
    }

    /// A view with explicit strides (in elements). Strides must not make two elements alias:
    /// `col_stride >= 1` and `row_stride >= cols * col_stride`, or the transposed condition.
    pub fn from_strided(
        data: &'a mut [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, ViewError> {
        check(data.len(), rows, cols, row_stride, col_stride)?;
        // Distinct (i, j) must map to distinct offsets: along a dimension of length > 1 the
        // stride is non-zero, and one stride steps over the whole extent of the other.
        let disjoint = rows == 0
            || cols == 0
            || (rows <= 1 || row_stride >= 1)
                && (cols <= 1 || col_stride >= 1)
                && (rows <= 1
                    || cols <= 1
                    || row_stride >= cols * col_stride
                    || col_stride >= rows * row_stride);
        if !disjoint {
            return Err(ViewError {
                rows,
                cols,
                row_stride,
                col_stride,
                len: data.len(),
            });
        }
        Ok(Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// Number of rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    #[inline]
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Distance in elements between consecutive rows.
    #[inline]
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Distance in elements between consecutive columns.
    #[inline]
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// Element `(i, j)`. Panics if out of range.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> T {
        assert!(i < self.rows && j < self.cols, "index out of view");
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Mutable reference to element `(i, j)`. Panics if out of range.
    #[inline]
    pub fn at_mut(&mut self, i: usize, j: usize) -> &mut T {
        assert!(i < self.rows && j < self.cols, "index out of view");
        &mut self.data[i * self.row_stride + j * self.col_stride]
    }

    /// A read-only view of the same elements.
    #[inline]
    pub fn as_ref(&self) -> MatRef<'_, T> {
        MatRef {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    /// A shorter-lived mutable view of the same elements.
    #[inline]
    pub fn reborrow(&mut self) -> MatMut<'_, T> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    /// The transposed view (no copy).
    #[inline]
    pub fn transpose(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// The underlying slice (element `(i, j)` is at `i * row_stride + j * col_stride`).
    #[inline]
    pub(crate) fn raw_mut(&mut self) -> &mut [T] {
        self.data
    }

    /// The underlying slice, consuming the view.
    #[inline]
    pub(crate) fn into_raw(self) -> &'a mut [T] {
        self.data
    }

    /// Row `i` as a mutable slice when columns are contiguous, else `None`.
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> Option<&mut [T]> {
        if i >= self.rows || (self.col_stride != 1 && self.cols > 1) {
            return None;
        }
        let start = i * self.row_stride;
        Some(&mut self.data[start..start + self.cols])
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: T) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                self.data[i * self.row_stride + j * self.col_stride] = value;
            }
        }
    }
}
