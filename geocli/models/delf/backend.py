"""The DELF backend: the network and two-stage training (part 1); inference tasks live in tasks.py.

``build_network(cfg)`` is the extraction network (mode ``test``): NCHW float32 images normalised as
``(x - 128) / 128``, any height and width, returning ``(prob [N,1,h,w], block3 [N,1024,h,w])``. Its
parameter names are those of the training networks, so a checkpoint of ``geoloc train delf --stage
attn`` loads into it strictly (the classifiers and conv5 it does not use are left over).

Training (``train_plan``), as the port's train.py:

* ``train.stage: tuning``: backbone + descriptor classifier, cross-entropy; every backbone parameter
  trains, the stem included. Start it from ImageNet weights with ``--weights`` (a checkpoint of
  ``geoloc data convert-weights keras-resnet50``).
* ``train.stage: attn``: only ``attention.*`` and ``attn.*`` train (backbone AND descriptor classifier
  frozen), on the attention cross-entropy alone; BatchNorm stays in training mode everywhere, so the
  frozen backbone normalises with batch statistics and its moving statistics keep updating, as in the
  port. It must start from the tuning stage's checkpoint (``--weights``): without one, or with one
  lacking the tuned backbone and descriptor classifier, it stops before the first step.
* SGD momentum 0.9, global-norm clip 10, lr ``(lr - end_lr)(1 - s / steps) + end_lr`` with s counted
  from 0 in each stage, batch 32, 500,000 steps, a checkpoint every 2,000 steps; eval-while-train
  reports both classifiers' top-1 accuracy on the validation split.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

from geocli.errors import CheckpointError, ConfigError, DataError, UsageError
from geocli.models.base import Backend
from geocli.models.delf.tasks import DelfTasks
from geocli.runtime.plan import Clip, IndexedSource, OptimizerSpec, Schedule, TrainPlan

TRAINED_IN_ATTN = ("attention.", "attn.")


def network(cfg: Dict[str, Any], mode: str, num_classes: int = 1):
    """A DelfNet in ``mode`` (tuning, attn, test) for this config."""
    from geocli.models.delf.net import DelfNet

    try:
        return DelfNet(num_classes=num_classes, mode=mode, global_pool=cfg["model"]["global_pool"],
                       bn_momentum=cfg["model"].get("bn_momentum", 0.99), width=cfg["model"].get("width", 1.0))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def preprocessing(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """How images must be prepared for this network (stored in checkpoints)."""
    return {"normalise": "(x - 128) / 128", "layout": "NCHW RGB", "train_size": cfg["data"]["image_size"]}


def schedule(cfg: Dict[str, Any]) -> Schedule:
    """The port's PolynomialDecayLR(power 1) to ``end_lr`` over the stage: a linear schedule whose last
    factor is ``end_lr / lr``."""
    o = cfg["optim"]
    if o["lr"] <= 0 or o["end_lr"] < 0:
        raise ConfigError(f"optim.lr ({o['lr']}) must be > 0 and optim.end_lr ({o['end_lr']}) >= 0")
    return Schedule(name="linear", end_factor=float(o["end_lr"]) / float(o["lr"]))


def optimizer_spec(cfg: Dict[str, Any], params: List[Any]) -> OptimizerSpec:
    """SGD with momentum (the port's nn.SGD), global-norm clipping, the stage's linear decay.

    ``optim.kind: adam`` (the demo preset only) swaps SGD for Adam; clipping and schedule stay."""
    o = cfg["optim"]
    kind = str(o.get("kind", "sgd"))
    if kind not in ("sgd", "adam"):
        raise ConfigError(f"optim.kind={kind!r}: choose sgd (the port) or adam")
    clip = Clip("global_norm", o["clip_global_norm"]) if o["clip_global_norm"] > 0 else None
    options = {"momentum": o["momentum"]} if kind == "sgd" else {}
    return OptimizerSpec("delf", params, kind=kind, lr=o["lr"], schedule=schedule(cfg),
                         weight_decay=o["weight_decay"], clip=clip, options=options)


class DelfBackend(DelfTasks, Backend):
    fold_batchnorm = True  # extraction runs a BatchNorm-folded copy (geocli.nets.fold)
    # extraction (eval, match, retrieve and its extract/query) runs on either: tasks.extraction_network
    engines = ("mindspore", "onnxruntime")
    engine_tasks = ("eval", "retrieve", "match")

    def __init__(self, spec):
        super().__init__(spec)
        self._weights_loaded = False

    # ---- networks -------------------------------------------------------------------------------
    def build_network(self, cfg, *, training=False):
        """The extraction network (``test`` mode); ``training`` only switches BatchNorm to batch statistics."""
        net = network(cfg, "test")
        net.set_train(training)
        return net

    def export_inputs(self, cfg):
        """The extraction network's input, as the port's ``export.py`` fixes it: ``export.batch`` canvases
        (7, one per scale) of 3 x ``export.size`` x ``export.size`` (2048), NCHW float32 normalised. Outputs:
        ``prob`` (N, 1, h, w), the attention scores, and ``block3`` (N, 1024, h, w), the local features, with
        h = w = size / 32 (64 at 2048). An exported graph has this one input shape; the onnxruntime engine
        frees it (:func:`geocli.models.delf.tasks.extraction_network`)."""
        import numpy as np

        e = cfg["export"]  # a checkpoint's older config gets the section from default.yaml (api.load_model)
        batch, size = int(e["batch"]), int(e["size"])
        if batch < 1 or size < 32:
            raise ConfigError(f"export.batch {batch} / export.size {size}: need at least 1 image of 32 px")
        return [np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)]

    def map_weights(self, params, cfg):
        """Accept geoloc's names, the port's (``res2a_branch2a.weight``, ``attention.conv1_needl2.*``) and a
        converted Keras ResNet50; for ``--stage attn`` the tuned backbone and descriptor classifier must
        be in it."""
        from geocli.models.delf.weights import map_port_names, network_names

        own = network_names()
        mapped = map_port_names(params, own)
        if cfg["train"]["stage"] == "attn":
            lacking = [n for n in own if not n.startswith(TRAINED_IN_ATTN) and n not in mapped]
            if lacking:
                raise CheckpointError(f"--stage attn starts from the tuning stage's checkpoint, but --weights lacks "
                                      f"{lacking[0]} (+{len(lacking) - 1} more); pass the last.ckpt of "
                                      "`geoloc train delf --stage tuning`")
        self._weights_loaded = True
        return mapped

    # ---- training -------------------------------------------------------------------------------
    def train_plan(self, cfg, data, ctx):
        from geocli.data import readers
        from geocli.models.delf import data as ddata
        from geocli.models.delf.loss import DelfLoss, loss_names
        from geocli.models.delf.net import check_input_size
        from geocli.runtime.runlog import default_logger

        t, d, m = cfg["train"], cfg["data"], cfg["model"]
        stage = t["stage"]
        if stage not in ("tuning", "attn"):
            raise ConfigError(f"train.stage {stage!r}: choose tuning or attn (--stage)")
        try:
            check_input_size(d["image_size"], m["global_pool"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        train_files = ddata.split_files(data, "train")
        val_files = ddata.split_files(data, "validation")
        load = ddata.TrainBatches(train_files, d["image_size"], d["crop_scale"], d["crop_ratio"])
        val_rows = readers.MindRecordRows(val_files, columns=["data", "label"]) if val_files else None
        classes = m["num_classes"] or ddata.num_classes(data, [load.rows] + ([val_rows] if val_rows else []))
        log = default_logger(ctx.log)
        log.info(f"delf {stage}: {len(load)} training images, {len(val_rows) if val_rows else 0} validation, "
                 f"{classes} classes, from {data}")
        if len(load) < t["batch_size"] * ctx.group_size:
            raise DataError(f"--data {data}: {len(load)} training images cannot fill one batch of "
                            f"{t['batch_size']} x {ctx.group_size} ranks; lower train.batch_size")
        net = network(cfg, stage, classes)
        net.set_train(True)
        try:
            loss = DelfLoss(stage, t["attention_loss_weight"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

        def forward(images, labels):
            return loss(net(images), labels)

        params = list(net.trainable_params())
        if stage == "attn":
            params = [p for p in params if p.name.startswith(TRAINED_IN_ATTN)]
        optimizer = optimizer_spec(cfg, params)
        source = IndexedSource(len(load), t["batch_size"], load, seed=cfg["seed"], rank=ctx.rank,
                               group_size=ctx.group_size, workers=d["workers"], prefetch=d["prefetch"])
        evaluate = self._eval_hook(cfg, net, val_rows, stage) if (t["eval_every"] and val_rows) else None
        hooks = [self._start_check(stage)] if stage == "attn" else []
        extra = {"amp_level": t["amp_level"]} if "amp_level" in {f.name for f in dataclasses.fields(TrainPlan)} else {}
        meta = {"preprocessing": preprocessing(cfg), "num_classes": classes, "stage": stage,
                "train_images": len(load)}
        return TrainPlan(network=net, forward=forward, loss_names=loss_names(stage), optimizers=[optimizer],
                         data=source, steps=t["steps"], epoch_hooks=hooks, evaluate=evaluate,
                         eval_every=t["eval_every"], log_every=t["log_every"],
                         checkpoint_every=t["checkpoint_every"], keep_checkpoints=t["keep_checkpoints"],
                         meta=meta, **extra)

    def _start_check(self, stage: str):
        """Before the first step of a fresh attn run: the tuning checkpoint must have been loaded."""
        def hook(trainer, epoch: int) -> None:
            if trainer.step == 0 and not self._weights_loaded:
                raise UsageError(f"--stage {stage} trains only the attention branch on top of a tuned backbone: "
                                 "pass --weights with the last.ckpt of `geoloc train delf --stage tuning`")

        return hook

    def _eval_hook(self, cfg, net, val_rows, stage: str):
        """Top-1 of each classifier on the validation split (centre views, BatchNorm in eval mode)."""
        from geocli.models.delf import data as ddata

        e, d = cfg["eval"], cfg["data"]

        def hook(_trainer) -> Dict[str, float]:
            return validation_accuracy(net, ddata.eval_batches(val_rows, d["eval_size"], e["batch_size"],
                                                               cfg["train"]["eval_max_images"]), stage)

        return hook


def validation_accuracy(net, batches, stage: str) -> Dict[str, float]:
    """``{"val_desc_top1", ["val_attn_top1"]}`` of a training-mode network over (images, labels) batches;
    the network is put back in training mode afterwards."""
    import mindspore as ms
    import numpy as np

    net.set_train(False)
    correct: Dict[str, int] = {}
    total, size = 0, None
    try:
        for images, labels in batches:
            size = size or len(images)
            if len(images) < size:  # pad the last batch: one compiled graph for the whole pass
                images = np.concatenate([images, np.zeros((size - len(images),) + images.shape[1:], images.dtype)])
            outputs = net(ms.Tensor(images))
            if stage == "tuning":
                outputs = outputs[:len(labels)]
            else:
                outputs = (outputs[0][:len(labels)], outputs[1][:len(labels)])
            heads = {"desc": outputs} if stage == "tuning" else {"attn": outputs[0], "desc": outputs[1]}
            for name, logits in heads.items():
                correct[name] = correct.get(name, 0) + int((logits.asnumpy().argmax(axis=1) == labels).sum())
            total += len(labels)
    finally:
        net.set_train(True)
    return {f"val_{name}_top1": count / max(total, 1) for name, count in sorted(correct.items())}


__all__: List[str] = ["DelfBackend", "network", "optimizer_spec", "preprocessing", "validation_accuracy"]
