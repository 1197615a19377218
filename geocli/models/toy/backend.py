"""Backend of the hidden ``toy`` model (see the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

from geocli.models.base import Backend
from geocli.runtime.plan import Clip, IndexedSource, OptimizerSpec, Schedule, TrainPlan


def make_data(cfg: Dict[str, Any], split: str):
    d = cfg["data"]
    rng = np.random.default_rng(d["data_seed"])
    w = rng.normal(size=(d["dim"],)).astype(np.float32)
    n = d["n_train"] + d["n_test"]
    x = rng.normal(size=(n, d["dim"])).astype(np.float32)
    y = np.sin(x @ w / np.sqrt(d["dim"]))[:, None].astype(np.float32)
    cut = d["n_train"]
    return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])


def build(dim: int, dropout: float = 0.0):
    from mindspore import nn

    from geocli.nets.dropout import Dropout

    class ToyNet(nn.Cell):
        def __init__(self):
            super().__init__()
            self.body = nn.Dense(dim, 16, activation="tanh")
            self.drop = Dropout(dropout) if dropout else None  # model.dropout: the reproducibility tests
            self.head = nn.Dense(16, 1)

        def construct(self, x):
            x = self.body(x)
            if self.drop is not None:
                x = self.drop(x)
            return self.head(x)

    return ToyNet()


class ToyBackend(Backend):
    def build_network(self, cfg, *, training=False):
        net = build(cfg["data"]["dim"], float(cfg.get("model", {}).get("dropout", 0.0)))
        net.set_train(training)
        return net

    def export_inputs(self, cfg):
        return [np.ones((1, cfg["data"]["dim"]), np.float32)]

    def train_plan(self, cfg, data, ctx):
        from mindspore import ops

        net = self.build_network(cfg, training=True)
        x, y = make_data(cfg, "train")
        t, o = cfg["train"], cfg["optim"]
        source = IndexedSource(len(x), t["batch_size"], lambda idx, seed: (x[idx], y[idx]),
                               seed=cfg["seed"], rank=ctx.rank, group_size=ctx.group_size)
        reg_weight = o["reg_weight"]

        def forward(xb, yb):
            mse = ops.reduce_mean((net(xb) - yb) ** 2)
            reg = ops.reduce_sum(net.body.weight ** 2)
            return mse + reg_weight * reg, mse, reg

        schedule = Schedule(name=o["schedule"], warmup_steps=o["warmup_steps"])
        optimizers = [
            OptimizerSpec("body", list(net.body.trainable_params()), kind="adam", lr=o["body_lr"],
                          schedule=schedule, clip=Clip("global_norm", o["clip"])),
            OptimizerSpec("head", list(net.head.trainable_params()), kind="sgd", lr=o["head_lr"],
                          schedule=schedule, loss="mse", options={"momentum": 0.9}),
        ]
        def evaluate_while_training(trainer):
            metrics = self.evaluate(cfg, data, net, ctx.run_dir, ctx)
            net.set_train(True)
            return metrics

        return TrainPlan(network=net, forward=forward, loss_names=["mse", "reg"], optimizers=optimizers,
                         data=source, steps=t["steps"], log_every=t["log_every"],
                         checkpoint_every=t["checkpoint_every"], keep_checkpoints=t["keep_checkpoints"],
                         evaluate=evaluate_while_training, eval_every=t["eval_every"])

    def evaluate(self, cfg, data, network, out_dir: Path, ctx):
        import mindspore as ms

        x, y = make_data(cfg, "test")
        network.set_train(False)
        pred = network(ms.Tensor(x)).asnumpy()
        mse = float(np.mean((pred - y) ** 2))
        baseline = float(np.mean((y - make_data(cfg, "train")[1].mean()) ** 2))
        return {"mse": mse, "baseline_mse": baseline}
