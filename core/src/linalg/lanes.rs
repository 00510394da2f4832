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

/// The `R x C` tile of dot products `out[r][c] = x_r . y_c` over the first `len` elements:
/// each step loads `R + C` vectors of four lanes and does `R * C` fused multiply-adds into
/// register accumulators, reduced across lanes once at the end. Unit-stride operands take a
/// path with plain slice loads; any other stride gathers.
#[inline(always)]
pub(crate) fn dot_tile<const R: usize, const C: usize>(
    xs: [Strided<'_>; R],
    ys: [Strided<'_>; C],
    len: usize,
) -> [[f64; C]; R] {
    if xs.iter().chain(ys.iter()).all(|v| v.stride == 1) {
        let xs = xs.map(|v| &v.data[v.offset..v.offset + len]);
        let ys = ys.map(|v| &v.data[v.offset..v.offset + len]);
        return dot_tile_contiguous(xs, ys);
    }
    let mut acc = [[f64x4::ZERO; C]; R];
    let body = len - len % W;
    let mut p = 0;
    while p < body {
        let yv: [f64x4; C] = core::array::from_fn(|c| ys[c].load(p));
        for r in 0..R {
            let xv = xs[r].load(p);
            for c in 0..C {
                acc[r][c] = xv.mul_add(yv[c], acc[r][c]);
            }
        }
        p += W;
    }
    let mut out = [[0.0; C]; R];
    for r in 0..R {
        for c in 0..C {
            let mut s = acc[r][c].reduce_add();
            for t in body..len {
                s += xs[r].get(t) * ys[c].get(t);
            }
            out[r][c] = s;
        }
    }
    out
}

/// [`dot_tile`] over contiguous slices of equal length.
#[inline(always)]
fn dot_tile_contiguous<const R: usize, const C: usize>(
    xs: [&[f64]; R],
    ys: [&[f64]; C],
) -> [[f64; C]; R] {
    let xs = xs.map(|v| v.as_chunks::<W>());
    let ys = ys.map(|v| v.as_chunks::<W>());
    let steps = xs.first().map_or(0, |v| v.0.len());
    let mut acc = [[f64x4::ZERO; C]; R];
    for k in 0..steps {
        let yv: [f64x4; C] = core::array::from_fn(|c| f64x4::from(ys[c].0[k]));
        for r in 0..R {
            let xv = f64x4::from(xs[r].0[k]);
            for c in 0..C {
                acc[r][c] = xv.mul_add(yv[c], acc[r][c]);
            }
        }
    }
    let mut out = [[0.0; C]; R];
    for r in 0..R {
        for c in 0..C {
            let tail: f64 = xs[r].1.iter().zip(ys[c].1).map(|(a, b)| a * b).sum();
            out[r][c] = acc[r][c].reduce_add() + tail;
        }
    }
    out
}

/// `[x . y_0, ..., x . y_{N-1}]` over the first `len` elements (a `1 x N` [`dot_tile`]).
#[inline(always)]
pub(crate) fn dots<const N: usize>(x: Strided<'_>, ys: [Strided<'_>; N], len: usize) -> [f64; N] {
    dot_tile::<1, N>([x], ys, len)[0]
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

/// `y[p] += sum_q alpha[q] * x_q[p]` for `p < len`, with contiguous `y` and `x_q`: four
/// updates for one load and store of `y`.
#[inline(always)]
pub(crate) fn axpy4(alpha: [f64; 4], xs: [&[f64]; 4], y: &mut [f64], len: usize) {
    let body = len - len % W;
    let av = alpha.map(f64x4::splat);
    let xs = xs.map(|x| &x[..len]);
    let (yb, yt) = y[..len].split_at_mut(body);
    for (c, chunk) in yb.chunks_exact_mut(W).enumerate() {
        let p = c * W;
        let mut yv = f64x4::from(<[f64; W]>::try_from(&*chunk).unwrap());
        for q in 0..4 {
            let xv = f64x4::from(<[f64; W]>::try_from(&xs[q][p..p + W]).unwrap());
            yv = av[q].mul_add(xv, yv);
        }
        chunk.copy_from_slice(&yv.to_array());
    }
    for (r, v) in yt.iter_mut().enumerate() {
        let p = body + r;
        let mut s = *v;
        for q in 0..4 {
            s += alpha[q] * xs[q][p];
        }
        *v = s;
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
    fn dot_tile_matches_scalar() {
        let v = data(600);
        for len in 0..=9 {
            for stride in [1, 3] {
                let xs = [0, 1].map(|r| Strided::new(&v, 5 + r * 40, stride));
                let ys = [0, 1, 2, 3].map(|c| Strided::new(&v, 200 + c * 30, stride));
                let got = dot_tile::<2, 4>(xs, ys, len);
                for r in 0..2 {
                    for c in 0..4 {
                        let want: f64 = (0..len).map(|p| xs[r].get(p) * ys[c].get(p)).sum();
                        assert!((got[r][c] - want).abs() <= 1e-13, "len {len} ({r},{c})");
                    }
                }
            }
        }
    }

    #[test]
    fn axpy4_matches_scalar() {
        let v = data(100);
        for len in 0..=11 {
            let xs = [0, 12, 24, 36].map(|o| &v[o..o + len]);
            let alpha = [0.5, -1.0, 2.0, 0.25];
            let mut y = data(len + 3);
            let mut want = y.clone();
            axpy4(alpha, xs, &mut y, len);
            for p in 0..len {
                for q in 0..4 {
                    want[p] += alpha[q] * xs[q][p];
                }
            }
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-14, "len {len}");
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
