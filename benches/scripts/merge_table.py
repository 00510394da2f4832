#!/usr/bin/env python3
"""Accuracy table of merge variants on the fixture pairs (issue 5 acceptance).

Runs the release `pleas merge` binary for every pair, budget and variant with `--eval` on the
official test split and prints a Markdown table of mean per-task accuracy (plus a JSON dump).

    cargo build --release -p pleas
    python3 benches/scripts/merge_table.py [--pairs mlp_split,rn20w1_split,rn20w1_biased]
        [--budgets 1.0,1.2,1.5,2.0] [--json out.json]

Variants (rows):
  naive       identity matching (no permutation), weights averaged, BN re-estimated
  perm_avg    weight matching (Git Re-Basin), permute + average, BN re-estimated
  partial     activation matching, partial merge, permute + average, BN re-estimated
  pleas       least squares on the original models' inputs, BN folded (the paper's form)
  pleas_keep  the same with BN kept (averaged, statistics re-estimated)
  sequential  least squares on the merged network's own inputs (our default)
  free        sequential with MNIST digits as merge data (PLeaS-free)
  ensemble    both models (budget 2.0 copy of both: exact)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
EVAL = FIX / "fashion" / "eval.safetensors"
MNIST = FIX / "mnist" / "match.safetensors"
PAIRS = {
    "mlp_split": ("fashion/mlp_split/fashion_mlp_split_m0_s0.safetensors",
                  "fashion/mlp_split/fashion_mlp_split_m1_s1.safetensors"),
    "mlp64_split": ("fashion/mlp64_split/fashion_mlp_split_m0_s6.safetensors",
                    "fashion/mlp64_split/fashion_mlp_split_m1_s7.safetensors"),
    "rn20w1_split": ("fashion/rn20w1_split/fashion_resnet20_w1_split_m0_s2.safetensors",
                     "fashion/rn20w1_split/fashion_resnet20_w1_split_m1_s3.safetensors"),
    "rn20w1_biased": ("fashion/rn20w1_biased/fashion_resnet20_w1_biased_m0_s4.safetensors",
                      "fashion/rn20w1_biased/fashion_resnet20_w1_biased_m1_s5.safetensors"),
}
VARIANTS = {
    "naive": ["--matching", "identity", "--fit", "none", "--bn", "keep"],
    "perm_avg": ["--matching", "weight", "--fit", "none", "--bn", "keep"],
    "partial": ["--fit", "none", "--bn", "keep"],
    "pleas": ["--fit", "original", "--bn", "fold"],
    "pleas_keep": ["--fit", "original", "--bn", "keep"],
    "sequential": ["--fit", "sequential"],
    "free": ["--fit", "sequential", "--data", str(MNIST)],
}
LABELS = {
    "naive": "naive weight averaging (BN re-est.)",
    "perm_avg": "permute + average, weight matching (BN re-est.)",
    "partial": "partial merge without LS (BN re-est.)",
    "pleas": "PLeaS, original-model inputs, BN folded",
    "pleas_keep": "PLeaS, original-model inputs, BN kept + re-est.",
    "sequential": "PLeaS `--fit sequential` (default)",
    "free": "PLeaS-free (MNIST merge data), sequential",
    "ensemble": "ensemble (both models)",
}


def run_merge(binary, pair, budget, extra):
    a, b = PAIRS[pair]
    with tempfile.TemporaryDirectory() as out:
        data = [] if "--data" in extra else ["--data", str(EVAL)]
        args = [str(binary), "merge", str(FIX / a), str(FIX / b), *data,
                "--budget", str(budget), "--eval", str(EVAL), "-o", out, "--json", *extra]
        t = time.time()
        p = subprocess.run(args, capture_output=True, text=True)
        secs = time.time() - t
        if p.returncode != 0:
            sys.exit(f"merge failed ({' '.join(args)}):\n{p.stderr}")
        done = json.loads(p.stdout.strip().splitlines()[-1])
        return done["eval"]["accuracy"], [h["accuracy"] for h in done["eval"]["heads"]], secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="mlp_split,rn20w1_split,rn20w1_biased")
    ap.add_argument("--budgets", default="1.0,1.2,1.5,2.0")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json")
    args = ap.parse_args()
    binary = Path(os.environ.get("PLEAS_BIN", ROOT / "target" / "release" / "pleas"))
    if not binary.exists():
        sys.exit("build first: cargo build --release -p pleas")
    budgets = [float(b) for b in args.budgets.split(",")]
    results = {}
    for pair in args.pairs.split(","):
        res = {}
        acc, heads, secs = run_merge(binary, pair, 2.0, ["--fit", "none", "--bn", "fold"])
        res["ensemble"] = {str(b): acc for b in budgets}
        print(f"{pair} ensemble {acc:.4f} {heads}", file=sys.stderr)
        for v in args.variants.split(","):
            res[v] = {}
            for b in budgets:
                acc, heads, secs = run_merge(binary, pair, b, VARIANTS[v])
                res[v][str(b)] = acc
                print(f"{pair} {v} {b}: {acc:.4f} {heads} ({secs:.1f} s)", file=sys.stderr)
        results[pair] = res
        print(f"\n#### `{pair}` (mean per-task accuracy)\n")
        print("| variant | " + " | ".join(f"{b:.1f}x" for b in budgets) + " |")
        print("| --- | " + " | ".join("---" for _ in budgets) + " |")
        for v in list(args.variants.split(",")) + ["ensemble"]:
            print(f"| {LABELS[v]} | " + " | ".join(f"{res[v][str(b)]:.3f}" for b in budgets) + " |")
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
