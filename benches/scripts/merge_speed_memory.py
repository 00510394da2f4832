#!/usr/bin/env python3
"""Wall time and peak memory of `pleas merge` (issue 5 acceptance: ResNet-20 width-1 pair,
budget 1.2, default settings; peak RSS on 2000 vs 20000 merge samples).

    cargo build --release -p pleas
    python3 benches/scripts/merge_speed_memory.py [--runs 3] [--sizes 2000,20000] [-- extra args]

The 20000-sample file is built from the fixture's x_match and x_test (22000 distinct images
would need more data than is bundled: the 12000 bundled images are cycled). Peak RSS is read
from the child's rusage (ru_maxrss), wall time from a monotonic clock; medians over --runs.
"""

import argparse
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "fashion"
A = FIX / "rn20w1_split" / "fashion_resnet20_w1_split_m0_s2.safetensors"
B = FIX / "rn20w1_split" / "fashion_resnet20_w1_split_m1_s3.safetensors"
EVAL = FIX / "eval.safetensors"


def read_u8_tensors(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = (v["shape"], body[s:e])
    return out


def write_u8(path, name, shape, data):
    header = json.dumps({name: {"dtype": "U8", "shape": shape, "data_offsets": [0, len(data)]}})
    header += " " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + data)


def make_data(n, directory):
    t = read_u8_tensors(EVAL)
    pool = t["x_match"][1] + t["x_test"][1]
    per = 784
    total = len(pool) // per
    data = b"".join(pool[(i % total) * per:(i % total + 1) * per] for i in range(n))
    path = Path(directory) / f"match_{n}.safetensors"
    write_u8(path, "x_match", [n, per], data)
    return path


def run(binary, data, extra):
    with tempfile.TemporaryDirectory() as out:
        args = [str(binary), "merge", str(A), str(B), "--data", str(data), "--budget", "1.2",
                "-o", out, "--quiet", *extra]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.monotonic()
        p = subprocess.run(args, capture_output=True, text=True)
        secs = time.monotonic() - t
        if p.returncode != 0:
            sys.exit(p.stderr)
        # ru_maxrss of children is the max over all children so far: run each size in its own
        # python child to keep them apart.
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return secs, rss, before


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    binary = Path(os.environ.get("PLEAS_BIN", ROOT / "target" / "release" / "pleas"))
    if args.child:
        secs, rss, _ = run(binary, args.child, args.extra)
        print(json.dumps({"secs": secs, "rss_kib": rss}))
        return
    with tempfile.TemporaryDirectory() as d:
        for n in [int(s) for s in args.sizes.split(",")]:
            data = make_data(n, d)
            times, rsss = [], []
            for _ in range(args.runs):
                p = subprocess.run([sys.executable, __file__, "--child", str(data), "--",
                                    *args.extra], capture_output=True, text=True)
                if p.returncode != 0:
                    sys.exit(p.stderr or p.stdout)
                r = json.loads(p.stdout)
                times.append(r["secs"])
                rsss.append(r["rss_kib"])
            print(f"{n} samples: wall {statistics.median(times):.2f} s "
                  f"(runs {', '.join(f'{t:.2f}' for t in times)}), peak RSS "
                  f"{statistics.median(rsss) / 1024:.1f} MiB "
                  f"(runs {', '.join(f'{r / 1024:.1f}' for r in rsss)})")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
