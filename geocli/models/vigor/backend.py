"""The VIGOR backend: what ``geoloc train/eval/export/retrieve/demo vigor`` run (see base.Backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from geocli.data.formats import vigor as fmt
from geocli.errors import ConfigError, UsageError
from geocli.models.base import Backend
from geocli.models.vigor import data as vdata
from geocli.models.vigor import predict as pred
from geocli.models.vigor.headfit import fit_offset_head, head_inputs
from geocli.models.vigor.sampler import TileSampler
from geocli.runtime.plan import IndexedSource, OptimizerSpec, Schedule, TrainPlan

RECIPES = ("two-stage", "one-stage")


def network(cfg: Dict[str, Any], training: bool = False):
    from geocli.models.vigor.net import build

    try:
        net = build(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    net.set_train(training)
    return net


def require_data(data: Optional[Path]) -> Path:
    if data is None:
        raise UsageError("--data is required: a VIGOR folder (<City>/panorama, <City>/satellite, splits/), e.g. "
                         "one written by `geoloc data synth vigor --out DIR`")
    return Path(data)


def lr_table(cfg: Dict[str, Any], steps: int) -> np.ndarray:
    """``lr * decay_rate ^ (step / decay_steps)`` per global step (tf.train.exponential_decay, staircase=False)."""
    o = cfg["optim"]
    return (o["lr"] * float(o["decay_rate"]) ** (np.arange(steps) / float(o["decay_steps"]))).astype(np.float32)


def stage_of(cfg: Dict[str, Any]) -> str:
    t = cfg["train"]
    if t["recipe"] not in RECIPES:
        raise ConfigError(f"train.recipe {t['recipe']!r}: choose one of {', '.join(RECIPES)}")
    if str(t["stage"]) not in ("1", "2"):
        raise ConfigError(f"train.stage {t['stage']!r}: choose 1 or 2")
    return "all" if t["recipe"] == "one-stage" else str(t["stage"])


def make_forward(net, cfg: Dict[str, Any], with_semi: bool):
    """``(forward, loss names)`` for the trainer: stage 1 ``forward(panoramas, tiles)`` -> triplet; with the
    semi-positives ``forward(panoramas, tiles, semis, iou_ratio, offset)`` -> triplet + IoU + offset (the
    satellite branch runs once on positives and semi-positives together, as the reference does)."""
    from mindspore import ops

    from geocli.models.vigor import loss as L

    lc = cfg["loss"]
    alpha, diag = float(lc["alpha"]), bool(lc["triplet_diagonal"])
    wi, wo = float(lc["iou_weight"]), float(lc["offset_weight"])
    if not with_semi:
        def forward(grd, sat):
            g, _ = net.grd(grd)
            s, _ = net.sat(sat)
            triplet = L.soft_margin_triplet(s, g, alpha, diag)
            return triplet, triplet
        return forward, ["triplet"]

    def forward_all(grd, sat, semi, iou_ratio, offset):
        g, g_raw = net.grd(grd)
        both, both_raw = net.sat(ops.concat((sat, semi), 0))
        n = grd.shape[0]
        s, s_raw, m = both[:n], both_raw[:n], both[n:]
        triplet = L.soft_margin_triplet(s, g, alpha, diag)
        iou = L.iou_loss(s, m, g, iou_ratio)
        off = L.offset_loss(net.offset(s, s_raw, g, g_raw), offset)
        return triplet + wi * iou + wo * off, triplet, iou, off
    return forward_all, ["triplet", "iou", "offset"]


def optimizer(cfg: Dict[str, Any], params) -> OptimizerSpec:
    """Adam (betas, eps from the config); the decay table is installed by :class:`ScheduleHook`."""
    o = cfg["optim"]
    return OptimizerSpec("vigor", list(params), kind="adam", lr=o["lr"], schedule=Schedule("constant"),
                         options={"beta1": o["beta1"], "beta2": o["beta2"], "eps": o["eps"]})


class ScheduleHook:
    """First epoch hook: installs the continuous exponential decay as the optimizer's per-step table
    (the shared schedules have no exponential one) and makes sure a stage-2 run continues a stage-1 one.

    Installing the table here also repairs ``--resume``: the restored optimizer state carries the
    stage-1 run's (shorter) table, and the global step indexes this one."""

    def __init__(self, table: np.ndarray, stage: str):
        self.table, self.stage, self.done = table, stage, False

    def __call__(self, trainer, epoch: int) -> None:
        if self.done:
            return
        import mindspore as ms

        if self.stage == "2" and trainer.step == 0:
            raise ConfigError("--stage 2 continues a stage-1 run with its global step and Adam state: pass "
                              "--resume RUN/checkpoints/last.ckpt (and --out for a new folder)")
        for opt in trainer.optimizers:  # nn.Adam wraps a per-step table in an _IteratorLearningRate cell
            table = getattr(opt.learning_rate, "learning_rate", opt.learning_rate)
            table.set_data(ms.Tensor(self.table))
        self.done = True


class MiningHook:
    """Every epoch: score a random pool of tiles against all training panoramas with the current network
    and give the sampler each panorama's top-K tiles (see sampler.py). A resumed run whose checkpoint
    holds the lists of the interrupted epoch keeps them instead of mining again."""

    def __init__(self, sampler: TileSampler, net, split: fmt.VigorSplit, prep: Dict[str, Any], cfg: Dict[str, Any]):
        self.sampler, self.net, self.split, self.prep, self.cfg = sampler, net, split, prep, cfg

    def mine(self, epoch: int) -> np.ndarray:
        from geocli.models.vigor.net import GroundGraph, SatelliteGraph
        from geocli.retrieval.search import topk_search

        t, split, bs = self.cfg["train"], self.split, self.cfg["eval"]["batch_size"]
        rng = np.random.default_rng([self.cfg["seed"], epoch, 7])
        pool = np.sort(rng.choice(split.n_tiles, size=min(t["mining_pool"], split.n_tiles), replace=False))
        self.net.set_train(False)
        try:
            grd, _ = pred.run_branch(GroundGraph(self.net), vdata.image_batches(
                split.root, split.pano_paths, self.prep["pano_hw"], self.prep, bs), len(split))
            sat, _ = pred.run_branch(SatelliteGraph(self.net), vdata.image_batches(
                split.root, [split.tile_paths[i] for i in pool], self.prep["sat_hw"], self.prep, bs), len(pool))
        finally:
            self.net.set_train(True)
        found = topk_search(grd, sat, k=min(t["mining_top"], len(pool)))
        return pool[found.indices]

    def __call__(self, trainer, epoch: int) -> None:
        if self.sampler.pool_epoch == epoch:
            return  # restored from the checkpoint of a run interrupted in this epoch: keep its lists
        active = epoch >= self.cfg["train"]["mining_start"]
        self.sampler.set_epoch(epoch, self.mine(epoch) if active else None)


class VigorBackend(Backend):
    engines = ("mindspore", "onnxruntime")  # geocli.runtime.engine: eval and the retrieve index/query run on either

    # ---- networks -------------------------------------------------------------------------------
    def build_network(self, cfg, *, training=False):
        return network(cfg, training)

    def export_graphs(self, cfg, net):
        """Three graphs: ``ground`` (panorama 1x3xHxW -> descriptor, raw descriptor), ``satellite``
        (tile -> descriptor, raw descriptor) and ``offset`` ([satellite, ground] descriptors -> offset/320)."""
        from geocli.export import ExportGraph
        from geocli.models.vigor.net import GroundGraph, OffsetGraph, SatelliteGraph, example_inputs

        pano, tile = example_inputs(cfg)
        rng = np.random.default_rng(1)
        desc = rng.standard_normal((2, 1, net.dim)).astype(np.float32)
        return [ExportGraph("ground", GroundGraph(net), [pano]), ExportGraph("satellite", SatelliteGraph(net), [tile]),
                ExportGraph("offset", OffsetGraph(net), [desc[0], desc[1]])]

    # ---- training -------------------------------------------------------------------------------
    def train_plan(self, cfg, data, ctx):
        from geocli.runtime.runlog import default_logger

        data = require_data(data)
        d, t = cfg["data"], cfg["train"]
        stage = stage_of(cfg)
        split = fmt.load_split(data, d["setting"], "train", d["labels"])
        prep = vdata.prep_options(cfg)
        with_semi = stage in ("2", "all")
        batch = int(t["stage2_batch_size"] if stage == "2" else t["batch_size"])
        if batch < 2:  # the triplet loss divides by N (N - 1): one panorama has no negative tile
            key = "train.stage2_batch_size" if stage == "2" else "train.batch_size"
            raise ConfigError(f"{key}={batch}: VIGOR's triplet loss needs at least 2 panoramas per device batch")
        iters = max(len(split) // int(t["iters_divisor"]), 1)
        sampler = TileSampler(split.positive, split.semi, batch * ctx.group_size, iters,
                              mode="reference" if t["tile_exclusive"] else "port", mining_start=t["mining_start"],
                              mined_fraction=t["mined_fraction"])
        source = IndexedSource(len(split), batch, vdata.TrainLoader(split, prep, with_semi), seed=cfg["seed"],
                               rank=ctx.rank, group_size=ctx.group_size, sampler=sampler,
                               workers=d["workers"], prefetch=d["prefetch"])
        per_epoch = source.steps_per_epoch()
        epochs = t["epochs_same_area"] if d["setting"] == "same-area" else t["epochs_cross_area"]
        steps = int(t["steps"]) or per_epoch * (int(epochs[0]) + (int(epochs[1]) if stage == "2" else 0))
        net = network(cfg, True)
        forward, names = make_forward(net, cfg, with_semi)
        opt = optimizer(cfg, net.trainable_params())
        hooks: List[Any] = [ScheduleHook(lr_table(cfg, steps), stage)]
        if t["recipe"] == "two-stage" and t["mining"] and t["tile_exclusive"]:
            hooks.append(MiningHook(sampler, net, split, prep, cfg))
        finish = []
        if int(t["head_fit_steps"]) > 0 and with_semi:  # the head is trained only where the offset loss is
            log = default_logger(ctx.log).info

            def fit_head(trainer) -> None:  # its figures go into the checkpoint's metadata
                trainer.plan.meta["head_fit"] = fit_offset_head(net, cfg, split, prep, log)
            finish.append(fit_head)
        default_logger(ctx.log).info(
            f"vigor: {d['setting']} stage {stage}, {len(split)} training panoramas, {split.n_tiles} tiles, "
            f"{per_epoch} iterations per epoch, batch {batch} x {ctx.group_size}")
        meta = {"preprocessing": prep, "stage": stage, "train_panoramas": len(split)}
        return TrainPlan(network=net, forward=forward, loss_names=names, optimizers=[opt], data=source, steps=steps,
                         epoch_hooks=hooks, finish_hooks=finish, log_every=t["log_every"],
                         checkpoint_every=int(t["checkpoint_every"]) or per_epoch,
                         keep_checkpoints=t["keep_checkpoints"], meta=meta)

    # ---- evaluation ------------------------------------------------------------------------------
    def evaluate(self, cfg, data, net, out_dir: Path, ctx, progress=None):
        import json

        from geocli.fileio import atomic_write_text
        from geocli.runtime import engine as engines

        data = require_data(data)
        d, e = cfg["data"], cfg["eval"]
        if e["protocol"] not in ("reference", "port"):
            raise ConfigError(f"eval.protocol {e['protocol']!r}: choose reference or port")
        split = fmt.load_split(data, d["setting"], "test", d["labels"])
        prep = vdata.prep_options(cfg)
        bs = int(e["batch_size"])
        net.set_train(False)
        engine, checkpoint = getattr(ctx, "engine", engines.DEFAULT), getattr(ctx, "checkpoint", None)
        fns = tuple(engines.runner(engine, self, cfg, net, graph=g, batch_size=bs, checkpoint=checkpoint)
                    for g in ("ground", "satellite"))
        grd, grd_norm, sat, sat_norm = pred.describe_split(net, split, prep, bs, progress, fns)
        recall, top1 = pred.chunked_recall(grd, sat, split.positive, split.semi, e["protocol"], int(e["chunk"]))
        offsets = self.offsets(cfg, net, grd, grd_norm, sat[top1], sat_norm[top1])
        err0 = pred.metre_errors(split, top1, None)
        err1 = pred.metre_errors(split, top1, offsets)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        curves = {"top-1 tile centre": pred.accuracy_curve(err0), "+ offset head": pred.accuracy_curve(err1)}
        pred.plot_curves(out_dir / "accuracy_vs_threshold.png", curves,
                         f"VIGOR {d['setting']} ({len(split)} queries, {split.n_tiles} tiles)")
        atomic_write_text(out_dir / "accuracy_vs_threshold.json", json.dumps(pred.curve_rows(curves)) + "\n")
        pred.write_per_query(out_dir / "per_query.csv", split, top1, err0, err1)
        # the offset head's own effect, where the retrieval is right (a wrong tile dominates the error)
        hit = top1 == split.positive
        local = {"positive_top1": int(hit.sum()),
                 "median_m_positive_top1": float(np.median(err0[hit])) if hit.any() else float("nan"),
                 "offset_median_m_positive_top1": float(np.median(err1[hit])) if hit.any() else float("nan")}
        # ... and the head alone, on (positive tile, query) for every query: a steadier figure than the
        # few queries whose top-1 is right (an addition; the reference runs the head on the top-1 tile only)
        pos = split.positive
        err_pos = pred.metre_errors(split, pos, self.offsets(cfg, net, grd, grd_norm, sat[pos], sat_norm[pos]))
        local["median_m_positive"] = float(np.median(pred.metre_errors(split, pos, None)))
        local["offset_median_m_positive"] = float(np.median(err_pos))
        return {**recall, "random_r@1": 100.0 / split.n_tiles, **pred.error_summary(err0, ""),
                **pred.error_summary(err1, "offset_"), **local, "queries": len(split), "tiles": split.n_tiles}

    def offsets(self, cfg, net, grd, grd_norm, sat, sat_norm) -> np.ndarray:
        """The offset head on (retrieved tile, query) pairs, ``eval.offset_batch`` at a time."""
        import mindspore as ms

        from geocli.models.vigor.net import OffsetGraph

        head = OffsetGraph(net)
        s_in, g_in = head_inputs(cfg, grd, grd_norm, sat, sat_norm)
        b = int(cfg["eval"]["offset_batch"])
        out = []
        for start in range(0, len(grd), b):
            ss, gg = s_in[start:start + b], g_in[start:start + b]
            pad = b - len(ss)
            if pad:
                ss = np.concatenate([ss, np.repeat(ss[-1:], pad, 0)])
                gg = np.concatenate([gg, np.repeat(gg[-1:], pad, 0)])
            out.append(head(ms.Tensor(ss.astype(np.float32)), ms.Tensor(gg.astype(np.float32))).asnumpy()[:b - pad])
        return np.concatenate(out)

    def demo(self, data_dir: Path, out_dir: Path, ctx, runner=None) -> Dict[str, Any]:
        from geocli.models.vigor.demo import run_demo

        return run_demo(self, Path(data_dir), Path(out_dir), ctx, runner=runner)


__all__: Sequence[str] = ("VigorBackend", "lr_table")
