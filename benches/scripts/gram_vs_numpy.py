#!/usr/bin/env python3
"""Gram update G = X^T X: pleas (syrk_lower and the threaded accumulator) against numpy/OpenBLAS,
timed in the same run, interleaved, medians of repeats.

numpy computes `X.T @ X` with OpenBLAS's SYRK (it detects the A^T A pattern), pinned to one
thread with threadpoolctl. Work is counted as N d^2 flops for everyone (the multiply-adds of the
lower triangle, times 2).

Usage: python3 benches/scripts/gram_vs_numpy.py [--samples 65536] [--dims 256,1024,2304]
       [--rounds 3] [--threads 2]
Needs: numpy, threadpoolctl; builds target/release/gram_timing with cargo.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "gram_timing")


def ours(n, d, threads, mode, repeats):
    out = subprocess.run(
        [BIN, str(n), str(d), str(repeats), str(threads), mode],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return [float(t) for t in out]


def numpy_times(x, repeats):
    times = []
    with threadpool_limits(1):
        for _ in range(repeats):
            t = time.perf_counter()
            g = x.T @ x
            times.append(time.perf_counter() - t)
    del g
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=65536)
    ap.add_argument("--dims", default="256,1024,2304")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "pleas-benches", "--bin",
                    "gram_timing"], check=True, cwd=ROOT)
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"numpy {np.__version__}; BLAS: " +
          ", ".join(f"{b['internal_api']} {b['version']} ({b.get('architecture')})" for b in blas))
    n = args.samples
    header = ("d", "numpy 1t", "pleas 1t", "ratio", "accum 1t", f"accum {args.threads}t",
              "scaling")
    print("GFLOP/s counting N d^2; medians of {} rounds".format(args.rounds))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for d in [int(v) for v in args.dims.split(",")]:
        rng = np.random.default_rng(d)
        x = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
        t_np, t_k, t_a1, t_at = [], [], [], []
        reps = 3 if d < 2000 else 1
        for _ in range(args.rounds):
            t_np += numpy_times(x, reps)
            t_k += ours(n, d, 1, "kernel", reps)
            t_a1 += ours(n, d, 1, "accumulator", reps)
            t_at += ours(n, d, args.threads, "accumulator", reps)
        flops = n * d * d
        g = lambda ts: flops / statistics.median(ts) / 1e9
        row = (d, f"{g(t_np):.1f}", f"{g(t_k):.1f}", f"{g(t_k) / g(t_np):.2f}x",
               f"{g(t_a1):.1f}", f"{g(t_at):.1f}", f"{g(t_at) / g(t_a1):.2f}x")
        print("| " + " | ".join(str(v) for v in row) + " |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
