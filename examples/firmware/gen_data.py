#!/usr/bin/env python3
"""Writes tensors of safetensors files as a C header of const arrays (they go to flash).

    gen_data.py OUT.h PREFIX=FILE.safetensors[:NAME,NAME[ROWS],NAME[START:STOP:STEP]...] ...

Each selected tensor NAME of FILE becomes `static const T PREFIX_NAME[]` (dots and other
non-identifier characters become `_`) with `#define PREFIX_NAME_DIM<i>` for its shape; `T` is
`float` for F32 and `uint8_t` for U8. `NAME[ROWS]` keeps the first ROWS rows, `NAME[a:b:c]`
the rows of the Python slice `a:b:c` (e.g. every 8th of 2000 merge samples sorted by class:
`x_match[::8]`). Without a NAME list, every tensor is written. `ALIAS=NAME+NAME+...` writes
the F32 tensors listed one after the other as one array `PREFIX_ALIAS` (with
`#define PREFIX_ALIAS_LEN`): a network's parameters as one buffer, in layer order.

Example (the two fashion MLPs and 250 merge samples, 25 per class):

    gen_data.py build/generated/mlp64_split.h \
        a=tests/fixtures/fashion/mlp64_split/fashion_mlp_split_m0_s6.safetensors \
        b=tests/fixtures/fashion/mlp64_split/fashion_mlp_split_m1_s7.safetensors \
        'data=tests/fixtures/fashion/eval.safetensors:x_match[::8],y_match[::8]'

Options (before OUT):

    --shapes-only   write only the #define lines (shapes), no arrays: for host tools that
                    need the sizes (e.g. to plan buffers) without compiling the data
    --safetensors   write the selected tensors to OUT as a safetensors file instead (names
                    and dtypes kept, rows selected as above): the same samples for the host
                    pipeline (`pleas merge`, `pleas eval`)

Standard library only: the firmware build needs no Python packages.
"""

import json
import os
import re
import struct
import sys

DTYPES = {"F32": ("float", "<f", 4), "U8": ("uint8_t", "<B", 1)}


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return header, data


def parse_spec(spec):
    prefix, _, rest = spec.partition("=")
    if not prefix or not rest:
        sys.exit(f"bad argument {spec!r}: expected PREFIX=FILE[:NAME,...]")
    path, _, names = rest.partition(":")
    wanted = []
    for item in filter(None, names.split(",")):
        alias, eq, parts = item.partition("=")
        if eq:
            if not alias or not all(parts.split("+")):
                sys.exit(f"bad joined selection {item!r}: expected ALIAS=NAME+NAME+...")
            wanted.append((alias, parts.split("+")))
            continue
        m = re.fullmatch(r"([^\[\]]+)(?:\[([0-9:-]+)\])?", item)
        if not m:
            sys.exit(f"bad tensor selection {item!r}")
        rows = m.group(2)
        if rows is None:
            sel = None
        elif ":" in rows:
            parts = [int(p) if p else None for p in rows.split(":")]
            if len(parts) > 3:
                sys.exit(f"bad row slice {rows!r}")
            sel = slice(*parts)
        else:
            sel = slice(0, int(rows))
        wanted.append((m.group(1), sel))
    return prefix, path, wanted


def c_name(prefix, name):
    return re.sub(r"\W", "_", f"{prefix}_{name}")


def c_value(ctype, v):
    if ctype == "float":
        # Nine significant digits round-trip every f32.
        return f"{v:.9g}f" if v == v and abs(v) != float("inf") else "0.0f /* non-finite */"
    return str(v)


def select(prefix, header, data, name, rows):
    """The dtype, shape and raw bytes of tensor `name` with the rows `rows` (a slice)."""
    if name not in header:
        sys.exit(f"{prefix}: no tensor {name!r} (has {', '.join(sorted(header))})")
    info = header[name]
    if info["dtype"] not in DTYPES:
        sys.exit(f"{prefix}: tensor {name!r} has dtype {info['dtype']}, not F32 or U8")
    size = DTYPES[info["dtype"]][2]
    shape = list(info["shape"])
    start, end = info["data_offsets"]
    raw = data[start:end]
    if rows is not None:
        if not shape or (rows.stop is not None and rows.stop > shape[0]):
            sys.exit(f"{prefix}: {name!r} has shape {shape}, cannot take rows {rows}")
        row_bytes = len(raw) // shape[0] if shape[0] else 0
        keep = range(shape[0])[rows]
        raw = b"".join(raw[r * row_bytes : (r + 1) * row_bytes] for r in keep)
        shape[0] = len(keep)
    assert len(raw) % size == 0
    return info["dtype"], shape, raw


def join(prefix, header, data, names):
    """The F32 tensors `names` one after the other, as one flat tensor."""
    raw = b""
    for name in names:
        dtype, _, part = select(prefix, header, data, name, None)
        if dtype != "F32":
            sys.exit(f"{prefix}: joined tensor {name!r} has dtype {dtype}, not F32")
        raw += part
    return "F32", [len(raw) // 4], raw


def emit(out, prefix, header, data, name, rows, shapes_only=False):
    if isinstance(rows, list):
        dtype, shape, raw = join(prefix, header, data, rows)
        out.append(f"#define {c_name(prefix, name).upper()}_LEN {shape[0]}")
    else:
        dtype, shape, raw = select(prefix, header, data, name, rows)
    ctype, fmt, _ = DTYPES[dtype]
    values = [v for (v,) in struct.iter_unpack(fmt, raw)]
    ident = c_name(prefix, name)
    out.append(f"/* {name}: {dtype} {shape} */")
    for i, d in enumerate(shape):
        out.append(f"#define {ident.upper()}_DIM{i} {d}")
    if shapes_only:
        out.append("")
        return
    out.append(f"static const {ctype} {ident}[{max(len(values), 1)}] = {{")
    per_line = 8 if ctype == "float" else 20
    for i in range(0, len(values), per_line):
        out.append("    " + ", ".join(c_value(ctype, v) for v in values[i : i + per_line]) + ",")
    out.append("};")
    out.append("")


def write_safetensors(target, specs):
    tensors = {}
    for spec in specs:
        prefix, path, wanted = parse_spec(spec)
        header, data = read_safetensors(path)
        for name, rows in wanted or [(n, None) for n in sorted(header)]:
            if isinstance(rows, list):
                sys.exit(f"joined selection {name!r}: not for --safetensors")
            if name in tensors:
                sys.exit(f"tensor {name!r} selected twice")
            tensors[name] = select(prefix, header, data, name, rows)
    meta, blob = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        offsets = [len(blob), len(blob) + len(raw)]
        meta[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        blob += raw
    head = json.dumps(meta, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with open(target, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + blob)


def main(argv):
    flags = [a for a in argv[1:] if a.startswith("--")]
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) < 2 or any(f not in ("--shapes-only", "--safetensors") for f in flags):
        sys.exit(__doc__)
    if "--safetensors" in flags:
        write_safetensors(args[0], args[1:])
        return
    shapes_only = "--shapes-only" in flags
    argv = [argv[0]] + args
    target = argv[1]
    guard = re.sub(r"\W", "_", target.rsplit("/", 1)[-1]).upper()
    out = [
        f"/* Generated by examples/firmware/gen_data.py from: {' '.join(argv[2:])} */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "#include <stdint.h>",
        "",
    ]
    for spec in argv[2:]:
        prefix, path, wanted = parse_spec(spec)
        header, data = read_safetensors(path)
        for name, rows in wanted or [(n, None) for n in sorted(header)]:
            emit(out, prefix, header, data, name, rows, shapes_only)
    out.append(f"#endif /* {guard} */")
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with open(target, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv)
