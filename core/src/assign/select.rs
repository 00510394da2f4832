//! Partial merge selection: the `k` best pairs of an assignment (docs/ALGORITHM.md section 3).

use core::cmp::Ordering;

use super::error::SelectError;
use super::scan::Score;
use crate::linalg::MatRef;

/// Ranks the pairs `(i, perm[i])` of an assignment by score and splits the rows into the `k`
/// best and the rest.
///
/// `scores` is the `rows x cols` score matrix the assignment was computed on (any strides),
/// `perm[i]` the column of row `i`. On success `out[..k]` holds the rows of the `k`
/// highest-scoring pairs and `out[k..rows]` the other rows, each part in increasing row order
/// (the `[merged | A-only]` layout order). `out` must hold at least `rows` elements; it doubles
/// as the working space, so nothing is allocated.
///
/// Ties are broken deterministically: of two pairs with equal scores, the one with the lower
/// row index ranks higher. `+0.0` and `-0.0` are equal; infinities are ordered as usual; a NaN
/// pair score is an error naming the pair.
pub fn select_top<T: Score>(
    scores: MatRef<'_, T>,
    perm: &[usize],
    k: usize,
    out: &mut [usize],
) -> Result<(), SelectError> {
    let (rows, cols) = scores.shape();
    if perm.len() != rows {
        return Err(SelectError::PermLength {
            rows,
            len: perm.len(),
        });
    }
    if k > rows {
        return Err(SelectError::TooMany { k, rows });
    }
    if out.len() < rows {
        return Err(SelectError::OutputTooSmall {
            needed: rows,
            provided: out.len(),
        });
    }
    for (row, &col) in perm.iter().enumerate() {
        if col >= cols {
            return Err(SelectError::ColumnOutOfRange { row, col, cols });
        }
        if scores.at(row, col).to_f64().is_nan() {
            return Err(SelectError::NanScore { row, col });
        }
    }
    let out = &mut out[..rows];
    for (i, o) in out.iter_mut().enumerate() {
        *o = i;
    }
    if k > 0 && k < rows {
        let score = |i: usize| scores.at(i, perm[i]).to_f64();
        // Better first: higher score, then lower row. A total order on non-NaN scores.
        let rank = |&a: &usize, &b: &usize| -> Ordering {
            score(b)
                .partial_cmp(&score(a))
                .expect("NaN scores rejected above")
                .then(a.cmp(&b))
        };
        out.select_nth_unstable_by(k, rank);
        out[..k].sort_unstable();
        out[k..].sort_unstable();
    }
    Ok(())
}
