"""The Centroids-ReID backend: what ``geoloc train/eval/export/retrieve/demo creid`` run (see base.Backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from geocli.errors import ConfigError, DataError, UsageError
from geocli.models.base import Backend
from geocli.models.creid import data as cdata
from geocli.runtime.plan import IndexedSource, OptimizerSpec, Schedule, TrainPlan


def build(cfg: Dict[str, Any], n_classes: int = 0, training: bool = False):
    from geocli.models.creid.net import CentroidsReID

    m = cfg["model"]
    try:
        net = CentroidsReID(n_classes, width=m["width"], last_stride=m["last_stride"], stem_relu=m["stem_relu"],
                            training=training, seed=cfg["seed"])
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
    net.set_train(training)
    return net


def lr_per_step(cfg: Dict[str, Any], steps_per_epoch: int, steps: int) -> np.ndarray:
    """The main optimizer's learning rate at every step: the reference changes it once per EPOCH,
    x (epoch + 1) / warmup_epochs during warm-up (``train_ctl_model.py:41-49``), then MultiStepLR."""
    o = cfg["optim"]
    epochs = np.arange(steps) // max(steps_per_epoch, 1)
    warm = max(int(o["warmup_epochs"]), 0)
    factor = np.where(epochs < warm, np.minimum(1.0, (epochs + 1) / max(warm, 1)), 1.0)
    for milestone in o["milestones"]:
        factor = np.where(epochs >= milestone, factor * o["gamma"], factor)
    return (o["lr"] * factor).astype(np.float32)


def preprocessing(cfg: Dict[str, Any]) -> Dict[str, Any]:
    return {"size": list(cfg["data"]["size"]), "mean": cdata.MEAN.tolist(), "std": cdata.STD.tolist(),
            "feature": "post-BN, L2-normalised at evaluation"}


def embed(network, paths: Sequence[Path], cfg: Dict[str, Any], ctx=None, label: str = "embedding") -> np.ndarray:
    """Post-BN features (un-normalised) of ``paths``, in order, with a progress bar on long lists."""
    from geocli import registry
    from geocli.models.creid.progress import bar
    from geocli.runtime import engine as engines

    engine = getattr(ctx, "engine", "mindspore") if ctx is not None else "mindspore"
    batch = int(cfg["eval"]["batch_size"])
    run = engines.runner(engine, registry.load_backend("creid"), cfg, network, batch_size=batch,
                         checkpoint=getattr(ctx, "checkpoint", None))
    network.set_train(False)
    out: List[np.ndarray] = []
    with bar(label, len(paths), quiet=len(paths) <= 4 * batch) as advance:
        for images in cdata.test_batches(list(paths), cfg["data"]["size"], batch):
            out.append(run(images)[0])
            advance(len(images))
    dim = network.dim if hasattr(network, "dim") else 0
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)


class CReIDBackend(Backend):
    engines = ("mindspore", "onnxruntime")
    fold_batchnorm = True  # MindSpore inference runs a BatchNorm-folded copy (geocli.nets.fold)

    # ---- networks -------------------------------------------------------------------------------
    def build_network(self, cfg, *, training=False):
        return build(cfg)

    def export_inputs(self, cfg):
        """A batch of one image, NCHW float32 normalised: input (1, 3, H, W); output the post-BN
        feature (1, 32 x width), un-normalised (L2-normalise it before comparing)."""
        h, w = cfg["data"]["size"]
        return [np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)]

    def map_weights(self, params, cfg):
        from geocli.models.creid.weights import map_foreign

        return map_foreign(params, [p.name for p in build(cfg).get_parameters()])

    # ---- training -------------------------------------------------------------------------------
    def train_plan(self, cfg, data, ctx):
        from geocli.data.formats import reid
        from geocli.models.creid.loss import CReIDLoss
        from geocli.models.creid.sampler import PKSampler
        from geocli.runtime.runlog import default_logger

        if data is None:
            raise UsageError("--data is required: a Market-1501 / DukeMTMC-reID / MSMT17 folder or train/, "
                             "query/, gallery/ identity folders (try `geoloc data synth reid --out DIR`)")
        ds = reid.load(data)
        t, o, lc = cfg["train"], cfg["optim"], cfg["loss"]
        p, k = int(t["ids_per_batch"]), int(t["images_per_id"])
        if k < 2 or p < 2:
            raise ConfigError(f"train.ids_per_batch {p} x train.images_per_id {k}: both must be at least 2 "
                              "(the centroid triplet loss needs a leave-one-out centroid)")
        if ds.n_classes < p * ctx.group_size:
            raise DataError(f"--data {data}: {ds.n_classes} training identities cannot fill one batch of "
                            f"{p} identities x {ctx.group_size} ranks; lower train.ids_per_batch")
        default_logger(ctx.log).info(f"creid: {len(ds.train)} training images of {ds.n_classes} identities "
                                     f"from {ds.root} ({ds.format})")
        loader = cdata.TrainLoader(ds.train.paths, ds.labels, cfg["data"])
        source = IndexedSource(len(ds.train), p * k, loader, seed=cfg["seed"], rank=ctx.rank,
                               group_size=ctx.group_size, sampler=PKSampler(ds.labels, p * ctx.group_size, k),
                               workers=cfg["data"]["workers"], prefetch=cfg["data"]["prefetch"])
        per_epoch = source.steps_per_epoch()
        steps = int(t["steps"]) or int(t["epochs"]) * per_epoch
        net = build(cfg, ds.n_classes, training=True)
        main = [q for q in net.trainable_params() if q.name != "centers"]
        loss = CReIDLoss(net, k, margin=lc["margin"], epsilon=lc["label_smoothing"], center_weight=lc["center_weight"],
                         xent_weight=lc["xent_weight"], triplet_weight=lc["triplet_weight"],
                         centroid_weight=lc["centroid_weight"])
        # The learning rate is given as the per-step array (epoch-wise warm-up and milestones); the shared
        # schedule then stays constant. Coupled L2 on every parameter, BatchNorm's included, as the reference.
        optimizers = [
            OptimizerSpec("main", main, kind="adam", lr=lr_per_step(cfg, per_epoch, steps), schedule=Schedule(),
                          weight_decay=o["weight_decay"], decay_all=True,
                          options={"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
            # plain SGD; the 1 / center_weight gradient scale is built into the loss (weighted_center_loss)
            OptimizerSpec("center", [net.centers], kind="sgd", lr=float(o["center_lr"])),
        ]

        def forward(images, labels):
            return loss(images, labels)

        meta = {"preprocessing": preprocessing(cfg), "n_classes": ds.n_classes, "label_pids": ds.label_pids,
                "steps_per_epoch": per_epoch, "dataset": ds.summary()}
        evaluate = self._eval_hook(cfg, data, net) if t["eval_every"] else None
        return TrainPlan(network=net, forward=forward, loss_names=["xent", "triplet", "center", "centroid"],
                         optimizers=optimizers, data=source, steps=steps, evaluate=evaluate,
                         eval_every=t["eval_every"], log_every=t["log_every"], checkpoint_every=t["checkpoint_every"],
                         keep_checkpoints=t["keep_checkpoints"], meta=meta)

    def _eval_hook(self, cfg, data, net):
        from geocli.nets.copies import inference_copy

        def hook(_trainer) -> Dict[str, float]:
            figures = self.evaluate({**cfg, "eval": {**cfg["eval"], "centroids": False}}, data,
                                    inference_copy(lambda: build(cfg), net), None, None)
            net.set_train(True)
            return {k: v for k, v in figures.items() if k in ("rank1", "mAP")}

        return hook

    # ---- evaluation and inference ----------------------------------------------------------------
    def evaluate(self, cfg, data, network, out_dir: Optional[Path], ctx):
        from geocli.data.formats import reid
        from geocli.models.creid.scoring import score

        if data is None:
            raise UsageError("--data is required: a folder with query/ and bounding_box_test/ (Market/Duke), "
                             "MSMT17 lists, or query/ and gallery/ identity folders")
        e = cfg["eval"]
        if e["protocol"] not in ("fixed", "reference"):
            raise ConfigError(f"eval.protocol {e['protocol']!r}: choose fixed or reference")
        ds = reid.load(data, need_train=False)
        q = embed(network, ds.query.paths, cfg, ctx, "query")
        g = embed(network, ds.gallery.paths, cfg, ctx, "gallery")
        try:
            figures = score(q, ds.query.pids, ds.query.cams, g, ds.gallery.pids, ds.gallery.cams,
                            protocol=e["protocol"], centroids=e["centroids"], max_rank=e["max_rank"])
        except ValueError as exc:
            raise DataError(f"--data {data}: {exc}") from None
        figures.update(query_size=len(ds.query), protocol=e["protocol"])
        if out_dir is not None:
            from geocli.models.creid.features import save_split_features

            save_split_features(Path(out_dir) / "features.h5", ds, q, g)
        return figures

    def retrieve(self, cfg, inputs: Sequence[Path], network, out_dir: Path, ctx, **options):
        from geocli.models.creid.retrieve import run_retrieval

        return run_retrieval(cfg, inputs, network, Path(out_dir), ctx, **options)

    def demo(self, data_dir: Path, out_dir: Path, ctx, runner=None) -> Dict[str, Any]:
        from geocli.models.creid.demo import run_demo

        return run_demo(self, Path(data_dir), Path(out_dir), ctx, runner=runner)


__all__ = ["CReIDBackend", "build", "embed", "lr_per_step", "preprocessing"]
