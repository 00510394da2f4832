//! Locating non-finite values (NaN, +-infinity) in f32 matrices, eight lanes at a time.

use wide::f32x8;

use super::view::MatRef;

/// True when every value of `values` is finite (neither NaN nor infinite).
#[inline]
pub fn all_finite(values: &[f32]) -> bool {
    all_within(values, f32::MAX)
}

/// `|v| > limit`, or `v` is NaN.
#[inline]
fn outside(v: f32, limit: f32) -> bool {
    !matches!(
        v.abs().partial_cmp(&limit),
        Some(core::cmp::Ordering::Less | core::cmp::Ordering::Equal)
    )
}

/// True when every value of `values` satisfies `|v| <= limit` (false for NaN).
#[inline]
pub fn all_within(values: &[f32], limit: f32) -> bool {
    let lim = f32x8::splat(limit);
    let mut ok = f32x8::from(f32::from_bits(u32::MAX));
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        let v = f32x8::from(<[f32; 8]>::try_from(c).expect("chunk of 8"));
        ok &= v.abs().simd_le(lim);
    }
    ok.all() && !chunks.remainder().iter().any(|&v| outside(v, limit))
}

/// Scalar twin of [`all_within`].
pub fn all_within_reference(values: &[f32], limit: f32) -> bool {
    values.iter().all(|v| !v.is_nan() && v.abs() <= limit)
}

/// The first element of `m` (row by row) with `|v| > limit` or NaN, as `(row, col)`.
pub fn first_outside(m: MatRef<'_, f32>, limit: f32) -> Option<(usize, usize)> {
    if m.rows() == 0 || m.cols() == 0 {
        return None;
    }
    if m.col_stride() == 1 || m.cols() == 1 {
        for i in 0..m.rows() {
            let row = m.row(i).expect("unit column stride");
            if !all_within(row, limit) {
                return row.iter().position(|&v| outside(v, limit)).map(|j| (i, j));
            }
        }
        None
    } else {
        m.find(|v| outside(v, limit))
    }
}

/// Scalar twin of [`all_finite`].
pub fn all_finite_reference(values: &[f32]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// The first non-finite element of `m`, row by row, as `(row, col)`.
pub fn first_non_finite(m: MatRef<'_, f32>) -> Option<(usize, usize)> {
    if m.rows() == 0 || m.cols() == 0 {
        return None;
    }
    if m.col_stride() == 1 || m.cols() == 1 {
        for i in 0..m.rows() {
            let row = m.row(i).expect("unit column stride");
            if !all_finite(row) {
                return row.iter().position(|v| !v.is_finite()).map(|j| (i, j));
            }
        }
        None
    } else {
        m.find(|v| !v.is_finite())
    }
}
