//! `wide::f64x4` inner loops over strided f64 vectors: dot products (one vector against up to
//! four others) and axpy. Shared by the Cholesky factorization and the triangular solves.
//!
//! A vector is a slice, an offset and a stride. Unit-stride vectors are loaded four lanes at a
//! time straight from the slice; other strides gather four elements into a register, so every
//! layout runs the same arithmetic. Callers check that all indices are in bounds (slice indexing
//! panics otherwise, it never reads out of bounds).

use wide::f64x4;

/// Lanes of `f64x4`.
const W: usize = 4;

/// A read-only strided vector: element `p` is `data[offset + p * stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub(crate) data: &'a [f64],
    pub(crate) offset: usize,
    pub(crate) stride: usize,
}

impl<'a> Strided<'a> {
    #[inline(always)]
    pub(crate) fn new(data: &'a [f64], offset: usize, stride: usize) -> Self {
        Self {
            data,
            offset,
            stride,
        }
    }

    /// Lanes `p .. p + 4`.
    #[inline(always)]
    fn load(&self, p: usize) -> f64x4 {
        if self.stride == 1 {
            let s = self.offset + p;
            f64x4::from(<[f64; W]>::try_from(&self.data[s..s + W]).unwrap())
        } else {
            let s = self.offset + p * self.stride;
            let t = self.stride;
            f64x4::new([
                self.data[s],
                self.data[s + t],
                self.data[s + 2 * t],
                self.data[s + 3 * t],
            ])
        }
    }

    #[inline(always)]
    fn get(&self, p: usize) -> f64 {
        self.data[self.offset + p * self.stride]
    }
}

/// `[x . y_0, ..., x . y_{N-1}]` over the first `len` elements: `x` is loaded once per step and
/// multiplied into `N` accumulators, so `N` dot products cost `N + 1` loads per four lanes.
#[inline(always)]
pub(crate) fn dots<const N: usize>(x: Strided<'_>, ys: [Strided<'_>; N], len: usize) -> [f64; N] {
    let mut acc = [f64x4::ZERO; N];
    let body = len - len % W;
    let mut p = 0;
    while p < body {
        let xv = x.load(p);
        for q in 0..N {
            acc[q] = xv.mul_add(ys[q].load(p), acc[q]);
        }
        p += W;
    }
    let mut out = [0.0; N];
    for q in 0..N {
        let mut s = acc[q].reduce_add();
        for r in body..len {
            s += x.get(r) * ys[q].get(r);
        }
        out[q] = s;
    }
    out
}

/// `x . y` over the first `len` elements.
#[inline(always)]
pub(crate) fn dot(x: Strided<'_>, y: Strided<'_>, len: usize) -> f64 {
    dots::<1>(x, [y], len)[0]
}

/// `y[p] += alpha * x[p]` for `p < len`, with `y` contiguous (`y.len() >= len`).
#[inline(always)]
pub(crate) fn axpy(alpha: f64, x: Strided<'_>, y: &mut [f64], len: usize) {
    let body = len - len % W;
    let av = f64x4::splat(alpha);
    let (yb, yt) = y[..len].split_at_mut(body);
    for (c, chunk) in yb.chunks_exact_mut(W).enumerate() {
        let yv = f64x4::from(<[f64; W]>::try_from(&*chunk).unwrap());
        chunk.copy_from_slice(&av.mul_add(x.load(c * W), yv).to_array());
    }
    for (r, v) in yt.iter_mut().enumerate() {
        *v += alpha * x.get(body + r);
    }
}

/// `y[p] /= d` for the contiguous `y`.
#[inline(always)]
pub(crate) fn divide(y: &mut [f64], d: f64) {
    let dv = f64x4::splat(d);
    let mut chunks = y.chunks_exact_mut(W);
    for chunk in &mut chunks {
        let yv = f64x4::from(<[f64; W]>::try_from(&*chunk).unwrap());
        chunk.copy_from_slice(&(yv / dv).to_array());
    }
    for v in chunks.into_remainder() {
        *v /= d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn data(n: usize) -> Vec<f64> {
        (0..n).map(|i| (i as f64 * 0.37).sin() + 0.1).collect()
    }

    #[test]
    fn dots_match_scalar_for_every_tail_and_stride() {
        let v = data(400);
        for len in 0..=13 {
            for (xs, ys) in [(1, 1), (1, 3), (2, 1), (5, 7)] {
                let x = Strided::new(&v, 3, xs);
                let y0 = Strided::new(&v, 1, ys);
                let y1 = Strided::new(&v, 2, ys);
                let got = dots::<2>(x, [y0, y1], len);
                for (q, y) in [y0, y1].iter().enumerate() {
                    let want: f64 = (0..len).map(|p| x.get(p) * y.get(p)).sum();
                    assert!(
                        (got[q] - want).abs() <= 1e-13,
                        "len {len} strides {xs},{ys}"
                    );
                }
            }
        }
    }

    #[test]
    fn axpy_and_divide_match_scalar() {
        let v = data(100);
        for len in 0..=11 {
            for xs in [1, 3, 4] {
                let x = Strided::new(&v, 2, xs);
                let mut y = data(60);
                let mut want = y.clone();
                axpy(-0.5, x, &mut y[1..], len);
                for p in 0..len {
                    want[1 + p] += -0.5 * x.get(p);
                }
                for (a, b) in y.iter().zip(&want) {
                    // FMA builds round once, the scalar loop twice.
                    assert!((a - b).abs() <= 1e-15, "len {len} stride {xs}");
                }
            }
            let mut y = data(len);
            let want: Vec<f64> = y.iter().map(|v| v / 3.0).collect();
            divide(&mut y, 3.0);
            assert_eq!(y, want);
        }
    }
}
