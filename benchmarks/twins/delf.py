"""DELF twins: geoloc's DELF tuning step and extraction network, and the same in PyTorch.

Training is the ``tuning`` stage at the port's 321 px: Keras-style ResNet50 (biased convs, BatchNorm
eps 1e-3, stride on the first 1x1 of a block, 7x7/2 'same' stem, 3x3/2 'valid' max-pool), the 1x1/2
subsampling after conv4_x, conv5_x with stride 1, the global mean, the descriptor classifier; softmax
cross-entropy; SGD momentum 0.9 after global-norm clipping at 10. The classifier has 1,000 outputs here
(GLDv2-clean's 81,313 would add a 2048 x 81,313 matrix multiply that dominates nothing on an
accelerator but 660 MB of weights and momentum on a shared CPU). Inference is the extraction network
(backbone to the subsampled conv4_x map + attention scores) at the same size.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np

from twins import Bench, Options, Unavailable, import_torch

TITLE = "DELF (ResNet50 Keras-style; tuning step, SGD + global clip; extraction network)"
DEFAULTS = {"batch": 8, "size": 321}
VARIANTS = ("geoloc", "torch", "onnxruntime")
CLASSES = 1000
STAGES = ((3, 64, 256, 1), (4, 128, 512, 2), (6, 256, 1024, 2), (3, 512, 2048, 1))  # DELF: conv5 stride 1


def _batches(opts: Options):
    rng = np.random.default_rng(opts.seed)
    images = rng.uniform(-1, 1, (opts.batch, 3, opts.size, opts.size)).astype(np.float32)
    labels = rng.integers(0, CLASSES, opts.batch).astype(np.int32)
    return images, labels


def build(variant: str, opts: Options) -> Bench:
    return {"geoloc": _geoloc, "torch": _torch, "onnxruntime": _onnxruntime}[variant](opts)


# ---- geoloc: the backend's network, loss and optimizer through the shared trainer ----------------------
def _geoloc(opts: Options) -> Bench:
    import mindspore as ms

    from geocli import config, registry
    from geocli.models.delf.backend import network, optimizer_spec
    from geocli.models.delf.loss import DelfLoss, loss_names
    from geocli.models.delf.tasks import extraction_network
    from geocli.runtime import engine
    from geocli.runtime.plan import IndexedSource, RunContext, TrainPlan
    from geocli.runtime.trainer import Trainer

    cfg = config.load_preset("delf", "default")
    backend = registry.load_backend("delf")
    net = network(cfg, "tuning", CLASSES)
    net.set_train(True)
    loss = DelfLoss("tuning")

    def forward(images, labels):
        return loss(net(images), labels)

    plan = TrainPlan(network=net, forward=forward, loss_names=loss_names("tuning"),
                     optimizers=[optimizer_spec(cfg, list(net.trainable_params()))],
                     data=IndexedSource(1, 1, lambda idx, seed: (), drop_last=False), steps=10**6)
    trainer = Trainer(plan, RunContext(run_dir=Path(tempfile.mkdtemp(prefix="twin-delf-"))))
    images, labels = (ms.Tensor(a) for a in _batches(opts))

    def train():
        return [t.asnumpy() for t in trainer.step_fn(images, labels)]

    # the extraction network as make_extractor runs it on MindSpore: BatchNorm folded
    run = engine.cell_runner(extraction_network(cfg, backend.build_network(cfg), "mindspore"))
    images_np = images.asnumpy()

    def infer():
        return run(images_np)

    return Bench(train=train, infer=infer)


def _onnxruntime(opts: Options) -> Bench:
    """Extraction as ``--engine onnxruntime`` runs it: one ONNX export with batch and image size left free."""
    from geocli import config, registry
    from geocli.models.delf.tasks import extraction_network

    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if missing:  # onnx frees the export's axes
        raise Unavailable(f"{' and '.join(missing)} not installed: pip install onnx onnxruntime")
    cfg = config.load_preset("delf", "default")
    images, _ = _batches(opts)
    run = extraction_network(cfg, registry.load_backend("delf").build_network(cfg), "onnxruntime",
                             cache_dir=Path(tempfile.mkdtemp(prefix="twin-onnx-")), threads=opts.threads)

    def infer():
        return run(images)

    return Bench(infer=infer)


# ---- PyTorch ---------------------------------------------------------------------------------------------
def _torch(opts: Options) -> Bench:
    torch = import_torch(opts.threads)
    from torch import nn
    import torch.nn.functional as F

    class SameConv(nn.Conv2d):
        """TensorFlow 'same' padding (extra at the bottom/right), as the Keras-style stem."""

        def forward(self, x):
            k, s = self.kernel_size[0], self.stride[0]
            size = x.shape[-1]
            total = max((-(-size // s) - 1) * s + k - size, 0)
            return super().forward(F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2)))

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # MindSpore/Keras momentum 0.99

    class Block(nn.Module):
        def __init__(self, cin, width, cout, stride, project):
            super().__init__()
            self.a, self.bn_a = nn.Conv2d(cin, width, 1, stride), bn(width)
            self.b, self.bn_b = nn.Conv2d(width, width, 3, padding=1), bn(width)
            self.c, self.bn_c = nn.Conv2d(width, cout, 1), bn(cout)
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride), bn(cout)) if project else nn.Identity()

        def forward(self, x):
            y = F.relu(self.bn_a(self.a(x)))
            y = F.relu(self.bn_b(self.b(y)))
            return F.relu(self.bn_c(self.c(y)) + self.short(x))

    def stage(cin, n, width, cout, stride):
        return nn.Sequential(*[Block(cin if i == 0 else cout, width, cout, stride if i == 0 else 1, i == 0)
                               for i in range(n)])

    class Delf(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(SameConv(3, 64, 7, 2), bn(64), nn.ReLU(), nn.MaxPool2d(3, 2))
            cin, layers = 64, []
            for n, width, cout, stride in STAGES[:3]:
                layers.append(stage(cin, n, width, cout, stride))
                cin = cout
            self.conv4 = nn.Sequential(*layers)
            self.conv5 = stage(1024, *STAGES[3])
            self.desc = nn.Linear(2048, CLASSES)
            self.attention = nn.Sequential(nn.Conv2d(1024, 512, 1), bn(512), nn.ReLU(), nn.Conv2d(512, 1, 1),
                                           nn.Softplus())

        def block3(self, x):
            return self.conv4(self.stem(x))[:, :, ::2, ::2]  # the 1x1/2 max-pool

        def forward(self, x):
            return self.desc(self.conv5(self.block3(x)).mean(dim=(2, 3)))

        def extract(self, x):
            block3 = self.block3(x)
            return self.attention(block3), block3

    torch.manual_seed(opts.seed)
    net = Delf()
    params = [p for n, p in net.named_parameters() if not n.startswith("attention.")]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=True)
    images, labels = (torch.from_numpy(a) for a in _batches(opts))
    labels = labels.long()

    def train():
        net.train()
        loss = F.cross_entropy(net(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0, foreach=True)
        opt.step()
        return loss.item()

    def infer():
        net.eval()
        with torch.inference_mode():
            return [o.numpy() for o in net.extract(images)]

    return Bench(train=train, infer=infer)
