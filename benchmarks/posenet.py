"""PoseNet throughput at 224x224 on this machine: training and inference images per second (graph mode).

Training runs the shared trainer's compiled step (forward through all three regressors, the port's loss,
Adagrad with weight decay, per-tensor gradient clipping) on fixed random batches, so the number excludes
data loading; inference runs the exported network (main regressor only). Compilation is excluded:
the first calls are warm-up.

    python benchmarks/posenet.py [--train-batch 16] [--infer-batch 16] [--steps 8] [--preset default]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, repeats: int) -> float:
    fn()  # compile
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--infer-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps / inference batches")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import mindspore as ms

    from geocli import config, registry
    from geocli.runtime import context
    from geocli.runtime.plan import IndexedSource, TrainPlan
    from geocli.runtime.trainer import Trainer

    ctx = context.setup(Path(tempfile.mkdtemp(prefix="posenet-bench-")), mode="graph", seed=0,
                        threads=args.threads, distributed=False)
    cfg = config.load_preset("posenet", args.preset)
    backend = registry.load_backend("posenet")
    crop = cfg["data"]["crop"]
    rng = np.random.default_rng(0)

    # training: the backend's own loss and optimizer, fixed batches instead of the MindRecord loader
    from geocli.models.posenet.backend import _optimizer
    from geocli.models.posenet.loss import PoseLoss

    net = backend.build_network(cfg, training=True)
    loss = PoseLoss(cfg["loss"]["xyz_weights"], cfg["loss"]["wpqr_weights"], cfg["loss"]["reduction"])

    def forward(images, poses):
        return loss(net(images), poses)

    plan = TrainPlan(network=net, forward=forward, loss_names=["xyz", "wpqr"],
                     optimizers=[_optimizer(cfg, list(net.trainable_params()))],
                     data=IndexedSource(1, 1, lambda idx, seed: (), drop_last=False), steps=args.steps + 2)
    trainer = Trainer(plan, ctx)
    images = ms.Tensor(rng.standard_normal((args.train_batch, 3, crop, crop)).astype(np.float32))
    poses = ms.Tensor(rng.standard_normal((args.train_batch, 7)).astype(np.float32))
    train_s = timed(lambda: [t.asnumpy() for t in trainer.step_fn(images, poses)], args.steps)

    inference = backend.build_network(cfg)
    forward_jit = ms.jit(inference.construct)
    batch = ms.Tensor(rng.standard_normal((args.infer_batch, 3, crop, crop)).astype(np.float32))
    infer_s = timed(lambda: [o.asnumpy() for o in forward_jit(batch)], args.steps)
    single = ms.Tensor(rng.standard_normal((1, 3, crop, crop)).astype(np.float32))
    single_s = timed(lambda: [o.asnumpy() for o in forward_jit(single)], args.steps)

    print(f"PoseNet ({args.preset} preset, {crop}x{crop}, {ctx.device}, graph mode, "
          f"{args.threads or 'all'} threads, {cfg['optim']['kind']} + clip {cfg['optim']['clip_norm']})")
    print(f"  training   batch {args.train_batch:3d}: {args.train_batch / train_s:7.1f} images/s "
          f"({train_s * 1000:.0f} ms/step)")
    print(f"  inference  batch {args.infer_batch:3d}: {args.infer_batch / infer_s:7.1f} images/s")
    print(f"  inference  batch   1: {1 / single_s:7.1f} images/s ({single_s * 1000:.0f} ms/image)")


if __name__ == "__main__":
    main()
