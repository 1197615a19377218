"""PoseNet twins: geoloc's PoseNet, the same network in plain MindSpore and in PyTorch.

Same layers everywhere: GoogLeNet-BN trunk (conv without bias -> BatchNorm eps 1e-3 -> ReLU, the
port's Inception widths with a 3x3 "5x5" branch, 'same' max-pools), two auxiliary regressors after 4a
and 4d (5x5/3 average pool, 1x1 conv 128, shared FC 1024 -> {FC 512 -> FC 3 | FC 4}) and the main one
after 5b (7x7 average pool, FC 2048 -> {FC 3 | FC 4}), dropout 0.3 / 0.5; the port's loss (weights
3, 3, 10 / 150, 150, 500, one Euclidean norm per term over the batch); Adagrad (lr 1e-3, accumulator
0.1, weight decay 0.5 except BatchNorm gamma/beta) after clipping each gradient tensor to norm 50.
Inference runs the main regressor only.
"""

from __future__ import annotations

import numpy as np

from twins import Bench, Options, geoloc_infer, geoloc_train, import_torch

TITLE = "PoseNet (GoogLeNet-BN, three regressors, Adagrad + per-tensor clip)"
DEFAULTS = {"batch": 16, "size": 224}
VARIANTS = ("geoloc", "mindspore", "torch", "onnxruntime")

WIDTHS = ((192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64),  # 3a 3b
          (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64),  # 4a 4b
          (512, 128, 128, 256, 24, 64, 64), (512, 112, 144, 288, 32, 64, 64),  # 4c 4d
          (528, 256, 160, 320, 32, 128, 128),                                  # 4e
          (832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128))  # 5a 5b
XYZ_W, WPQR_W = (3.0, 3.0, 10.0), (150.0, 150.0, 500.0)


def _batches(opts: Options):
    rng = np.random.default_rng(opts.seed)
    images = rng.standard_normal((opts.batch, 3, opts.size, opts.size)).astype(np.float32)
    poses = rng.standard_normal((opts.batch, 7)).astype(np.float32)
    return images, poses


def build(variant: str, opts: Options) -> Bench:
    return {"geoloc": _geoloc, "mindspore": _mindspore, "torch": _torch, "onnxruntime": _onnxruntime}[variant](opts)


# ---- geoloc: the backend's network, loss and optimizer through the shared trainer ----------------------
def _geoloc_parts(opts: Options):
    from geocli import config, registry

    cfg = config.load_preset("posenet", "default")
    cfg["data"]["crop"] = opts.size
    return cfg, registry.load_backend("posenet")


def _geoloc(opts: Options) -> Bench:
    from geocli.models.posenet.backend import _optimizer
    from geocli.models.posenet.loss import PoseLoss

    cfg, backend = _geoloc_parts(opts)
    net = backend.build_network(cfg, training=True)
    loss = PoseLoss(cfg["loss"]["xyz_weights"], cfg["loss"]["wpqr_weights"], cfg["loss"]["reduction"])

    def forward(images, poses):
        return loss(net(images), poses)

    images, poses = _batches(opts)
    train = geoloc_train(net, forward, ["xyz", "wpqr"], [_optimizer(cfg, list(net.trainable_params()))],
                         (images, poses), prefix="twin-posenet")
    return Bench(train=train, infer=geoloc_infer("mindspore", backend, cfg, backend.build_network(cfg), (images,), opts))


def _onnxruntime(opts: Options) -> Bench:
    cfg, backend = _geoloc_parts(opts)
    images, _ = _batches(opts)
    return Bench(infer=geoloc_infer("onnxruntime", backend, cfg, backend.build_network(cfg), (images,), opts))


# ---- plain MindSpore, written from scratch ---------------------------------------------------------------
def _mindspore(opts: Options) -> Bench:
    import mindspore as ms
    from mindspore import nn, ops

    def conv_bn(cin, cout, k, stride=1):
        return nn.SequentialCell(nn.Conv2d(cin, cout, k, stride=stride, pad_mode="same"),
                                 nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU())

    class Inception(nn.Cell):
        def __init__(self, cin, n1, n3r, n3, n5r, n5, npool):
            super().__init__()
            self.b1 = conv_bn(cin, n1, 1)
            self.b2 = nn.SequentialCell(conv_bn(cin, n3r, 1), conv_bn(n3r, n3, 3))
            self.b3 = nn.SequentialCell(conv_bn(cin, n5r, 1), conv_bn(n5r, n5, 3))
            self.b4 = nn.SequentialCell(nn.MaxPool2d(3, 1, pad_mode="same"), conv_bn(cin, npool, 1))

        def construct(self, x):
            return ops.cat((self.b1(x), self.b2(x), self.b3(x), self.b4(x)), axis=1)

    class Twin(nn.Cell):
        def __init__(self, all_heads):
            super().__init__()
            self.all_heads = all_heads
            self.stem = nn.SequentialCell(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, pad_mode="same"),
                                          conv_bn(64, 64, 1), conv_bn(64, 192, 3), nn.MaxPool2d(3, 2, pad_mode="same"),
                                          Inception(*WIDTHS[0]), Inception(*WIDTHS[1]),
                                          nn.MaxPool2d(3, 2, pad_mode="same"), Inception(*WIDTHS[2]))
            self.mid = nn.SequentialCell(Inception(*WIDTHS[3]), Inception(*WIDTHS[4]), Inception(*WIDTHS[5]))
            self.top = nn.SequentialCell(Inception(*WIDTHS[6]), nn.MaxPool2d(2, 2, pad_mode="same"),
                                         Inception(*WIDTHS[7]), Inception(*WIDTHS[8]))
            self.aux_pool = nn.AvgPool2d(5, 3)
            self.proj1, self.proj2 = conv_bn(512, 128, 1), conv_bn(528, 128, 1)
            self.aux_fc, self.aux_h, self.aux_xyz, self.aux_q = (nn.Dense(2048, 1024), nn.Dense(1024, 512),
                                                                  nn.Dense(512, 3), nn.Dense(1024, 4))
            self.main_pool = nn.AvgPool2d(7, 1)
            self.fc, self.xyz, self.q = nn.Dense(1024, 2048), nn.Dense(2048, 3), nn.Dense(2048, 4)
            self.drop3, self.drop5 = nn.Dropout(p=0.3), nn.Dropout(p=0.5)
            self.relu, self.flatten = nn.ReLU(), nn.Flatten()

        def aux(self, x, proj):
            x = self.drop3(self.relu(self.aux_fc(self.flatten(proj(self.aux_pool(x))))))
            return self.aux_xyz(self.aux_h(x)), self.aux_q(x)

        def construct(self, x):
            a = self.stem(x)
            d = self.mid(a)
            x = self.drop5(self.relu(self.fc(self.flatten(self.main_pool(self.drop5(self.top(d)))))))
            if not self.all_heads:
                return self.xyz(x), self.q(x)
            x1, q1 = self.aux(a, self.proj1)
            x2, q2 = self.aux(d, self.proj2)
            return x1, q1, x2, q2, self.xyz(x), self.q(x)

    def dist(diff):
        return ops.sqrt(ops.reduce_sum(diff * diff))

    net = Twin(True)
    net.set_train(True)
    params = net.trainable_params()
    opt = nn.Adagrad(params, accum=0.1, learning_rate=1e-3, weight_decay=0.5)

    def loss_fn(images, poses):
        out = net(images)
        total = 0.0
        for h in range(3):
            total += XYZ_W[h] * dist(out[2 * h] - poses[:, :3]) + WPQR_W[h] * dist(out[2 * h + 1] - poses[:, 3:])
        return total

    grad_fn = ms.value_and_grad(loss_fn, None, params)

    @ms.jit
    def step(images, poses):
        loss, grads = grad_fn(images, poses)
        grads = tuple(ops.clip_by_norm(g, 50.0) for g in grads)
        opt(grads)
        return loss

    inference = Twin(False)
    inference.set_train(False)
    images, poses = (ms.Tensor(a) for a in _batches(opts))

    def train():
        return step(images, poses).asnumpy()

    def infer():
        return [o.asnumpy() for o in inference(images)]

    return Bench(train=train, infer=infer)


# ---- PyTorch ---------------------------------------------------------------------------------------------
def _torch(opts: Options) -> Bench:
    torch = import_torch(opts.threads)
    from torch import nn

    def conv_bn(cin, cout, k, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                             nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU(inplace=True))

    class Inception(nn.Module):
        def __init__(self, cin, n1, n3r, n3, n5r, n5, npool):
            super().__init__()
            self.b1 = conv_bn(cin, n1, 1)
            self.b2 = nn.Sequential(conv_bn(cin, n3r, 1), conv_bn(n3r, n3, 3))
            self.b3 = nn.Sequential(conv_bn(cin, n5r, 1), conv_bn(n5r, n5, 3))
            self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), conv_bn(cin, npool, 1))

        def forward(self, x):
            return torch.cat((self.b1(x), self.b2(x), self.b3(x), self.b4(x)), 1)

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, padding=1), conv_bn(64, 64, 1),
                                      conv_bn(64, 192, 3), nn.MaxPool2d(3, 2, padding=1),
                                      Inception(*WIDTHS[0]), Inception(*WIDTHS[1]),
                                      nn.MaxPool2d(3, 2, padding=1), Inception(*WIDTHS[2]))
            self.mid = nn.Sequential(Inception(*WIDTHS[3]), Inception(*WIDTHS[4]), Inception(*WIDTHS[5]))
            self.top = nn.Sequential(Inception(*WIDTHS[6]), nn.MaxPool2d(2, 2),
                                     Inception(*WIDTHS[7]), Inception(*WIDTHS[8]))
            self.aux_pool = nn.AvgPool2d(5, 3)
            self.proj1, self.proj2 = conv_bn(512, 128, 1), conv_bn(528, 128, 1)
            self.aux_fc, self.aux_h = nn.Linear(2048, 1024), nn.Linear(1024, 512)
            self.aux_xyz, self.aux_q = nn.Linear(512, 3), nn.Linear(1024, 4)
            self.main_pool = nn.AvgPool2d(7, 1)
            self.fc, self.xyz, self.q = nn.Linear(1024, 2048), nn.Linear(2048, 3), nn.Linear(2048, 4)
            self.drop3, self.drop5 = nn.Dropout(0.3), nn.Dropout(0.5)

        def aux(self, x, proj):
            x = self.drop3(torch.relu(self.aux_fc(torch.flatten(proj(self.aux_pool(x)), 1))))
            return self.aux_xyz(self.aux_h(x)), self.aux_q(x)

        def forward(self, x, all_heads: bool = True):
            a = self.stem(x)
            d = self.mid(a)
            x = self.drop5(torch.relu(self.fc(torch.flatten(self.main_pool(self.drop5(self.top(d))), 1))))
            if not all_heads:
                return self.xyz(x), self.q(x)
            return (*self.aux(a, self.proj1), *self.aux(d, self.proj2), self.xyz(x), self.q(x))

    torch.manual_seed(opts.seed)
    net = Twin()
    decay = [p for n, p in net.named_parameters() if p.ndim > 1 or not _is_bn(net, n)]
    no_decay = [p for n, p in net.named_parameters() if p.ndim == 1 and _is_bn(net, n)]
    opt = torch.optim.Adagrad([{"params": decay, "weight_decay": 0.5}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=1e-3, initial_accumulator_value=0.1, foreach=True)
    params = [p for group in opt.param_groups for p in group["params"]]
    images, poses = (torch.from_numpy(a) for a in _batches(opts))

    def train():
        net.train()
        out = net(images)
        loss = sum(XYZ_W[h] * torch.linalg.vector_norm(out[2 * h] - poses[:, :3])
                   + WPQR_W[h] * torch.linalg.vector_norm(out[2 * h + 1] - poses[:, 3:]) for h in range(3))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params]
        norms = torch._foreach_norm(grads)
        torch._foreach_mul_(grads, [torch.clamp(50.0 / (n + 1e-12), max=1.0) for n in norms])
        opt.step()
        return loss.item()

    def infer():
        net.eval()
        with torch.inference_mode():
            return [o.numpy() for o in net(images, all_heads=False)]

    return Bench(train=train, infer=infer)


def _is_bn(net, name: str) -> bool:
    module = net.get_submodule(name.rsplit(".", 1)[0])
    return type(module).__name__.startswith("BatchNorm")
