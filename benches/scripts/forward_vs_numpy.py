#!/usr/bin/env python3
"""ResNet-20 inference throughput: pleas's forward pass vs a NumPy im2col + matmul reference of
the same network, in the same run, on the same random weights and 1024 images.

Usage: python3 benches/scripts/forward_vs_numpy.py [--images 1024] [--widths 1 4] [--runs 3]

Builds `forward_throughput` (release) with cargo, writes random ResNet-20 weights (BN with
non-trivial statistics) and inputs to a temporary folder, times both implementations (best of
`--runs`, BN folded into the convs in both, batches of 256), checks that their logits agree,
and prints images/s and the ratio. PyTorch CPU is used too when it is importable.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resnet20_numpy import ResNet20, random_resnet20, write_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def time_numpy(net, x, runs, batch=256):
    best = float("inf")
    out = None
    for _ in range(runs):
        t = time.perf_counter()
        logits = np.concatenate([net(x[i : i + batch]) for i in range(0, len(x), batch)])
        best = min(best, time.perf_counter() - t)
        out = logits
    return len(x) / best, out


def time_torch(weights, x, runs):
    try:
        import torch
    except ImportError:
        return None
    torch.set_grad_enabled(False)
    # A functional ResNet-20 with eval-mode BN, straight from the weights.
    w = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}

    def cbn(h, conv, bn, s, p):
        h = torch.nn.functional.conv2d(h, w[conv + ".weight"], stride=s, padding=p)
        return torch.nn.functional.batch_norm(
            h, w[bn + ".running_mean"], w[bn + ".running_var"], w[bn + ".weight"], w[bn + ".bias"], False, 0.0, 1e-5
        )

    def net(h):
        h = torch.relu(cbn(h, "conv1", "bn1", 1, 1))
        k = 0
        while f"layers.{k}.conv1.weight" in w:
            p = f"layers.{k}"
            sc = f"{p}.shortcut.0.weight" in w
            s = 2 if sc and k > 0 else 1
            y = torch.relu(cbn(h, p + ".conv1", p + ".bn1", s, 1))
            y = cbn(y, p + ".conv2", p + ".bn2", 1, 1)
            r = cbn(h, p + ".shortcut.0", p + ".shortcut.1", s, 0) if sc else h
            h = torch.relu(y + r)
            k += 1
        return h.mean((2, 3)) @ w["head.weight"].T + w["head.bias"]

    xt = torch.from_numpy(x)
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        for i in range(0, len(x), 256):
            net(xt[i : i + 256])
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "pleas-benches", "--bin", "forward_throughput"],
        cwd=ROOT,
        check=True,
    )
    exe = os.path.join(ROOT, "target", "release", "forward_throughput")
    print(f"numpy {np.__version__}; cores: {os.cpu_count()}; images: {args.images}")
    print(f"{'width':>5} {'pleas img/s':>12} {'numpy img/s':>12} {'ratio':>7} {'torch img/s':>12} {'max rel diff':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        x = np.random.default_rng(1).standard_normal((args.images, 1, 28, 28)).astype(np.float32)
        xpath = os.path.join(tmp, "x.npy")
        np.save(xpath, x)
        for width in args.widths:
            weights = random_resnet20(width, seed=width)
            mpath = os.path.join(tmp, f"rn20w{width}.safetensors")
            write_safetensors(mpath, weights)
            lpath = os.path.join(tmp, f"logits{width}.npy")
            out = subprocess.run(
                [exe, mpath, xpath, "--runs", str(args.runs), "--batch", "256", "--logits", lpath],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            ours = json.loads(out)["images_per_s"]
            ref_ips, ref_logits = time_numpy(ResNet20(weights, fold_bn=True), x, args.runs)
            got = np.load(lpath)
            diff = float(np.abs(got - ref_logits).max() / np.abs(ref_logits).max())
            torch_ips = time_torch(weights, x, args.runs)
            t = f"{torch_ips:12.1f}" if torch_ips else f"{'n/a':>12}"
            print(f"{width:>5} {ours:12.1f} {ref_ips:12.1f} {ours / ref_ips:7.2f} {t} {diff:13.2e}")
            if diff > 1e-4:
                print(f"logits disagree (max rel diff {diff:.2e})", file=sys.stderr)
                sys.exit(1)


if __name__ == "__main__":
    main()
