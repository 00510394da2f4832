"""NumPy reference of the CIFAR-style ResNet-20 family (im2col + matmul), for benches and checks.

Reads PyTorch-named safetensors weights (F32) and runs the same network as `pleas`'s forward
pass: 3x3 stem + BN + ReLU, BasicBlocks with optional 1x1 projection shortcuts, global average
pool, linear head. BN is eval-mode, either applied as is or folded into the preceding conv.
"""
import json
import struct

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    dt = {"F32": np.float32, "U8": np.uint8, "I64": np.int64, "F16": np.float16}
    out = {}
    for k, v in header.items():
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(data[b:e], dtype=dt[v["dtype"]]).reshape(v["shape"])
    return out, meta


def write_safetensors(path, tensors, meta=None):
    header = {}
    if meta:
        header["__metadata__"] = meta
    off = 0
    blobs = []
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        name = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8"}[a.dtype]
        b = a.tobytes()
        header[k] = {"dtype": name, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def random_resnet20(width, in_ch=1, classes=10, seed=0):
    """Kaiming-like random weights with non-trivial BN statistics."""
    rng = np.random.default_rng(seed)
    w = {}

    def conv(name, o, i, k):
        w[name + ".weight"] = (rng.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))).astype(np.float32)

    def bn(name, c):
        w[name + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        w[name + ".bias"] = (rng.standard_normal(c) * 0.1).astype(np.float32)
        w[name + ".running_mean"] = (rng.standard_normal(c) * 0.1).astype(np.float32)
        w[name + ".running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)

    c = 16 * width
    conv("conv1", c, in_ch, 3)
    bn("bn1", c)
    k = 0
    for stage, out in enumerate([16 * width, 32 * width, 64 * width]):
        for j in range(3):
            p = f"layers.{k}"
            conv(p + ".conv1", out, c, 3)
            bn(p + ".bn1", out)
            conv(p + ".conv2", out, out, 3)
            bn(p + ".bn2", out)
            if stage > 0 and j == 0:
                conv(p + ".shortcut.0", out, c, 1)
                bn(p + ".shortcut.1", out)
            c = out
            k += 1
    w["head.weight"] = (rng.standard_normal((classes, c)) / np.sqrt(c)).astype(np.float32)
    w["head.bias"] = (rng.standard_normal(classes) * 0.1).astype(np.float32)
    return w


def im2col(x, k, stride, pad):
    n, c, h, w = x.shape
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    s = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, c, k, k), (s[0], s[2] * stride, s[3] * stride, s[1], s[2], s[3])
    )
    return view.reshape(n * oh * ow, c * k * k), oh, ow


class ResNet20:
    def __init__(self, weights, fold_bn=True, dtype=np.float32):
        self.w = {k: v.astype(dtype) for k, v in weights.items()}
        self.fold = fold_bn
        self.dtype = dtype
        self.layers = {}
        for name in [k[: -len(".weight")] for k in weights if k.endswith(".weight") and weights[k].ndim == 4]:
            bn = name.replace("conv", "bn") if "conv" in name else name[:-1] + "1"
            if name == "conv1":
                bn = "bn1"
            self.layers[name] = self._prep(name, bn)

    def _prep(self, conv, bn):
        W = self.w[conv + ".weight"]
        o = W.shape[0]
        g, b = self.w[bn + ".weight"], self.w[bn + ".bias"]
        m, v = self.w[bn + ".running_mean"], self.w[bn + ".running_var"]
        scale = g / np.sqrt(v + self.dtype(1e-5))
        shift = b - m * scale
        if self.fold:
            return (W * scale[:, None, None, None]).reshape(o, -1).T.copy(), shift, None
        return W.reshape(o, -1).T.copy(), shift, scale

    def conv_bn(self, x, name, stride, pad):
        Wt, shift, scale = self.layers[name]
        k = self.w[name + ".weight"].shape[-1]
        cols, oh, ow = im2col(x, k, stride, pad)
        y = cols @ Wt
        if scale is not None:
            y = y * scale
        y = y + shift
        n = x.shape[0]
        return y.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)

    def __call__(self, x):
        x = x.astype(self.dtype)
        x = np.maximum(self.conv_bn(x, "conv1", 1, 1), 0)
        k = 0
        while f"layers.{k}.conv1.weight" in self.w:
            p = f"layers.{k}"
            short = f"{p}.shortcut.0.weight" in self.w
            s = 2 if short and k > 0 else 1
            y = np.maximum(self.conv_bn(x, p + ".conv1", s, 1), 0)
            y = self.conv_bn(y, p + ".conv2", 1, 1)
            r = self.conv_bn(x, p + ".shortcut.0", s, 0) if short else x
            x = np.maximum(y + r, 0)
            k += 1
        x = x.mean(axis=(2, 3))
        return x @ self.w["head.weight"].T + self.w["head.bias"]
