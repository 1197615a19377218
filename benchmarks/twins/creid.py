"""Centroids-ReID twins: geoloc's network and losses, and the same in PyTorch.

Same everywhere: torchvision-layout ResNet50 with last stride 1 and no stem ReLU, global average pooling,
BNNeck (BatchNorm1d, frozen bias), bias-free classifier over 751 identities; label-smoothed CE (0.1) on the
post-BN feature, batch-hard triplet (margin 0.5) and centre loss (5e-4) on the pre-BN feature, centroid
triplet over the K rotations; Adam 3.5e-4 with coupled L2 5e-4 and the centres' SGD 0.5 (gradients x
1/5e-4). Batches are P x K = batch/4 identities x 4 images at size x size/2 (256 x 128 by default, the
reference's input); inference returns the post-BN feature.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from twins import Bench, Options, Unavailable, geoloc_infer, import_torch

TITLE = "Centroids-ReID (ResNet50 last stride 1, BNNeck, CE + triplet + centre + centroid triplet)"
DEFAULTS = {"batch": 16, "size": 256}
VARIANTS = ("geoloc", "torch", "onnxruntime")
K, CLASSES = 4, 751


def _batches(opts: Options):
    if opts.batch % K:
        raise Unavailable(f"--batch must be a multiple of K={K} (P identities x K images)")
    rng = np.random.default_rng(opts.seed)
    images = rng.standard_normal((opts.batch, 3, opts.size, opts.size // 2)).astype(np.float32)
    labels = np.repeat(rng.choice(CLASSES, opts.batch // K, replace=False), K).astype(np.int32)
    return images, labels


def input_shape(opts: Options) -> str:
    return f"{opts.size}x{opts.size // 2}"


def build(variant: str, opts: Options) -> Bench:
    return {"geoloc": _geoloc, "torch": _torch, "onnxruntime": _onnxruntime}[variant](opts)


def _cfg(opts: Options):
    from geocli import config

    return config.resolve("creid", "default", None, [f"data.size=[{opts.size},{opts.size // 2}]"])


# ---- geoloc: the backend's network and loss through the shared trainer ---------------------------------
def _geoloc(opts: Options) -> Bench:
    import mindspore as ms

    from geocli import registry
    from geocli.models.creid.backend import build as build_net
    from geocli.models.creid.loss import CReIDLoss
    from geocli.runtime import engine
    from geocli.runtime.plan import IndexedSource, OptimizerSpec, RunContext, TrainPlan
    from geocli.runtime.trainer import Trainer

    cfg = _cfg(opts)
    o, lc = cfg["optim"], cfg["loss"]
    net = build_net(cfg, CLASSES, training=True)
    main = [p for p in net.trainable_params() if p.name != "centers"]
    loss = CReIDLoss(net, K, margin=lc["margin"], epsilon=lc["label_smoothing"], center_weight=lc["center_weight"])

    def forward(images, labels):  # a def, not a lambda: MindSpore's graph parser needs it on its own line
        return loss(images, labels)

    plan = TrainPlan(network=net, forward=forward, loss_names=["xent", "triplet", "center", "centroid"],
                     optimizers=[OptimizerSpec("main", main, kind="adam", lr=o["lr"], weight_decay=o["weight_decay"],
                                               decay_all=True),
                                 OptimizerSpec("center", [net.centers], kind="sgd", lr=o["center_lr"])],
                     data=IndexedSource(1, 1, lambda idx, seed: (), drop_last=False), steps=10**6)
    trainer = Trainer(plan, RunContext(run_dir=Path(tempfile.mkdtemp(prefix="twin-creid-"))))
    images, labels = _batches(opts)
    x, y = ms.Tensor(images), ms.Tensor(labels)

    def train():
        return [t.asnumpy() for t in trainer.step_fn(x, y)]

    backend = registry.load_backend("creid")
    run = engine.runner("mindspore", backend, cfg, backend.build_network(cfg))

    def infer():
        return run(images)

    return Bench(train=train, infer=infer)


def _onnxruntime(opts: Options) -> Bench:
    from geocli import registry

    cfg = _cfg(opts)
    backend = registry.load_backend("creid")
    images, _ = _batches(opts)
    return Bench(infer=geoloc_infer("onnxruntime", backend, cfg, backend.build_network(cfg), (images,), opts))


# ---- PyTorch, as a user of that framework writes it -----------------------------------------------------
def _torch(opts: Options) -> Bench:
    torch = import_torch(opts.threads)
    nn, F = torch.nn, torch.nn.functional

    class Bottleneck(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
            self.downsample = None
            if stride != 1 or cin != planes * 4:
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes * 4))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return F.relu(out + (self.downsample(x) if self.downsample is not None else x))

    class CTL(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            layers, cin = [], 64
            for i, (n, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 1))):
                blocks = []
                for b in range(n):
                    blocks.append(Bottleneck(cin, 64 * 2 ** i, stride if b == 0 else 1))
                    cin = 64 * 2 ** i * 4
                layers.append(nn.Sequential(*blocks))
            self.layers = nn.Sequential(*layers)
            self.bn = nn.BatchNorm1d(2048)
            self.bn.bias.requires_grad_(False)
            self.fc_query = nn.Linear(2048, CLASSES, bias=False)
            nn.init.normal_(self.fc_query.weight, std=0.001)

        def forward(self, x):
            x = F.max_pool2d(self.bn1(self.conv1(x)), 3, 2, 1)  # no stem ReLU, as the reference
            feat = self.layers(x).mean(dim=(2, 3))
            return feat, self.bn(feat)

    def triplet(x, labels, margin=0.5):
        d = torch.cdist(x, x).clamp(min=1e-6)
        same = labels[:, None] == labels[None, :]
        ap = (d * same).max(1).values
        an = d.masked_fill(same, float("inf")).min(1).values
        return F.relu(ap - an + margin).mean()

    model = CTL()
    centers = nn.Parameter(torch.randn(CLASSES, 2048))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3.5e-4, weight_decay=5e-4)
    opt_center = torch.optim.SGD([centers], lr=0.5)
    images, labels = _batches(opts)
    x, y = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    def train():
        model.train()
        opt.zero_grad()
        opt_center.zero_grad()
        feat, bn = model(x)
        xent = F.cross_entropy(model.fc_query(bn), y, label_smoothing=0.1)
        center = 5e-4 * ((feat - centers[y]) ** 2).sum(1).clamp(1e-12, 1e12).mean()
        blocks = feat.view(-1, K, feat.shape[1])
        ids = y.view(-1, K)[:, 0]
        ctl = 0.0
        for r in range(K):
            query = blocks[:, r]
            cent = (blocks.sum(1) - query) / (K - 1)
            ctl = ctl + triplet(torch.cat([query, cent]), torch.cat([ids, ids]))
        loss = xent + triplet(feat, y) + center + ctl / K
        loss.backward()
        opt.step()
        centers.grad *= 1.0 / 5e-4
        opt_center.step()
        return loss.item()

    def infer():
        model.eval()
        with torch.no_grad():
            return model(x)[1].numpy()

    return Bench(train=train, infer=infer)
