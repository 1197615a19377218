"""How much faster MindSpore's CPU convolutions would run on oneDNN's blocked layout (issue 9).

MindSpore 2.10's CPU Conv2D hands oneDNN plain NCHW memory, for which oneDNN picks im2col + GEMM;
PyTorch lets oneDNN choose an 8-channel blocked layout and its direct AVX2 kernel (docs/performance.md,
"What is still slow"). This script measures the difference inside a MindSpore graph: a custom op
(`ops.Custom`, func_type "aot", `benchmarks/native/blocked_conv_op.cpp`) runs the same convolution through
MindSpore's own libdnnl.so.3 with the format left to oneDNN and reorders at its edges, and is timed beside
`nn.Conv2d` on single layers and on a VGG16 trunk (VIGOR's, without its SAFA head), with the outputs
compared, for inference and for a training step's gradients.

    python benchmarks/blocked_conv.py                     # batch 8, 64 px, 2 threads, 15 rounds
    python benchmarks/blocked_conv.py --batch 16 --size 112 --rounds 9 --parts train

Needs g++ and oneDNN's headers: the script downloads the `onednn-devel` wheel (headers only, about
200 kB; `pip download --no-deps`) into ~/.cache/geoloc/bench and compiles the op there. The op is a
measurement, not part of geoloc: it covers stride-1 'same' convolutions, forward and backward.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "native" / "blocked_conv_op.cpp"
HEADERS_WHEEL = "onednn-devel==2026.1.0"
#: MindSpore's oneDNN is built with the threadpool runtime (dnnl_version()->cpu_runtime)
THREADPOOL_RUNTIME = 8
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class Unbuildable(RuntimeError):
    """The op cannot be built here (no compiler, no headers, another oneDNN build); the message says why."""


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


def mindspore_dnnl() -> Path:
    import mindspore

    lib = Path(mindspore.__file__).parent / "lib" / "libdnnl.so.3"
    if not lib.is_file():
        raise Unbuildable(f"{lib}: MindSpore's oneDNN library not found")
    dnnl = ctypes.CDLL(str(lib))
    dnnl.dnnl_version.restype = ctypes.POINTER(_Version)
    v = dnnl.dnnl_version().contents
    if v.major != 3 or v.cpu_runtime != THREADPOOL_RUNTIME:
        raise Unbuildable(f"MindSpore's oneDNN is {v.major}.{v.minor}.{v.patch} with CPU runtime {v.cpu_runtime}; "
                          "the op expects oneDNN 3.x built with the threadpool runtime (8)")
    return lib


def headers(cache: Path) -> Path:
    """oneDNN's headers from the onednn-devel wheel (unpacked with geoloc's safe extraction), with their
    config set to a CPU-only threadpool build like MindSpore's."""
    from geocli.data.archive import extract
    from geocli.errors import GeolocError

    unpacked = cache / "onednn-devel"
    found = sorted(unpacked.glob("*.data/data/include"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", HEADERS_WHEEL, "-d",
                              str(cache)], capture_output=True, text=True)
        if got.returncode != 0:
            raise Unbuildable(f"pip download {HEADERS_WHEEL} failed: {got.stderr.strip()[-300:]}")
        wheel = next(cache.glob("onednn_devel-*.whl"))
        try:
            extract(wheel, unpacked)
        except GeolocError as exc:
            raise Unbuildable(str(exc)) from None
        found = sorted(unpacked.glob("*.data/data/include"))
        if not found:
            raise Unbuildable(f"{wheel}: no include folder inside")
    config = found[0] / "oneapi" / "dnnl" / "dnnl_config.h"
    text = config.read_text()  # set every time: the edit is idempotent, and an interrupted run is mended
    for name, value in (("DNNL_CPU_THREADING_RUNTIME", "DNNL_RUNTIME_THREADPOOL"),
                        ("DNNL_CPU_RUNTIME", "DNNL_RUNTIME_THREADPOOL"),
                        ("DNNL_GPU_RUNTIME", "DNNL_RUNTIME_NONE"), ("DNNL_GPU_VENDOR", "DNNL_VENDOR_NONE")):
        text = re.sub(rf"^#define {name} \S+$", f"#define {name} {value}", text, flags=re.M)
    config.write_text(re.sub(r"^#define DNNL_WITH_SYCL$", "/* #undef DNNL_WITH_SYCL */", text, flags=re.M))
    return found[0]


def build(cache: Path, lib: Path) -> Path:
    if shutil.which("g++") is None:
        raise Unbuildable("g++ not found: install a C++ compiler (Debian: apt install g++)")
    out = cache / "blocked_conv_op.so"
    if not out.is_file() or out.stat().st_mtime < SOURCE.stat().st_mtime:
        cmd = ["g++", "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{headers(cache)}", str(SOURCE), "-o", str(out),
               str(lib), f"-Wl,-rpath,{lib.parent}", "-pthread"]
        got = subprocess.run(cmd, capture_output=True, text=True)
        if got.returncode != 0:
            raise Unbuildable(f"compiling {SOURCE.name} failed: {got.stderr.strip()[-500:]}")
    return out


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geoloc" / "bench" / "blocked-conv"


def library(cache: Path = None) -> Path:
    """The compiled op (built on first use); raises :class:`Unbuildable`."""
    return build(cache or default_cache(), mindspore_dnnl())


def blocked_conv_cell(so: Path):
    """The Cell class running ``nn.Conv2d``'s parameters through the custom ops (forward and gradients)."""
    from mindspore import nn, ops

    backward_data = ops.Custom(f"{so}:ConvSameBwdData", out_shape=lambda dy, w: (dy[0], w[1], dy[2], dy[3]),
                               out_dtype=lambda dy, w: dy, func_type="aot")
    backward_weights = ops.Custom(f"{so}:ConvSameBwdWeights", out_shape=lambda x, dy, w: (w, [w[0]]),
                                  out_dtype=lambda x, dy, w: (x, x), func_type="aot")

    def bprop(x, w, b, out, dout):
        dw, db = backward_weights(x, dout, w)
        return backward_data(dout, w), dw, db

    class BlockedConv(nn.Cell):
        def __init__(self, conv: nn.Conv2d):
            super().__init__()
            import mindspore as ms

            self.weight = conv.weight
            self.bias = conv.bias if conv.bias is not None else ms.Tensor(np.zeros(conv.out_channels, np.float32))
            self.op = ops.Custom(f"{so}:ConvSameFwd", out_shape=lambda x, w, b: (x[0], w[0], x[2], x[3]),
                                 out_dtype=lambda x, w, b: x, func_type="aot", bprop=bprop)

        def construct(self, x):
            return self.op(x, self.weight, self.bias)

    return BlockedConv


def covered(conv) -> bool:
    """What the op computes: an odd square kernel, stride 1, no dilation, one group, 'same' padding (or
    the equal symmetric 'pad'), float32."""
    k = conv.kernel_size
    k = (k, k) if isinstance(k, int) else tuple(k)
    stride = conv.stride if isinstance(conv.stride, (tuple, list)) else (conv.stride,)
    dilation = conv.dilation if isinstance(conv.dilation, (tuple, list)) else (conv.dilation,)
    padding = conv.padding if isinstance(conv.padding, (tuple, list)) else (conv.padding,) * 4
    same = conv.pad_mode == "same" or (conv.pad_mode == "pad" and set(padding) == {(k[0] - 1) // 2})
    return (k[0] == k[1] and k[0] % 2 == 1 and set(stride) == {1} and set(dilation) == {1} and conv.group == 1
            and same)


def swap_convs(network, so: Path) -> int:
    """Replace every ``nn.Conv2d`` of ``network`` that :func:`covered` accepts by the custom ops (the same
    Parameter objects); returns how many were replaced."""
    from mindspore import nn

    cell_class = blocked_conv_cell(so)
    swapped = 0
    for _, parent in list(network.cells_and_names()):
        for key, child in list(parent.name_cells().items()):
            if isinstance(child, nn.Conv2d) and covered(child):
                # into _cells directly: setattr and SequentialCell.__setitem__ rename the shared Parameters
                parent._cells[key] = cell_class(child)
                swapped += 1
        if isinstance(parent, nn.SequentialCell):
            parent.cell_list = list(parent._cells.values())  # what its construct runs
    return swapped


def networks(so: Path, batch: int, size: int):
    """(name, plain, blocked, input) cases: the blocked network is the plain one rebuilt and passed through
    :func:`swap_convs`, with the plain one's weights."""
    import mindspore as ms
    from mindspore import nn

    def trunk(layers_cfg, cin):
        ms.set_seed(0)
        layers = []
        for v in layers_cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers += [nn.Conv2d(cin, v, 3, pad_mode="same", has_bias=True, bias_init="normal"), nn.ReLU()]
            cin = v
        return nn.SequentialCell(layers)

    def pair(layers_cfg, cin):
        plain, blocked = trunk(layers_cfg, cin), trunk(layers_cfg, cin)
        for (_, a), (_, b) in zip(plain.parameters_and_names(), blocked.parameters_and_names()):
            b.set_data(a.data)
        if swap_convs(blocked, so) != sum(isinstance(v, int) for v in layers_cfg):
            raise RuntimeError("swap_convs missed a convolution of the benchmark's trunk")
        return plain, blocked

    rng = np.random.default_rng(0)
    cases = []
    side = size
    for cin, cout in ((64, 64), (128, 128), (256, 256), (512, 512)):  # one layer of each VGG16 stage
        x = ms.Tensor(rng.standard_normal((batch, cin, side, side)).astype(np.float32))
        cases.append((f"3x3 conv {cin}->{cout} at {side} px", *pair([cout], cin), x))
        side //= 2
    x = ms.Tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32))
    cases.append((f"VGG16 trunk, 3x{size}x{size}", *pair(VGG16, 3), x))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--parts", nargs="+", choices=("infer", "train"), default=["infer", "train"])
    parser.add_argument("--cache", type=Path, default=default_cache())
    args = parser.parse_args()
    os.environ["BLOCKED_CONV_THREADS"] = str(args.threads)

    from geocli.runtime import context

    try:
        so = library(args.cache)
    except Unbuildable as exc:
        sys.exit(f"error: {exc}")
    context.setup(args.cache / "run", mode="graph", seed=0, threads=args.threads, distributed=False)
    print(f"batch {args.batch}, {args.threads} threads, graph mode; median (best) of {args.rounds} alternating "
          "rounds\n")
    print(f"{'':38s} {'MindSpore Conv2d':>20s} {'blocked custom op':>20s} {'speed-up':>9s} {'max |diff|':>11s}")
    for name, plain, blocked, x in networks(so, args.batch, args.size):
        for part in args.parts:
            run_plain, run_blocked = (plain, blocked) if part == "infer" else (_step(plain, x), _step(blocked, x))
            ref, out = _flat(run_plain(x)), _flat(run_blocked(x))
            diff = float(np.abs(ref - out).max() / max(float(np.abs(ref).max()), 1e-30))
            times = {"plain": [], "blocked": []}
            for _ in range(args.rounds):
                for key, fn in (("plain", run_plain), ("blocked", run_blocked)):
                    start = time.perf_counter()
                    _flat(fn(x))
                    times[key].append(1e3 * (time.perf_counter() - start))
            p, b = np.median(times["plain"]), np.median(times["blocked"])
            print(f"{name + ', ' + part:38s} {p:9.1f} ms ({min(times['plain']):5.1f}) {b:9.1f} ms "
                  f"({min(times['blocked']):5.1f}) {p / b:8.2f}x {diff:10.1e}")
    print("\ninfer: forward pass; train: forward and the gradients of every parameter (ms.grad of a fixed "
          "projection of the output)\nmax |diff|: relative to the largest value (output, or every gradient)")


def _step(net, x):
    """Forward + backward: the gradients of ``sum(net(x) * r)`` for a fixed random ``r``, jitted."""
    import mindspore as ms

    r = ms.Tensor(np.random.default_rng(1).standard_normal(net(x).shape).astype(np.float32))
    params = net.trainable_params()

    def projected(inp):
        return (net(inp) * r).sum()

    return ms.jit(ms.grad(projected, grad_position=None, weights=params))


def _flat(outputs) -> np.ndarray:
    if isinstance(outputs, (tuple, list)):
        return np.concatenate([o.asnumpy().ravel() for o in outputs])
    return outputs.asnumpy().ravel()


if __name__ == "__main__":
    main()
