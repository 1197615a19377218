"""The PoseNet backend: what ``geoloc train/eval/export/retrieve/demo posenet`` run (see base.Backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from geocli.data.images import image_files
from geocli.errors import ConfigError, DataError
from geocli.models.base import Backend
from geocli.models.posenet import data as pdata
from geocli.models.posenet import predict as pred
from geocli.runtime.plan import Clip, IndexedSource, OptimizerSpec, Schedule, TrainPlan


def _network(cfg: Dict[str, Any], training: bool):
    from geocli.models.posenet.net import PoseNet

    m = cfg["model"]
    try:
        net = PoseNet(heads=m["heads"], xyz_norm=m["xyz_norm"], all_heads=training,
                      aux_dropout=m["aux_dropout"], main_dropout=m["main_dropout"])
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
    net.set_train(training)
    return net


def _optimizer(cfg: Dict[str, Any], params: List[Any]) -> OptimizerSpec:
    o = cfg["optim"]
    schedule = Schedule(name=o["schedule"], warmup_steps=o["warmup_steps"], warmup_factor=o["warmup_factor"],
                        end_factor=o["end_factor"])
    clip = Clip("norm", o["clip_norm"]) if o["clip_norm"] > 0 else None
    return OptimizerSpec("posenet", params, kind=o["kind"], lr=o["lr"], schedule=schedule,
                         weight_decay=o["weight_decay"], clip=clip)


def preprocessing(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """How images must be prepared for this network (stored in checkpoints)."""
    d = cfg["data"]
    return {k: d[k] for k in ("resize", "train_size", "test_size", "train_hw", "test_hw", "crop", "mean", "std")}


class PoseNetBackend(Backend):
    engines = ("mindspore", "onnxruntime")  # geocli.runtime.engine: eval and retrieve run on either
    fold_batchnorm = True  # MindSpore inference runs a BatchNorm-folded copy (geocli.nets.fold)

    # ---- networks -------------------------------------------------------------------------------
    def build_network(self, cfg, *, training=False):
        return _network(cfg, training)

    def export_inputs(self, cfg):
        """One RGB image, NCHW float32 normalised: input ``images`` (1, 3, crop, crop); outputs
        ``xyz`` (1, 3) metres and ``wpqr`` (1, 4), the main regressor's (quaternion not normalised)."""
        crop = cfg["data"]["crop"]
        return [np.random.default_rng(0).standard_normal((1, 3, crop, crop)).astype(np.float32)]

    def map_weights(self, params, cfg):
        from geocli.models.posenet.weights import map_port_weights

        names = [p.name for p in _network(cfg, False).get_parameters()]
        return map_port_weights(params, names)

    # ---- training -------------------------------------------------------------------------------
    def train_plan(self, cfg, data, ctx):
        from geocli.models.posenet.loss import PoseLoss

        from geocli.runtime.runlog import default_logger

        d = cfg["data"]
        if d.get("stream", False):  # read and decode per batch in the input pipeline's workers (any size)
            record = pdata.find_record(data, "train")
            poses = pdata.read_poses(record)[1]
            load, workers, how = pdata.StreamLoader(record, poses, cfg), d.get("workers", "auto"), f"streamed from {record}"
        else:  # decoded once into memory: Cambridge scenes have 1-3k frames
            frames = pdata.load_split(data, "train", cfg)
            poses, load, workers, how = frames.poses, pdata.train_loader(frames, cfg), 0, f"decoded from {data}"
        default_logger(ctx.log).info(f"posenet: {len(poses)} training frames {how}")
        t, lcfg = cfg["train"], cfg["loss"]
        if len(poses) < t["batch_size"] * ctx.group_size:
            raise DataError(f"--data {data}: {len(poses)} training frames cannot fill one batch of "
                            f"{t['batch_size']} x {ctx.group_size} ranks; lower train.batch_size")
        net = _network(cfg, True)
        meta: Dict[str, Any] = {"preprocessing": preprocessing(cfg), "train_frames": len(poses)}
        scale = None
        if cfg["model"]["xyz_norm"]:
            mean = poses[:, :3].mean(axis=0)
            scale = np.maximum(poses[:, :3].std(axis=0), 1e-3)
            net.set_xyz_normalisation(mean, scale)
            meta.update(xyz_mean=mean.tolist(), xyz_std=scale.tolist())
        try:
            loss = PoseLoss(lcfg["xyz_weights"], lcfg["wpqr_weights"], lcfg["reduction"], xyz_scale=scale)
        except ValueError as exc:
            raise ConfigError(f"loss: {exc}") from None

        def forward(images, poses):
            return loss(net(images), poses)

        source = IndexedSource(len(poses), t["batch_size"], load, seed=cfg["seed"], rank=ctx.rank,
                               group_size=ctx.group_size, workers=workers, prefetch=d.get("prefetch", 4))
        evaluate = self._eval_hook(cfg, data, net, poses) if t["eval_every"] else None
        return TrainPlan(network=net, forward=forward, loss_names=["xyz", "wpqr"],
                         optimizers=[_optimizer(cfg, list(net.trainable_params()))], data=source,
                         steps=t["steps"], evaluate=evaluate, eval_every=t["eval_every"], log_every=t["log_every"],
                         checkpoint_every=t["checkpoint_every"], keep_checkpoints=t["keep_checkpoints"], meta=meta)

    def _eval_hook(self, cfg, data, net, train_poses):
        """Eval-while-train on the test split (medians only, no files)."""
        test = pdata.load_split(data, "test", cfg)

        def hook(_trainer) -> Dict[str, float]:
            xyz, q = pred.predict(net, pdata.test_batches(test, cfg, cfg["eval"]["batch_size"]))
            net.set_train(True)
            summary, _, _ = pred.metrics(xyz, q, test.poses, train_poses)
            return {k: v for k, v in summary.items() if k.startswith(("median", "baseline"))}

        return hook

    # ---- evaluation and inference ----------------------------------------------------------------
    def evaluate(self, cfg, data, network, out_dir: Path, ctx):
        test = pdata.load_split(data, "test", cfg)
        try:
            _, train_poses = pdata.read_poses(pdata.find_record(data, "train"))
        except DataError:
            train_poses = None  # a test-only folder: no baseline
        batch = cfg["eval"]["batch_size"]
        run = _runner(self, cfg, network, ctx, min(batch, len(test.names)))
        xyz, q = pred.predict(run, pdata.test_batches(test, cfg, batch))
        summary, t_err, r_err = pred.metrics(xyz, q, test.poses, train_poses)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pred.write_per_frame(out_dir / "per_frame.csv", test.names, xyz, q, test.poses, t_err, r_err)
        return summary

    def retrieve(self, cfg, inputs: Sequence[Path], network, out_dir: Path, ctx, **options):
        """Predict the camera pose of each image (``top_k`` and other retrieval options do not apply)."""
        files = image_files(inputs)
        views = [pdata.test_view(pdata.read_image_file(p), cfg) for p in files]
        batch = cfg["eval"]["batch_size"]
        run = _runner(self, cfg, network, ctx, min(batch, len(views)))
        xyz, q = pred.predict(run, (pdata.normalise(views[i:i + batch], cfg) for i in range(0, len(views), batch)))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = pred.write_predictions(out_dir, [str(p) for p in files], xyz, q)
        return {"rows": rows, "csv": str(out_dir / "poses.csv"), "json": str(out_dir / "poses.json")}

    def demo(self, data_dir: Path, out_dir: Path, ctx, runner=None) -> Dict[str, Any]:
        from geocli.models.posenet.demo import run_demo

        return run_demo(self, Path(data_dir), Path(out_dir), ctx, runner=runner)


def _runner(backend, cfg, network, ctx, batch: int):
    """The network as a function over NumPy batches on the engine the command chose (ctx.engine)."""
    from geocli.runtime import engine

    return engine.runner(getattr(ctx, "engine", engine.DEFAULT), backend, cfg, network, batch_size=max(batch, 1),
                         checkpoint=getattr(ctx, "checkpoint", None))


__all__ = ["PoseNetBackend", "preprocessing"]

