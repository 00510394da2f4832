"""PyTorch agrees with `pleas eval` on exported models.

For each model: `pleas export MODEL -o OUT/NAME.pt` (the dense state_dict and its module file),
`pleas eval MODEL --json`; then in PyTorch: build the module from the exported `.py`,
`load_state_dict(..., strict=True)`, evaluate on the same labelled data with the normalisation
the module names, and compare every head's accuracy with pleas' to 4 decimals.

    python3 scripts/torch_check.py --pleas target/release/pleas --data tests/fixtures/fashion/eval.safetensors MODEL...
    python3 scripts/torch_check.py --pleas target/release/pleas --fixture-pairs [--budgets 1.0,1.2,1.5]

`--fixture-pairs` first merges the bundled pairs (rn20w1_split, rn20w1_biased, mlp_split) at
each budget with `pleas merge` into a temporary directory. Needs torch, numpy and safetensors;
exits 1 if any head differs, 2 on an error.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
PAIRS = {
    "rn20w1_split": "fashion/rn20w1_split/fashion_resnet20_w1_split_m{}_s{}.safetensors",
    "rn20w1_biased": "fashion/rn20w1_biased/fashion_resnet20_w1_biased_m{}_s{}.safetensors",
    "mlp_split": "fashion/mlp_split/fashion_mlp_split_m{}_s{}.safetensors",
}
SEEDS = {"rn20w1_split": (2, 3), "rn20w1_biased": (4, 5), "mlp_split": (0, 1)}


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def normalise(x, rule):
    x = x.astype(np.float32)
    if rule == "x/255*2-1":
        return x / 255 * 2 - 1
    if rule == "x/255":
        return x / 255
    if rule == "none":
        return x
    mean, std = (float(v) for v in rule.split(","))
    return (x - mean) / std


def load_module(py):
    spec = importlib.util.spec_from_file_location("exported", py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def torch_accuracies(pt, data):
    mod = load_module(os.path.splitext(pt)[0] + ".py")
    model = mod.Model().eval()
    model.load_state_dict(torch.load(pt, weights_only=True), strict=True)
    d = load_file(data)
    y = d["y_test"].astype(np.int64)
    x = normalise(d["x_test"], mod.NORMALIZE).reshape([-1] + list(mod.INPUT_SHAPE))
    outs = {}
    with torch.no_grad():
        for i in range(0, len(x), 500):
            o = model(torch.from_numpy(x[i : i + 500]))
            o = o if isinstance(o, dict) else {mod.OUTPUTS[0][0]: o}
            for k, v in o.items():
                outs.setdefault(k, []).append(v)
    acc = {}
    for name, classes in mod.HEADS.items():
        logits = torch.cat(outs[name]).numpy()
        unit = {c: j for j, c in enumerate(classes)}
        mask = np.isin(y, classes)
        want = np.array([unit[c] for c in y[mask]])
        acc[name] = float((logits[mask].argmax(axis=1) == want).mean())
    return acc


def check(pleas, model, data, out_dir, label):
    pt = os.path.join(out_dir, "".join(c if c.isalnum() else "_" for c in label) + ".pt")
    run([pleas, "export", model, "-o", pt])
    ev = json.loads(run([pleas, "eval", model, "--data", data, "--json"]))
    mine = {h["name"]: h["accuracy"] for h in ev["heads"]}
    theirs = torch_accuracies(pt, data)
    ok = True
    for head, a in mine.items():
        t = theirs[head]
        same = round(a, 4) == round(t, 4)
        ok &= same
        print(f"| {label} | {head} | {a:.4f} | {t:.4f} | {'yes' if same else 'NO'} |")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pleas", required=True)
    ap.add_argument("--data", default=os.path.join(FIXTURES, "fashion", "eval.safetensors"))
    ap.add_argument("--fixture-pairs", action="store_true")
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--budgets", default="1.0,1.2,1.5")
    ap.add_argument("models", nargs="*")
    a = ap.parse_args()
    ok = True
    print("| model | head | pleas eval | torch | equal to 4 decimals |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.models:
            label = os.path.basename(os.path.dirname(os.path.abspath(m))) + "/" + os.path.basename(m)
            ok &= check(a.pleas, m, a.data, tmp, label)
        if a.fixture_pairs:
            for pair in a.pairs.split(","):
                s0, s1 = SEEDS[pair]
                ma = os.path.join(FIXTURES, PAIRS[pair].format(0, s0))
                mb = os.path.join(FIXTURES, PAIRS[pair].format(1, s1))
                for b in a.budgets.split(","):
                    out = os.path.join(tmp, f"{pair}_{b}")
                    run([a.pleas, "merge", ma, mb, "--data", a.data, "--budget", b,
                         "-o", out, "--quiet"])
                    merged = os.path.join(out, "merged.safetensors")
                    ok &= check(a.pleas, merged, a.data, tmp, f"{pair} @ {b}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
