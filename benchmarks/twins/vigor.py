"""VIGOR twins: geoloc's VIGOR network and losses, and the same in PyTorch.

Same layers in both: two non-shared VGG16 trunks (3x3 'same' convs with bias + ReLU, 2x2 max-pools, no
pool5) to conv5_3, an extra 2x2 max-pool, SAFA with 8 maps (no activation, d-major 8 x 512 descriptor,
L2-normalised), the offset head FC 8192 -> 512 -> 2 on the raw descriptors; the stage-2 loss (soft-margin
triplet alpha 10 + IoU ratio loss + offset loss) with the satellite branch run once on positives and
semi-positives; Adam. ``size`` is the tile side; panoramas are size x 2 size (the reference's 320 / 320 x 640).
One training step = ``batch`` panoramas with ``batch`` positive and ``batch`` semi-positive tiles; one
inference batch = ``batch`` panoramas through the ground branch and ``batch`` tiles through the satellite one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from twins import Bench, Options, engine_runner, import_torch

TITLE = "VIGOR (2 x VGG16 + SAFA + offset head, stage-2 losses, Adam)"
DEFAULTS = {"batch": 8, "size": 64}
VARIANTS = ("geoloc", "torch", "onnxruntime")
VGG = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _batches(opts: Options):
    rng = np.random.default_rng(opts.seed)
    b, s = opts.batch, opts.size
    grd = rng.standard_normal((b, 3, s, 2 * s)).astype(np.float32)
    sat = rng.standard_normal((b, 3, s, s)).astype(np.float32)
    semi = rng.standard_normal((b, 3, s, s)).astype(np.float32)
    ratio = rng.uniform(0.2, 0.9, b).astype(np.float32)
    offset = rng.uniform(-0.5, 0.5, (b, 2)).astype(np.float32)
    return grd, sat, semi, ratio, offset


def input_shape(opts: Options) -> str:
    return f"{opts.size}x{2 * opts.size} panoramas, {opts.size}x{opts.size} tiles"


def build(variant: str, opts: Options) -> Bench:
    return {"geoloc": _geoloc, "torch": _torch, "onnxruntime": _onnxruntime}[variant](opts)


def _cfg(opts: Options):
    from geocli import config

    cfg = config.load_preset("vigor", "default")
    cfg["data"]["pano_hw"] = [opts.size, 2 * opts.size]
    cfg["data"]["sat_hw"] = [opts.size, opts.size]
    return cfg


def _geoloc(opts: Options) -> Bench:
    import mindspore as ms

    from geocli import registry
    from geocli.models.vigor.backend import make_forward, optimizer
    from geocli.runtime.plan import IndexedSource, RunContext, TrainPlan
    from geocli.runtime.trainer import Trainer

    cfg = _cfg(opts)
    backend = registry.load_backend("vigor")
    net = backend.build_network(cfg, training=True)
    forward, names = make_forward(net, cfg, with_semi=True)
    plan = TrainPlan(network=net, forward=forward, loss_names=names,
                     optimizers=[optimizer(cfg, net.trainable_params())],
                     data=IndexedSource(1, 1, lambda idx, seed: (), drop_last=False), steps=10**6)
    trainer = Trainer(plan, RunContext(run_dir=Path(tempfile.mkdtemp(prefix="twin-vigor-"))))
    batch = [ms.Tensor(a) for a in _batches(opts)]

    def train():
        return [t.asnumpy() for t in trainer.step_fn(*batch)]

    inference = backend.build_network(cfg)  # the ground and satellite graphs as `geoloc eval` runs them
    ground, satellite = (engine_runner("mindspore", backend, cfg, inference, opts, graph=g)
                         for g in ("ground", "satellite"))
    grd, sat = _batches(opts)[:2]
    return Bench(train=train, infer=lambda: (ground(grd), satellite(sat)),
                 note="infer = ground + satellite batch")


def _onnxruntime(opts: Options) -> Bench:
    """``--engine onnxruntime``: the ground and satellite export graphs, as ``geoloc eval`` runs them."""
    from geocli import registry

    cfg = _cfg(opts)
    backend = registry.load_backend("vigor")
    net = backend.build_network(cfg)
    ground, satellite = (engine_runner("onnxruntime", backend, cfg, net, opts, graph=g) for g in ("ground", "satellite"))
    grd, sat = _batches(opts)[:2]
    return Bench(infer=lambda: (ground(grd), satellite(sat)), note="infer = ground + satellite batch")


def _torch(opts: Options) -> Bench:
    torch = import_torch(opts.threads)
    nn, F = torch.nn, torch.nn.functional
    torch.manual_seed(opts.seed)

    class Branch(nn.Module):
        def __init__(self, hw):
            super().__init__()
            layers, cin = [], 3
            for i, block in enumerate(VGG):
                for cout in block:
                    layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                    cin = cout
                if i < 4:
                    layers.append(nn.MaxPool2d(2))
            layers.append(nn.MaxPool2d(2))  # the extra pool after conv5_3
            self.features = nn.Sequential(*layers)
            half = hw // 2
            self.w1 = nn.Parameter(torch.randn(hw, half, 8) * 0.005)
            self.b1 = nn.Parameter(torch.full((1, half, 8), 0.1))
            self.w2 = nn.Parameter(torch.randn(half, hw, 8) * 0.005)
            self.b2 = nn.Parameter(torch.full((1, hw, 8), 0.1))

        def forward(self, x):
            f = self.features(x).flatten(2)  # (B, C, HW)
            v = f.max(dim=1).values
            v2 = torch.einsum("bi,ijd->bjd", v, self.w1) + self.b1
            v3 = torch.einsum("bjd,jid->bid", v2, self.w2) + self.b2
            raw = torch.einsum("bci,bid->bdc", f, v3).flatten(1)
            return F.normalize(raw, dim=1), raw

    class Net(nn.Module):
        def __init__(self, s):
            super().__init__()
            self.grd, self.sat = Branch((s // 32) * (2 * s // 32)), Branch((s // 32) ** 2)
            self.head = nn.Sequential(nn.Linear(2 * 4096, 512), nn.ReLU(), nn.Linear(512, 2))

    net = Net(opts.size)
    opt = torch.optim.Adam(net.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8)
    grd, sat, semi, ratio, offset = (torch.from_numpy(a) for a in _batches(opts))

    def loss_fn():
        g, g_raw = net.grd(grd)
        both, both_raw = net.sat(torch.cat([sat, semi]))
        n = grd.shape[0]
        s, s_raw, m = both[:n], both_raw[:n], both[n:]
        dist = 2 - 2 * s @ g.T
        pos = dist.diagonal()
        triplet = (F.softplus(10 * (pos[None, :] - dist)).sum() + F.softplus(10 * (pos[:, None] - dist)).sum()) \
            / (n * (n - 1)) / 2
        iou = (((m * g).sum(1) / (s * g).sum(1) - ratio) ** 2).mean() / 10
        off = ((net.head(torch.cat([s_raw, g_raw], 1)) - offset) ** 2).sum(1).mean() / 100
        return triplet + iou + off

    def train():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.item()

    def infer():
        with torch.no_grad():
            return net.grd(grd)[0].numpy(), net.sat(sat)[0].numpy()

    return Bench(train=train, infer=infer, note="infer = ground + satellite batch")
