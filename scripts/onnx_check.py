#!/usr/bin/env python3
"""Checks `pleas export` against ONNX Runtime on the fixture pairs.

For each pair and budget: `pleas merge` (or an existing merged model), `pleas export` in each
block mode, `onnx.checker.check_model(full_check=True)`, the multiply-adds counted from the
exported graph (shapes by ONNX shape inference, independent of pleas) against `report.json`'s
FLOP ratio, then ONNX Runtime on the fixture's test images against `pleas eval --json
--logits`: per-head accuracy equal to 4 decimals (the sample counts must be equal) and logits
within LOGIT_REL_TOL of the logit scale. With --originals the unmerged models are checked too.

Needs numpy, onnx and onnxruntime (pinned in scripts/onnx_requirements.txt). Prints one
Markdown table row per check and exits 1 if any check fails.

    python3 scripts/onnx_check.py --pleas target/release/pleas --pair rn20w1_split --budget 1.2
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

# Largest |logit_onnx - logit_pleas| allowed, relative to the head's logit scale (the largest
# |logit| pleas computes for it on the data). Both run the same float32 arithmetic in a
# different summation order (im2col + blocked GEMM vs ONNX Runtime's MLAS kernels, BN folded
# by ORT's optimiser or applied as written): each of ~20 layers adds a few f32 roundings of
# its dot products' magnitude (k * 2^-24 with k up to 576), and the measured worst is ~1e-6;
# 1e-4 leaves two orders of margin without hiding a wrong weight (which moves logits by O(1)).
LOGIT_REL_TOL = 1e-4

# The split export's multiply-adds reproduce the report's ratio exactly (integer counts);
# the tolerance only covers the ratio's printing as a JSON double.
RATIO_TOL = 1e-12

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "fashion")
PAIRS = {
    "rn20w1_split": ("fashion_resnet20_w1_split_m0_s2", "fashion_resnet20_w1_split_m1_s3"),
    "rn20w1_biased": ("fashion_resnet20_w1_biased_m0_s4", "fashion_resnet20_w1_biased_m1_s5"),
    "mlp_split": ("fashion_mlp_split_m0_s0", "fashion_mlp_split_m1_s1"),
    "mlp64_split": ("fashion_mlp_split_m0_s6", "fashion_mlp_split_m1_s7"),
}
DTYPES = {"U8": np.uint8, "I64": np.int64, "F32": np.float32, "F64": np.float64, "I32": np.int32}


def read_safetensors(path):
    """Every tensor of a safetensors file as a numpy array (the header parsed by hand)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


def normalise(x, rule):
    """The model's `normalize` rule in float32, as pleas applies it."""
    x = x.astype(np.float32)
    rule = rule.replace(" ", "")
    if rule in ("none", "x", "identity"):
        return x
    if rule == "x/255":
        return x / np.float32(255)
    if rule in ("x/255*2-1", "2*x/255-1"):
        return x / np.float32(255) * np.float32(2) - np.float32(1)
    mean, std = (np.float32(v) for v in rule.split(","))
    return (x - mean) / std


def pleas(binary, *args):
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pleas {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def graph_macs(model):
    """Multiply-adds per sample of Conv and Gemm nodes, shapes from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    shapes = {}
    for v in list(g.value_info) + list(g.output) + list(g.input):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    inits = {t.name: list(t.dims) for t in g.initializer}
    macs = 0
    for node in g.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            w = inits[node.input[1]]
            out = shapes[node.output[0]]
            macs += int(np.prod(out[1:])) * (w[1] // max(group, 1)) * int(np.prod(w[2:]))
        elif node.op_type == "Gemm":
            w = inits[node.input[1]]
            macs += w[0] * w[1]
        elif node.op_type in ("MatMul", "ConvTranspose", "Einsum"):
            raise RuntimeError(f"unexpected {node.op_type} node")
    return macs


def run_onnx(path, x, batch=1000):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else -1 for d in inp.shape]
    x = x.reshape([-1] + shape[1:])
    names = [o.name for o in sess.get_outputs()]
    parts = [sess.run(None, {inp.name: x[s : s + batch]}) for s in range(0, len(x), batch)]
    return {n: np.concatenate([p[i] for p in parts]) for i, n in enumerate(names)}


def head_accuracy(logits, labels, classes):
    """Accuracy over the samples whose label is among `classes` (first maximal unit wins)."""
    units = {c: i for i, c in enumerate(classes)}
    keep = np.array([int(l) in units for l in labels])
    target = np.array([units[int(l)] for l in labels[keep]])
    pred = np.argmax(logits[keep], axis=1)
    return float(np.mean(pred == target)), int(keep.sum())


_EVALS = {}


def pleas_eval(binary, model, data, work):
    """`pleas eval --json --logits` of a model (once per model)."""
    if model not in _EVALS:
        logits_path = os.path.join(work, f"pleas_logits_{len(_EVALS)}.safetensors")
        ev = json.loads(pleas(binary, "eval", model, "--data", data, "--json", "--logits", logits_path))
        _EVALS[model] = (ev, read_safetensors(logits_path))
    return _EVALS[model]


def check_export(binary, model, onnx_path, blocks, data, report_ratio, original_macs, work):
    """One exported model against pleas eval; returns the table row and failures."""
    pleas(binary, "export", model, "-o", onnx_path, "--blocks", blocks, "--quiet")
    proto = onnx.load(onnx_path)
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    ev, ref = pleas_eval(binary, model, data, work)
    tensors = read_safetensors(data)
    x = normalise(tensors["x_test"], meta["normalize"])
    got = run_onnx(onnx_path, x)
    failures, accs, errs = [], [], []
    for h in ev["heads"]:
        key = "classes" if len(ev["heads"]) == 1 else f"classes.{h['name']}"
        if json.loads(meta[key]) != h["classes"]:
            failures.append(f"metadata {key} {meta[key]} != {h['classes']}")
        acc, n = head_accuracy(got[h["name"]], tensors["y_test"], h["classes"])
        if n != h["samples"] or round(acc, 4) != round(h["accuracy"], 4):
            failures.append(f"head {h['name']}: onnx {acc:.4f} ({n}) vs pleas {h['accuracy']:.4f} ({h['samples']})")
        scale = float(np.max(np.abs(ref[h["name"]])))
        err = float(np.max(np.abs(got[h["name"]] - ref[h["name"]]))) / scale
        if not err <= LOGIT_REL_TOL:
            failures.append(f"head {h['name']}: logit error {err:.2e} of scale > {LOGIT_REL_TOL}")
        accs.append(f"{h['name']} {acc:.4f}/{h['accuracy']:.4f}")
        errs.append(err)
    macs = graph_macs(proto)
    ratio = macs / original_macs
    if blocks == "split" and report_ratio is not None and abs(ratio - report_ratio) > RATIO_TOL:
        failures.append(f"MAC ratio {ratio:.6f} != report {report_ratio:.6f}")
    return {
        "accuracy": ", ".join(accs),
        "logit_err": max(errs),
        "macs": macs,
        "ratio": ratio,
        "nodes": len(proto.graph.node),
        "failures": failures,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pleas", required=True, help="the pleas binary")
    ap.add_argument("--pair", action="append", choices=sorted(PAIRS), help="default: all")
    ap.add_argument("--budget", action="append", type=float, help="default: 1.0 1.2 1.5")
    ap.add_argument("--blocks", action="append", choices=["split", "dense"], help="default: both")
    ap.add_argument("--originals", action="store_true", help="also export the unmerged models")
    ap.add_argument("--work", help="working directory (default: a temporary one, removed)")
    ap.add_argument("--json", help="write the rows as JSON here")
    a = ap.parse_args()
    binary = os.path.abspath(a.pleas)
    data = os.path.join(FIXTURES, "eval.safetensors")
    work = a.work or tempfile.mkdtemp(prefix="pleas-onnx-check-")
    os.makedirs(work, exist_ok=True)
    rows, failed = [], 0
    print("| pair | model | blocks | accuracy onnx/pleas per head | max logit error (of scale) | MACs | MAC ratio | report ratio | nodes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def emit(pair, what, blocks, r, report_ratio):
        nonlocal failed
        rep = "" if report_ratio is None else f"{report_ratio:.6f}"
        print(f"| {pair} | {what} | {blocks} | {r['accuracy']} | {r['logit_err']:.1e} | {r['macs']} | {r['ratio']:.6f} | {rep} | {r['nodes']} |", flush=True)
        for f in r["failures"]:
            print(f"FAIL {pair} {what} {blocks}: {f}", flush=True)
        failed += bool(r["failures"])
        rows.append({"pair": pair, "model": what, "blocks": blocks, "report_ratio": report_ratio, **r})

    try:
        for pair in a.pair or sorted(PAIRS):
            names = PAIRS[pair]
            models = [os.path.join(FIXTURES, pair, f"{n}.safetensors") for n in names]
            original = os.path.join(work, f"{pair}_a.onnx")
            pleas(binary, "export", models[0], "-o", original, "--quiet")
            original_macs = graph_macs(onnx.load(original))
            if a.originals:
                for k, m in enumerate(models):
                    r = check_export(binary, m, os.path.join(work, f"{pair}_orig{k}.onnx"), "split", data, 1.0, original_macs, work)
                    emit(pair, f"original {'ab'[k]}", "split", r, 1.0)
            for budget in a.budget or [1.0, 1.2, 1.5]:
                out = os.path.join(work, f"{pair}_{budget}")
                shutil.rmtree(out, ignore_errors=True)
                pleas(binary, "merge", *models, "--data", data, "--budget", str(budget), "-o", out, "--quiet")
                with open(os.path.join(out, "report.json")) as f:
                    report_ratio = json.load(f)["flop_ratio"]
                merged = os.path.join(out, "merged.safetensors")
                for blocks in a.blocks or ["split", "dense"]:
                    r = check_export(binary, merged, os.path.join(out, f"merged_{blocks}.onnx"), blocks, data, report_ratio, original_macs, work)
                    emit(pair, f"merged {budget}", blocks, r, report_ratio)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
