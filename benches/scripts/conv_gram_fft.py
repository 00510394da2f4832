#!/usr/bin/env python3
"""Prototype of the frequency-domain route to the lag products of a convolution's patch Gram,
against the direct route, both in numpy (OpenBLAS, one thread), in one run.

The quantity is the dominant part of the lag-based Gram (`pleas_core::gram::conv`): the
whole-map cross-correlations `R_d[c, c'] = sum_n sum_q x_c(n, q) x_c'(n, q + d)` of all channel
pairs at the 13 lags of a 3 x 3 kernel (up to symmetry), summed over a shard of maps.

- direct: one f32 matrix product per lag over the overlapping positions (what the Rust kernel
  does, there with the horizontal lags of a row fused into one product).
- fft: f32 real 2-D FFTs of the zero-padded maps (padded by 2 so the lags do not wrap),
  `S(f) = sum_n X(n, f) X(n, f)^H` per frequency (a batched complex product, C x C x N per
  frequency), one inverse FFT per channel pair, the 13 lags read off.

Both are compared with the exact f64 values: the error of an entry relative to its terms'
magnitude `sum |x_c| |x_c'|` (the scale of the Gram tolerance GRAM_MOMENTS_REL = 1e-5).

Usage: `python3 benches/scripts/conv_gram_fft.py [--samples 250] [--repeats 3]` with numpy >= 2
(its FFT keeps float32). Prints, per map size, the median seconds of each route, their ratio and
the largest relative errors.
"""

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

LAGS = [(0, 0), (0, 1), (0, 2)] + [(dy, dx) for dy in (1, 2) for dx in range(-2, 3)]


def overlap(x, dy, dx):
    """(first, second) operands of lag (dy, dx): the positions where both are in the map."""
    h, w = x.shape[2], x.shape[3]
    y0, y1 = max(0, -dy), min(h, h - dy)
    x0, x1 = max(0, -dx), min(w, w - dx)
    a = x[:, :, y0:y1, x0:x1]
    b = x[:, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    return a, b


def direct(x):
    n, c = x.shape[:2]
    out = []
    for dy, dx in LAGS:
        a, b = overlap(x, dy, dx)
        a = np.ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(c, -1)
        b = np.ascontiguousarray(b.transpose(1, 0, 2, 3)).reshape(c, -1)
        out.append(a @ b.T)
    return out


def fft(x):
    n, c, h, w = x.shape
    ph, pw = h + 2, w + 2
    xf = np.fft.rfft2(x, s=(ph, pw))  # n, c, ph, pw // 2 + 1 (complex64 for float32 input)
    f = xf.reshape(n, c, -1).transpose(2, 1, 0)  # freq, c, n
    s = f @ np.conj(f.transpose(0, 2, 1))  # freq, c, c: sum_n X_c X_c'^*
    s = s.transpose(1, 2, 0).reshape(c, c, ph, pw // 2 + 1)
    # corr[c, c', d] = sum_q x_c(q + d) x_c'(q), so R_d[c, c'] is read at -d.
    corr = np.fft.irfft2(s, s=(ph, pw))
    return [corr[:, :, -dy % ph, -dx % pw] for dy, dx in LAGS]


def exact(x):
    return direct(x.astype(np.float64))


def scale(x):
    return direct(np.abs(x).astype(np.float64))


def timed(fn, x, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=250)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(1)
    print(f"numpy {np.__version__}, one thread, {args.samples} maps, median of {args.repeats}")
    for c, side in [(18, 28), (35, 14), (71, 7)]:
        # Post-ReLU-like maps: half zeros, positive mean.
        x = np.maximum(rng.standard_normal((args.samples, c, side, side)), 0).astype(np.float32)
        ref, sc = exact(x), scale(x)
        errs = {}
        for name, fn in [("direct", direct), ("fft", fft)]:
            got = fn(x)
            errs[name] = max(float(np.max(np.abs(g - r) / s)) for g, r, s in zip(got, ref, sc))
        td, tf = timed(direct, x, args.repeats), timed(fft, x, args.repeats)
        print(
            f"C={c} {side}x{side}: direct {td:.4f} s, fft {tf:.4f} s, direct/fft {td / tf:.2f}x; "
            f"max rel error direct {errs['direct']:.1e}, fft {errs['fft']:.1e}"
        )


if __name__ == "__main__":
    main()
