"""The SDNet backend: what ``geoloc train/eval/export/match/demo sdnet`` run (see base.Backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from geocli.errors import ConfigError, DataError, UsageError
from geocli.metrics.patch import fpr_at_recall, match_accuracy
from geocli.models.base import Backend
from geocli.models.sdnet import data as sdata
from geocli.runtime import engine
from geocli.runtime.plan import IndexedSource, OptimizerSpec, Schedule, TrainPlan

#: The three parameter groups of the port, each with its own Adam (identical settings).
GROUPS = ("focal", "lower", "decoder")


def _network(cfg: Dict[str, Any], training: bool):
    from geocli.models.sdnet.net import SDNet

    m = cfg["model"]
    if not 0.0 <= m["dropout"] < 1.0:
        raise ConfigError(f"model.dropout {m['dropout']}: must be in [0, 1)")
    net = SDNet(dropout=m["dropout"], init_gain=m["init_gain"], seed=int(cfg["seed"]))
    net.set_train(training)
    return net


def lr_end_factor(cfg: Dict[str, Any], total_steps: int, global_batch: int, n_train: int) -> float:
    """``end_factor`` of the shared linear schedule: 0 by default (clipped); with ``optim.clip_lr: false``
    the value that makes lr_i = lr * (1 - i * global_batch / (num_train * epochs)), the port's formula,
    which is negative over the last steps when the last batch is partial."""
    if cfg["optim"]["clip_lr"]:
        return 0.0
    num_train = int(cfg["train"]["num_train"]) or n_train
    return 1.0 - total_steps * global_batch / (num_train * int(cfg["train"]["epochs"]))


def optimizers(cfg: Dict[str, Any], net, total_steps: int, end_factor: float) -> List[OptimizerSpec]:
    """The port's three Adams over (stems + trunk), Lower branches, decoder: same lr, betas, eps, L2."""
    o = cfg["optim"]
    schedule = Schedule(name="linear", end_factor=end_factor)
    options = {"beta1": o["beta1"], "beta2": o["beta2"], "eps": o["eps"]}
    groups = net.parameter_groups()
    return [OptimizerSpec(name, groups[name], kind="adam", lr=o["lr"], schedule=schedule,
                          weight_decay=o["weight_decay"], options=dict(options)) for name in GROUPS]


def descriptor_fn(network, cfg: Dict[str, Any], modality: str) -> Callable[[np.ndarray], np.ndarray]:
    """NumPy (B,1,64,64) -> (B,128) through one branch (``optical`` or ``sar``) of ``network``, in eval
    mode on MindSpore, as ``eval`` runs it (a BatchNorm-folded copy: ``network`` is not changed)."""
    from geocli import registry

    run = engine.runner(engine.DEFAULT, registry.load_backend("sdnet"), cfg, network, graph=modality)
    return lambda x: run(x)[0]


def pair_distances(network, pairs, batch_size: int, run=None) -> np.ndarray:
    """L2 distance between the optical and SAR descriptors of every row (network in eval mode).

    ``run`` computes the ``descriptors`` export graph over NumPy batches on the engine the command chose
    (:func:`geocli.runtime.engine.runner`); by default MindSpore runs ``network`` itself."""
    if run is None:
        from geocli.models.sdnet.net import Descriptors

        run = engine.cell_runner(Descriptors(network))
    out = []
    for opt, sar in sdata.test_batches(pairs, batch_size):
        a, b = run(opt, sar)
        out.append(np.linalg.norm(a - b, axis=1))
    return np.concatenate(out)


def patch_metrics(distances: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """FPR95 (false-positive rate at 95 % recall, HardNet's definition; the port prints it as
    "Accuracy(FPR95)") and the port's accuracy (the k closest pairs called matches, k = #matches)."""
    return {"fpr95": fpr_at_recall(distances, labels, 0.95), "accuracy": match_accuracy(distances, labels)}


class SDNetBackend(Backend):
    engines = ("mindspore", "onnxruntime")  # geocli.runtime.engine: eval runs on either
    fold_batchnorm = True  # eval and match run a BatchNorm-folded copy (geocli.nets.fold)

    # ---- networks -------------------------------------------------------------------------------
    def build_network(self, cfg, *, training=False):
        return _network(cfg, training)

    def export_inputs(self, cfg):
        rng = np.random.default_rng(0)
        return [rng.uniform(-1, 1, (1, 1, 64, 64)).astype(np.float32) for _ in range(2)]

    def export_graphs(self, cfg, network):
        """``descriptors``: (optical, SAR) 1x1x64x64 each -> (opt_e, sar_e), the port's two inputs;
        ``optical`` and ``sar``: one branch each, 1x1x64x64 -> 1x128, for deployment."""
        from geocli.export import ExportGraph
        from geocli.models.sdnet.net import Branch, Descriptors

        network.set_train(False)
        opt, sar = self.export_inputs(cfg)
        graphs = [ExportGraph("descriptors", Descriptors(network), [opt, sar]),
                  ExportGraph("optical", Branch(network, "optical"), [opt]),
                  ExportGraph("sar", Branch(network, "sar"), [sar])]
        for g in graphs:
            g.cell.set_train(False)
        return graphs

    # ---- training -------------------------------------------------------------------------------
    def train_plan(self, cfg, data, ctx):
        from geocli.models.sdnet.loss import TERMS, SDNetLoss
        from geocli.runtime.runlog import default_logger

        log = default_logger(ctx.log)
        d, t = cfg["data"], cfg["train"]
        path = sdata.find_file(data, d["train_file"])
        pairs = sdata.open_train(path)
        n, batch = len(pairs), int(t["batch_size"])
        if n < batch * ctx.group_size:
            raise DataError(f"{path}: {n} pairs cannot fill one batch of {batch} x {ctx.group_size} devices; "
                            "lower train.batch_size")
        # A last batch of one pair would give BatchNorm a zero-size unbiased variance (NaN running
        # statistics at the 1x1 descriptor layer) and HardNet no negative: drop such a remainder.
        drop_last = bool(d["drop_last"]) or ctx.group_size > 1 or n % batch == 1
        source = IndexedSource(n, batch, sdata.PairBatches(path), seed=int(cfg["seed"]), rank=ctx.rank,
                               group_size=ctx.group_size, shuffle=bool(d["shuffle"]), drop_last=drop_last,
                               workers=int(d["workers"]), prefetch=int(d["prefetch"]))
        per_epoch = source.steps_per_epoch()
        steps = int(t["steps"]) or per_epoch * int(t["epochs"])
        end = lr_end_factor(cfg, per_epoch * int(t["epochs"]), batch * ctx.group_size, n)
        log.info(f"sdnet: {n} training pairs in {path} (read per batch, not loaded), {per_epoch} steps per epoch, "
                 f"{steps} steps")
        net = _network(cfg, True)
        lc = cfg["loss"]
        loss = SDNetLoss(lc["margin"], lc["anchor_swap"], lc["recon_weight"], lc["kl_weight"], lc["temperature"])

        def forward(opt, sar):
            return loss(net(opt, sar), opt, sar)

        evaluate, every = None, 0
        if t["eval_every_epoch"]:
            evaluate, every = self._eval_hook(cfg, data, net), per_epoch
        return TrainPlan(network=net, forward=forward, loss_names=list(TERMS),
                         optimizers=optimizers(cfg, net, steps, end), data=source, steps=steps,
                         evaluate=evaluate, eval_every=every, log_every=int(t["log_every"]),
                         checkpoint_every=per_epoch if t["checkpoint_every_epoch"] else 0,
                         keep_checkpoints=int(t["keep_checkpoints"]),
                         meta={"train_pairs": n, "steps_per_epoch": per_epoch})

    def _eval_hook(self, cfg, data, net):
        from geocli.data.sen12_npz import open_pairs

        test = open_pairs(sdata.find_file(data, cfg["data"]["test_file"]))

        def hook(_trainer) -> Dict[str, float]:
            net.set_train(False)
            try:
                return patch_metrics(pair_distances(net, test, int(cfg["eval"]["batch_size"])), test.labels)
            finally:
                net.set_train(True)

        return hook

    # ---- evaluation and inference ----------------------------------------------------------------
    def evaluate(self, cfg, data, network, out_dir: Path, ctx):
        from geocli.data.sen12_npz import open_pairs
        from geocli.models.sdnet.demo import distance_histogram

        path = sdata.find_file(data, cfg["data"]["test_file"])
        test = open_pairs(path)
        n_pos = int(test.labels.sum())
        if n_pos == 0 or n_pos == len(test):
            raise DataError(f"{path}: FPR95 needs matches and non-matches; it holds {n_pos} of {len(test)} matches")
        network.set_train(False)
        batch = int(cfg["eval"]["batch_size"])
        run = engine.runner(getattr(ctx, "engine", engine.DEFAULT), self, cfg, network, graph="descriptors",
                            batch_size=batch, checkpoint=getattr(ctx, "checkpoint", None))
        dist = pair_distances(network, test, batch, run=run)
        metrics = patch_metrics(dist, test.labels)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        distance_histogram(dist, test.labels, out_dir / "distances.png")
        metrics.update({"pairs": len(test), "matches": n_pos,
                        "published_fpr95": float(cfg["eval"]["published_fpr95"]),
                        "published_accuracy": float(cfg["eval"]["published_accuracy"])})
        return metrics

    def match(self, cfg, inputs: Sequence[Path], network, out_dir: Path, ctx, **options):
        """Register SAR onto optical: ``geoloc match sdnet OPTICAL SAR``; writes registration.png."""
        import cv2

        from geocli.fileio import atomic_write_text
        from geocli.models.sdnet import register as reg

        if len(inputs) != 2:
            raise UsageError(f"match sdnet takes two images, OPTICAL then SAR; got {len(inputs)}")
        optical, sar = reg.read_image(inputs[0]), reg.read_image(inputs[1])
        network.set_train(False)
        result = reg.register(descriptor_fn(network, cfg, "optical"), descriptor_fn(network, cfg, "sar"), optical, sar,
                              cfg["match"], batch=int(cfg["eval"]["batch_size"]))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        picture = out_dir / "registration.png"
        cv2.imwrite(str(picture), reg.picture(optical, sar, result))
        summary = {"optical": str(inputs[0]), "sar": str(inputs[1]), **result.summary(),
                   "registered": result.transform is not None, "picture": str(picture)}
        import json

        atomic_write_text(out_dir / "registration.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def demo(self, data_dir: Path, out_dir: Path, ctx, runner=None) -> Dict[str, Any]:
        from geocli.models.sdnet.demo import run_demo

        return run_demo(self, Path(data_dir), Path(out_dir), ctx, runner=runner)


__all__ = ["SDNetBackend", "patch_metrics", "pair_distances", "lr_end_factor"]
