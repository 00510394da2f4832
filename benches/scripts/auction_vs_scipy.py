#!/usr/bin/env python3
"""Auction (pleas-core) vs scipy's linear_sum_assignment and the fastest lapx solver.

Generates seeded score matrices, solves each with scipy (maximize=True), with every lapx
Jonker-Volgenant variant (on the negated matrix) and with our auction through the
`auction_timing` binary, all in the same run, and prints a markdown table of medians and ratios.
Only the solve is timed (matrix generation, negation and file I/O are outside the timed region).

Kinds (all float32, as the pipeline produces them):
  uniform  U[0,1)
  planted  S = P + 0.25 N(0,1), P a random permutation matrix
  act      neg-l2 similarity -||a_i - b_j|| between the units of two layers on the 2000
           Fashion-MNIST `x_match` images (x = pixel/255*2-1). n = 64 and 512: the first hidden
           layer of the fixture MLP pairs (`fashion/mlp64_split`, `fashion/mlp_split`, two
           independently trained models, "act-trained"). Other n: the first hidden layer of two
           independently He-initialised random ReLU MLPs 784-n ("act-random").

Usage: auction_vs_scipy.py [--sizes 64,256,...] [--kinds uniform,planted,act] [--reps 5]
       [--workdir DIR] [--binary PATH]
Build the binary first: cargo build --release -p pleas-benches --bin auction_timing
"""
import argparse
import json
import os
import struct
import subprocess
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

import lap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIXTURES = os.path.abspath(os.path.join(ROOT, "..", "shared", "fixtures", "fashion"))
LAPX_SOLVERS = ["lapjvr", "lapjvh", "lapjvs", "lapjvsa", "lapjv", "lapjvx"]


def read_safetensors(path):
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        data = f.read()
    dtypes = {"F32": np.float32, "U8": np.uint8, "F64": np.float64, "I64": np.int64}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
    return out


def match_images():
    x = read_safetensors(os.path.join(FIXTURES, "eval.safetensors"))["x_match"]
    return x.astype(np.float64) / 255.0 * 2.0 - 1.0


def neg_l2(a, b):
    """S[i, j] = -||a[:, i] - b[:, j]||, units as columns of the activation matrices."""
    na = (a * a).sum(0)
    nb = (b * b).sum(0)
    d2 = na[:, None] + nb[None, :] - 2.0 * (a.T @ b)
    return -np.sqrt(np.maximum(d2, 0.0))


def activation_matrix(n, rng, x):
    fixture = {64: "mlp64_split", 512: "mlp_split"}.get(n)
    if fixture is not None:
        d = os.path.join(FIXTURES, fixture)
        files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
        acts = []
        for f in files[:2]:
            t = read_safetensors(os.path.join(d, f))
            w = t["layers.0.weight"].astype(np.float64)
            bias = t["layers.0.bias"].astype(np.float64)
            acts.append(np.maximum(x @ w.T + bias, 0.0))
        return neg_l2(*acts).astype(np.float32), "act-trained"
    acts = []
    for _ in range(2):
        w = rng.normal(0.0, np.sqrt(2.0 / x.shape[1]), size=(n, x.shape[1]))
        acts.append(np.maximum(x @ w.T, 0.0))
    return neg_l2(*acts).astype(np.float32), "act-random"


def make(kind, n, seed, x):
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.random((n, n), dtype=np.float32), "uniform"
    if kind == "planted":
        s = 0.25 * rng.standard_normal((n, n))
        s[np.arange(n), rng.permutation(n)] += 1.0
        return s.astype(np.float32), "planted"
    if kind == "act":
        return activation_matrix(n, rng, x)
    raise ValueError(kind)


def median_time(f, reps):
    f()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64,256,512,1024,2048,4096")
    ap.add_argument("--kinds", default="uniform,planted,act")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workdir", default="/tmp/auction_bench")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "auction_timing"))
    ap.add_argument("--lapx", default=",".join(LAPX_SOLVERS))
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    x = match_images()
    lapx = [s for s in args.lapx.split(",") if s]
    rows = []
    print("| kind | n | scipy (ms) | best lapx (ms) | auction (ms) | scipy / auction "
          "| lapx / auction | phases | bids / n | full scans / n | total rel. diff vs scipy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in args.kinds.split(","):
        for n in [int(v) for v in args.sizes.split(",")]:
            s, label = make(kind, n, 1000 + n, x)
            reps = args.reps if n <= 2048 else max(3, args.reps // 2)
            s64 = s.astype(np.float64)
            t_scipy = median_time(lambda: linear_sum_assignment(s, maximize=True), reps)
            r, c = linear_sum_assignment(s, maximize=True)
            best_scipy = s64[r, c].sum()
            cost = -s64
            lapx_times = {}
            for name in lapx:
                f = getattr(lap, name)
                lapx_times[name] = median_time(lambda: f(cost), reps)
            best_name = min(lapx_times, key=lapx_times.get)
            path = os.path.join(args.workdir, f"{kind}_{n}.f32")
            s.tofile(path)
            out = subprocess.run(
                [args.binary, "--reps", str(reps), f"{path}:{n}:f32"],
                check=True, capture_output=True, text=True,
            ).stdout.split()
            t_ours, phases, bids, full = float(out[1]), int(out[4]), int(out[5]), int(out[8])
            perm = np.fromfile(path + ".perm", dtype=np.uint32)
            assert sorted(perm.tolist()) == list(range(n)), "auction result is not a permutation"
            ours = s64[np.arange(n), perm].sum()
            rel = (best_scipy - ours) / max(abs(best_scipy), 1e-300)
            row = (f"| {label} | {n} | {t_scipy * 1e3:.2f} | {lapx_times[best_name] * 1e3:.2f} "
                   f"({best_name}) | {t_ours * 1e3:.2f} | {t_scipy / t_ours:.2f} "
                   f"| {lapx_times[best_name] / t_ours:.2f} | {phases} | {bids / n:.1f} | {full / n:.1f} "
                   f"| {rel:.1e} |")
            print(row, flush=True)
            rows.append(row)


if __name__ == "__main__":
    main()
