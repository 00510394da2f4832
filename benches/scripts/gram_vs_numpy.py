#!/usr/bin/env python3
"""Gram update G = X^T X: pleas (syrk_lower and the threaded accumulator) against numpy/OpenBLAS,
timed in the same run, interleaved, medians of repeats.

numpy computes `X.T @ X` with OpenBLAS's SYRK (it detects the A^T A pattern), pinned to one
thread with threadpoolctl. Work is counted as N d^2 flops for everyone (the multiply-adds of the
lower triangle, times 2).

Single-thread figures use each side's thread CPU time (time.thread_time for numpy, the thread's
schedstat for pleas), which other processes on a shared machine disturb far less than wall time;
the thread-scaling column uses wall time (both runs in the same conditions).

numpy advises the kernel to back its large arrays with huge pages; by default pleas's side
allocates its operands, output and scratch the same way (`--pages numpy`), so both read the
same kind of memory. `--pages plain` measures pleas on plain 4 KiB pages instead.

Usage: python3 benches/scripts/gram_vs_numpy.py [--samples 65536] [--dims 256,1024,2304]
       [--rounds 3] [--threads 2] [--pages numpy|plain]
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


def ours(n, d, threads, mode, repeats, pages):
    """[(wall, cpu)] per repeat."""
    out = subprocess.run(
        [BIN, str(n), str(d), str(repeats), str(threads), mode, pages],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()
    return [tuple(float(v) for v in line.split()) for line in out]


def numpy_times(x, repeats):
    """[(wall, cpu)] per repeat."""
    times = []
    with threadpool_limits(1):
        for _ in range(repeats):
            w, c = time.perf_counter(), time.thread_time()
            g = x.T @ x
            times.append((time.perf_counter() - w, time.thread_time() - c))
    del g
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=65536)
    ap.add_argument("--dims", default="256,1024,2304")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pages", choices=["numpy", "plain"], default="numpy",
                    help="how pleas's side allocates X, G and its scratch: as numpy allocates "
                         "its arrays (huge pages advised for buffers of 4 MiB or more; the "
                         "default, so both sides read the same kind of memory) or plainly")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "pleas-benches", "--bin",
                    "gram_timing"], check=True, cwd=ROOT)
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"numpy {np.__version__}; BLAS: " +
          ", ".join(f"{b['internal_api']} {b['version']} ({b.get('architecture')})" for b in blas))
    n = args.samples
    header = ("d", "numpy 1t (cpu)", "pleas 1t (cpu)", "ratio", "accum 1t (cpu)",
              "numpy 1t (wall)", "pleas 1t (wall)", "accum 1t (wall)",
              f"accum {args.threads}t (wall)", "scaling")
    print("GFLOP/s counting N d^2 flops; N = {}; medians of {} rounds; pleas pages: {}".format(
        n, args.rounds, args.pages))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for d in [int(v) for v in args.dims.split(",")]:
        rng = np.random.default_rng(d)
        x = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
        t_np, t_k, t_a1, t_at = [], [], [], []
        reps = 3 if d < 2000 else 1
        for _ in range(args.rounds):
            t_np += numpy_times(x, reps)
            t_k += ours(n, d, 1, "kernel", reps, args.pages)
            t_a1 += ours(n, d, 1, "accumulator", reps, args.pages)
            t_at += ours(n, d, args.threads, "accumulator", reps, args.pages)
        flops = n * d * d
        cpu = lambda ts: flops / statistics.median(t[1] for t in ts) / 1e9
        wall = lambda ts: flops / statistics.median(t[0] for t in ts) / 1e9
        row = (d, f"{cpu(t_np):.1f}", f"{cpu(t_k):.1f}", f"{cpu(t_k) / cpu(t_np):.2f}x",
               f"{cpu(t_a1):.1f}", f"{wall(t_np):.1f}", f"{wall(t_k):.1f}", f"{wall(t_a1):.1f}",
               f"{wall(t_at):.1f}", f"{wall(t_at) / wall(t_a1):.2f}x")
        print("| " + " | ".join(str(v) for v in row) + " |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
