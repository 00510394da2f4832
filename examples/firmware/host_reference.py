#!/usr/bin/env python3
"""The firmware's merge on the host, through the `pleas` command, and the comparison.

    host_reference.py [--pleas CMD] [--budgets "1.2 ..."] [--ridge-toward average|zero]
                      [--merge-rows ::8] [--test-rows ::5] [--out DIR]
                      [--compare FIRMWARE_LOG] [--cnn]
                      [--cnn-budgets "1.0 1.2"] [--cnn-merge-rows ::20]

Writes the firmware's merge images (`x_match[MERGE_ROWS]`) and test images with labels
(`x_test[TEST_ROWS]`, `y_test[TEST_ROWS]`) of tests/fixtures/fashion/eval.safetensors to
safetensors files (gen_data.py --safetensors: the same rows the firmware embeds), then for
each budget runs

    pleas merge A B --data merge.safetensors --budget B --normalize x/255*2-1 \
        --ridge-toward T -o DIR/B
    pleas eval DIR/B/merged.safetensors --data test.safetensors --normalize x/255*2-1 --json

and prints the per-task accuracies (head a on classes 0-4, head b on classes 5-9):

    host accuracy budget 1.20: a 0.8880 b 0.9552 mean 0.9216 (888/1000, 955/1000)

With --compare, reads the firmware's output (the lines `accuracy budget B: a X b Y mean Z
(ca/na, cb/nb)` it prints) and exits with status 1 unless, at every budget, both sides scored
the same number of images per task and their accuracies agree to three decimals.

With --cnn, also runs `pleas eval` of each model of the CNN pair (tests/fixtures/fashion/
cnn_split) on the test images and, with --compare, requires the firmware's line `cnn accuracy:
a X b Y (ca/na, cb/nb)` to agree with it in the same way.

With --cnn-budgets (and --cnn), also merges the CNN pair on its merge images
(`x_match[CNN_MERGE_ROWS]`) at each budget with `pleas merge` (default settings: batch-norm
folded, two heads) and evaluates it with `pleas eval`; with --compare, the firmware's line
`cnn merge accuracy budget B: a X b Y (ca/na, cb/nb)` must agree with it in the same way.

`--pleas` is the command that runs the CLI (split on spaces); default: the binary
target/release/pleas if it exists, else `cargo run -q --release -p pleas --`.
Standard library only.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "fashion")
MODEL_A = os.path.join(FIXTURES, "mlp64_split", "fashion_mlp_split_m0_s6.safetensors")
MODEL_B = os.path.join(FIXTURES, "mlp64_split", "fashion_mlp_split_m1_s7.safetensors")
EVAL = os.path.join(FIXTURES, "eval.safetensors")
CNN_A = os.path.join(FIXTURES, "cnn_split", "fashion_cnn_split_m0_s8.safetensors")
CNN_B = os.path.join(FIXTURES, "cnn_split", "fashion_cnn_split_m1_s9.safetensors")
CNN_LINE = re.compile(r"cnn accuracy: a ([0-9.]+) b ([0-9.]+) \((\d+)/(\d+), (\d+)/(\d+)\)")
CNN_MERGE_LINE = re.compile(
    r"cnn merge accuracy budget ([0-9.]+): a ([0-9.]+) b ([0-9.]+) "
    r"\((\d+)/(\d+), (\d+)/(\d+)\)"
)
NORMALIZE = "x/255*2-1"
LINE = re.compile(
    r"accuracy budget ([0-9.]+): a ([0-9.]+) b ([0-9.]+) mean [0-9.]+ "
    r"\((\d+)/(\d+), (\d+)/(\d+)\)"
)


def run(cmd):
    try:
        return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"host_reference: {' '.join(cmd)}: {e}")


def gen(out, spec):
    run([sys.executable, os.path.join(HERE, "gen_data.py"), "--safetensors", out, spec])


def merge_and_eval(pleas, models, merge_file, test_file, budget, extra, merged):
    """`pleas merge` of `models` at `budget`, then `pleas eval`: (a, b, samples a, samples b)."""
    run(pleas + ["merge", *models, "--data", merge_file, "--budget", budget, "--normalize",
                 NORMALIZE, *extra, "-o", merged, "--quiet"])
    report = json.loads(run(pleas + ["eval", os.path.join(merged, "merged.safetensors"),
                                     "--data", test_file, "--normalize", NORMALIZE, "--json"]))
    heads = {h["name"]: h for h in report["heads"]}
    if sorted(heads) != ["a", "b"]:
        sys.exit(f"host_reference: expected heads a and b, got {sorted(heads)}")
    a, b = heads["a"], heads["b"]
    return a["accuracy"], b["accuracy"], a["samples"], b["samples"]


def counts(a, b, na, nb):
    return f"({round(a * na)}/{na}, {round(b * nb)}/{nb})"


def host_accuracies(pleas, budgets, ridge_toward, merge_rows, test_rows, out):
    merge_file = os.path.join(out, "merge.safetensors")
    test_file = os.path.join(out, "test.safetensors")
    gen(merge_file, f"data={EVAL}:x_match[{merge_rows}]")
    gen(test_file, f"data={EVAL}:x_test[{test_rows}],y_test[{test_rows}]")
    result = {}
    for budget in budgets:
        key = f"{float(budget):.2f}"
        r = merge_and_eval(pleas, [MODEL_A, MODEL_B], merge_file, test_file, budget,
                           ["--ridge-toward", ridge_toward], os.path.join(out, f"budget-{key}"))
        result[key] = r
        print(f"host accuracy budget {key}: a {r[0]:.4f} b {r[1]:.4f} "
              f"mean {(r[0] + r[1]) / 2:.4f} {counts(*r)}", flush=True)
    return result


def host_cnn_merges(pleas, budgets, merge_rows, out):
    """The CNN pair merged by `pleas merge` on its merge images at each budget, evaluated on
    the test images written by host_accuracies."""
    merge_file = os.path.join(out, "cnn_merge.safetensors")
    test_file = os.path.join(out, "test.safetensors")
    gen(merge_file, f"data={EVAL}:x_match[{merge_rows}]")
    result = {}
    for budget in budgets:
        key = f"{float(budget):.2f}"
        r = merge_and_eval(pleas, [CNN_A, CNN_B], merge_file, test_file, budget, [],
                           os.path.join(out, f"cnn-budget-{key}"))
        result[key] = r
        print(f"host cnn merge accuracy budget {key}: a {r[0]:.4f} b {r[1]:.4f} {counts(*r)}",
              flush=True)
    return result


def host_cnn_accuracies(pleas, out):
    """`pleas eval` of each CNN on the test images written by host_accuracies."""
    test_file = os.path.join(out, "test.safetensors")
    accs = []
    for model in (CNN_A, CNN_B):
        report = json.loads(run(pleas + ["eval", model, "--data", test_file, "--normalize",
                                         NORMALIZE, "--json"]))
        (head,) = report["heads"]
        accs += [head["accuracy"], head["samples"]]
    a, na, b, nb = accs
    print(f"host cnn accuracy: a {a:.4f} b {b:.4f} ({round(a * na)}/{na}, {round(b * nb)}/{nb})",
          flush=True)
    return a, b, na, nb


def device_cnn_accuracies(log):
    with open(log) as f:
        for line in f:
            m = CNN_LINE.match(line.strip())
            if m:
                ca, na, cb, nb = (int(g) for g in m.group(3, 4, 5, 6))
                return ca / na, cb / nb, na, nb
    return None


def same_to_three_decimals(device, host):
    (da, db, dna, dnb), (ha, hb, hna, hnb) = device, host
    return (dna, dnb) == (hna, hnb) and all(
        f"{d:.3f}" == f"{h:.3f}" for d, h in ((da, ha), (db, hb)))


def device_accuracies(log, line_re=LINE):
    result = {}
    with open(log) as f:
        for line in f:
            m = line_re.match(line.strip())
            if m:
                ca, na, cb, nb = (int(g) for g in m.group(4, 5, 6, 7))
                result[f"{float(m.group(1)):.2f}"] = (ca / na, cb / nb, na, nb)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pleas", default=None)
    p.add_argument("--budgets", default="1.2")
    p.add_argument("--ridge-toward", choices=["average", "zero"], default="average")
    p.add_argument("--merge-rows", default="::8")
    p.add_argument("--test-rows", default="::5")
    p.add_argument("--out", default=os.path.join(HERE, "build", "host"))
    p.add_argument("--compare", metavar="FIRMWARE_LOG")
    p.add_argument("--cnn", action="store_true")
    p.add_argument("--cnn-budgets", default="")
    p.add_argument("--cnn-merge-rows", default="::20")
    a = p.parse_args()
    if a.pleas:
        pleas = shlex.split(a.pleas)
    elif os.path.exists(os.path.join(ROOT, "target", "release", "pleas")):
        pleas = [os.path.join(ROOT, "target", "release", "pleas")]
    else:
        pleas = ["cargo", "run", "-q", "--release", "-p", "pleas", "--"]
    os.makedirs(a.out, exist_ok=True)
    budgets = a.budgets.split()
    host = host_accuracies(pleas, budgets, a.ridge_toward, a.merge_rows, a.test_rows, a.out)
    cnn = host_cnn_accuracies(pleas, a.out) if a.cnn else None
    cnn_budgets = a.cnn_budgets.split() if a.cnn else []
    cnn_merges = host_cnn_merges(pleas, cnn_budgets, a.cnn_merge_rows, a.out)
    if not a.compare:
        return
    device = device_accuracies(a.compare)
    failed = 0
    for key, (ha, hb, hna, hnb) in host.items():
        if key not in device:
            print(f"compare budget {key}: no accuracy line in {a.compare}")
            failed += 1
            continue
        da, db, dna, dnb = device[key]
        same = same_to_three_decimals(device[key], host[key])
        print(f"compare budget {key}: device a {da:.4f} b {db:.4f}, host a {ha:.4f} b {hb:.4f}: "
              f"{'equal to three decimals' if same else 'DIFFERENT'}")
        failed += not same
    if cnn is not None:
        dev = device_cnn_accuracies(a.compare)
        same = dev is not None and same_to_three_decimals(dev, cnn)
        shown = f"device a {dev[0]:.4f} b {dev[1]:.4f}" if dev else f"no cnn line in {a.compare}"
        print(f"compare cnn: {shown}, host a {cnn[0]:.4f} b {cnn[1]:.4f}: "
              f"{'equal to three decimals' if same else 'DIFFERENT'}")
        failed += not same
    device_cnn = device_accuracies(a.compare, CNN_MERGE_LINE)
    for key, h in cnn_merges.items():
        d = device_cnn.get(key)
        same = d is not None and same_to_three_decimals(d, h)
        shown = f"device a {d[0]:.4f} b {d[1]:.4f}" if d else f"no line in {a.compare}"
        print(f"compare cnn merge budget {key}: {shown}, host a {h[0]:.4f} b {h[1]:.4f}: "
              f"{'equal to three decimals' if same else 'DIFFERENT'}")
        failed += not same
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
