"""SDNet twins: geoloc's SDNet and the same network, loss and optimizer in PyTorch.

Same layers: per-modality stems (conv3x3 1->32, BN, ReLU, conv3x3/2 32->32, BN), the shared HardNet trunk
(ReLU, 32->64/2, 64->64, 64->128/2, 128->128, dropout 0.3, 8x8 conv, BN, L2), Lower branches
(conv3x3/2 32->2, BN, avg-pool 2) and one decoder (three transposed k2/2 convs with bias, conv3x3, BN,
ReLU / tanh); every BN affine-free, convs bias-free. Loss: HardNet (anchor swap, margin 1) + 0.001 x two
MSEs + 10 x six rank KLs (t = 0.1). Adam lr 0.004, betas 0.5/0.9, coupled L2 1e-4 over three parameter
groups, one forward and one backward per step. ``batch`` counts optical/SAR PAIRS for training and
PATCHES for inference (one branch: descriptor patches/s); ``size`` is fixed at 64 (the network's input).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from twins import Bench, Options, geoloc_infer, import_torch

TITLE = "SDNet (optical/SAR HardNet descriptors + Lower/decoder self-distillation)"
DEFAULTS = {"batch": 64, "size": 64}
VARIANTS = ("geoloc", "torch", "onnxruntime")


def _batch(opts: Options):
    rng = np.random.default_rng(opts.seed)
    return [rng.uniform(-1, 1, (opts.batch, 1, 64, 64)).astype(np.float32) for _ in range(2)]


def build(variant: str, opts: Options) -> Bench:
    return {"geoloc": _geoloc, "torch": _torch, "onnxruntime": _onnxruntime}[variant](opts)


def geoloc_bench(opts: Options, preset: str = "default") -> Bench:
    """The backend's network, loss and three optimizer groups through the shared trainer's step."""
    import mindspore as ms

    from geocli import config, registry
    from geocli.models.sdnet.backend import descriptor_fn, optimizers
    from geocli.models.sdnet.loss import TERMS, SDNetLoss
    from geocli.runtime.plan import IndexedSource, RunContext, TrainPlan
    from geocli.runtime.trainer import Trainer

    cfg = config.load_preset("sdnet", preset)
    backend = registry.load_backend("sdnet")
    net = backend.build_network(cfg, training=True)
    loss = SDNetLoss()

    def forward(opt, sar):
        return loss(net(opt, sar), opt, sar)

    plan = TrainPlan(network=net, forward=forward, loss_names=list(TERMS), optimizers=optimizers(cfg, net, 10**6, 0.0),
                     data=IndexedSource(1, 1, lambda idx, seed: (), drop_last=False), steps=10**6)
    trainer = Trainer(plan, RunContext(run_dir=Path(tempfile.mkdtemp(prefix="twin-sdnet-"))))
    opt, sar = (ms.Tensor(a) for a in _batch(opts))

    def train():
        return [t.asnumpy() for t in trainer.step_fn(opt, sar)]

    describe = descriptor_fn(backend.build_network(cfg), cfg, "optical")  # what `geoloc match` runs
    patches = _batch(opts)[0]

    def infer():
        return describe(patches)

    return Bench(train=train, infer=infer)


_geoloc = geoloc_bench


def _onnxruntime(opts: Options) -> Bench:
    """``--engine onnxruntime``: the optical branch's export graph, the same inference as geoloc's."""
    from geocli import config, registry

    cfg = config.load_preset("sdnet", "default")
    backend = registry.load_backend("sdnet")
    patches = _batch(opts)[0]
    return Bench(infer=geoloc_infer("onnxruntime", backend, cfg, backend.build_network(cfg), (patches,), opts,
                                    graph="optical"))


def _torch(opts: Options) -> Bench:
    torch = import_torch(opts.threads)
    nn, F = torch.nn, torch.nn.functional
    torch.manual_seed(opts.seed)

    def conv(cin, cout, k=3, s=1, p=1):
        return nn.Conv2d(cin, cout, k, s, p, bias=False)

    def bn(c):
        return nn.BatchNorm2d(c, affine=False, momentum=0.1, eps=1e-5)

    def stem():
        return nn.Sequential(conv(1, 32), bn(32), nn.ReLU(), conv(32, 32, s=2), bn(32))

    def l2(x):
        return x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-10)

    def norm(x):
        flat = x.flatten(1)
        mean = flat.mean(1, keepdim=True)
        std = flat.std(1, unbiased=False, keepdim=True)
        return ((flat - mean) / (std + 1e-7)).view_as(x)

    class Lower(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(conv(32, 2, s=2), bn(2), nn.AvgPool2d(2, 2))

        def forward(self, f):
            code = self.body(f)
            return l2(code.flatten(1)), code

    def up(cin, cout):
        return nn.ConvTranspose2d(cin, cout, 2, 2, bias=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.f_opt, self.f_sar = stem(), stem()
            self.trunk = nn.Sequential(nn.ReLU(), conv(32, 64, s=2), bn(64), nn.ReLU(), conv(64, 64), bn(64), nn.ReLU(),
                                       conv(64, 128, s=2), bn(128), nn.ReLU(), conv(128, 128), bn(128), nn.ReLU(),
                                       nn.Dropout(0.3), conv(128, 128, k=8, p=0), bn(128))
            self.low_opt, self.low_sar = Lower(), Lower()
            self.dec = nn.Sequential(up(2, 16), conv(16, 16), bn(16), nn.ReLU(), up(16, 16), conv(16, 16), bn(16),
                                     nn.ReLU(), up(16, 1), conv(1, 1), bn(1), nn.Tanh())
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.orthogonal_(m.weight, gain=0.6)

        def describe(self, x, stem_):
            f = stem_(norm(x))
            return l2(self.trunk(f).flatten(1)), f

        def forward(self, o, s):
            oe, of = self.describe(o, self.f_opt)
            se, sf = self.describe(s, self.f_sar)
            ol, oc = self.low_opt(of)
            sl, sc = self.low_sar(sf)
            return oe, se, ol, sl, self.dec(oc), self.dec(sc)

    def hardnet(a, p):
        d = torch.sqrt((a * a).sum(1, keepdim=True) + (p * p).sum(1)[None] - 2 * a @ p.t() + 1e-6) + 1e-8
        pos = d.diag()
        off = d + 10 * torch.eye(len(d))
        off = off + 10 * (off < 0.008).float()
        neg = torch.minimum(off.min(1)[0], off.min(0)[0])
        return F.relu(1.0 + pos - neg).mean()

    def kl(f, e, t=0.1):
        lf = F.log_softmax(0.5 * (1 + f @ f.t()) / t, dim=1)
        le = F.log_softmax(0.5 * (1 + e @ e.t()) / t, dim=1)
        return (le.exp() * (le - lf)).mean()

    net = Net()
    net.train()
    groups = [list(net.f_opt.parameters()) + list(net.f_sar.parameters()) + list(net.trunk.parameters()),
              list(net.low_opt.parameters()) + list(net.low_sar.parameters()), list(net.dec.parameters())]
    optim = torch.optim.Adam([{"params": g} for g in groups], lr=0.004, betas=(0.5, 0.9), eps=1e-8, weight_decay=1e-4)
    o, s = (torch.from_numpy(a) for a in _batch(opts))

    def train():
        oe, se, ol, sl, orec, srec = net(o, s)
        loss = (hardnet(oe, se) + 0.001 * F.mse_loss(orec, o) + 0.001 * F.mse_loss(srec, s)
                + 10 * (kl(ol, oe) + kl(sl, se) + kl(sl, oe) + kl(ol, se) + kl(oe, se) + kl(ol, sl)))
        optim.zero_grad()
        loss.backward()
        optim.step()
        return loss.item()

    inference = Net()
    inference.eval()

    def infer():
        with torch.no_grad():
            return inference.describe(o, inference.f_opt)[0].numpy()

    return Bench(train=train, infer=infer)
