"""How much faster ``--conv blocked`` runs MindSpore's CPU convolutions (issue 9), layer by layer.

MindSpore 2.10's CPU Conv2D hands oneDNN plain NCHW memory, for which oneDNN picks im2col + GEMM;
PyTorch lets oneDNN choose an 8-channel blocked layout and its direct AVX2 kernel (docs/performance.md,
"What is still slow"). ``--conv blocked`` (geocli.runtime.blocked_conv) runs the same convolution through
MindSpore's own libdnnl.so.3 with the format left to oneDNN. This script times it beside `nn.Conv2d` on
single layers and on a VGG16 trunk (VIGOR's, without its SAFA head), with the outputs compared, for
inference and for a training step's gradients.

    python benchmarks/blocked_conv.py                     # batch 8, 64 px, 2 threads, 15 rounds
    python benchmarks/blocked_conv.py --batch 16 --size 112 --rounds 9 --parts train

Needs g++: the op is compiled on first use into ~/.cache/geoloc/kernels (see geocli.runtime.blocked_conv).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def networks(so: Path, batch: int, size: int):
    """(name, plain, blocked, input) cases: the blocked network is the plain one rebuilt and passed through
    :func:`geocli.runtime.blocked_conv.swap_convs`, with the plain one's weights."""
    import mindspore as ms
    from mindspore import nn

    from geocli.runtime import blocked_conv

    def trunk(layers_cfg, cin):
        """VGG-style config: an int is a 3x3 'same' convolution with bias, "M" a max-pool, and a tuple
        (out, kernel, stride) a ResNet-style convolution without bias ('pad' of kernel // 2)."""
        ms.set_seed(0)
        layers = []
        for v in layers_cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            if isinstance(v, tuple):
                cout, k, stride = v
                layers += [nn.Conv2d(cin, cout, k, stride=stride, pad_mode="pad", padding=k // 2), nn.ReLU()]
            else:
                cout = v
                layers += [nn.Conv2d(cin, v, 3, pad_mode="same", has_bias=True, bias_init="normal"), nn.ReLU()]
            cin = cout
        return nn.SequentialCell(layers)

    def pair(layers_cfg, cin):
        plain, blocked = trunk(layers_cfg, cin), trunk(layers_cfg, cin)
        for (_, a), (_, b) in zip(plain.parameters_and_names(), blocked.parameters_and_names()):
            b.set_data(a.data)
        if blocked_conv.swap_convs(blocked, so) != sum(v != "M" for v in layers_cfg):
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
    side = 2 * size
    for cin, layer, at in ((3, (64, 7, 2), side), (256, (64, 1, 1), side // 4), (64, (256, 1, 1), side // 4),
                           (128, (128, 3, 2), side // 4), (256, (512, 1, 2), side // 4)):  # ResNet50's kinds
        x = ms.Tensor(rng.standard_normal((batch, cin, at, at)).astype(np.float32))
        cases.append((f"{layer[1]}x{layer[1]}/{layer[2]} conv {cin}->{layer[0]} at {at} px", *pair([layer], cin), x))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--parts", nargs="+", choices=("infer", "train"), default=["infer", "train"])
    args = parser.parse_args()

    from geocli.runtime import blocked_conv, context

    os.environ[blocked_conv.THREADS_ENV] = str(args.threads)
    try:
        so = blocked_conv.build()
    except blocked_conv.Unbuildable as exc:
        sys.exit(f"error: {exc}")
    context.setup(Path(tempfile.mkdtemp(prefix="blocked-conv-")), mode="graph", seed=0, threads=args.threads,
                  distributed=False)
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
