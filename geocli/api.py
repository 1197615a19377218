"""The library API behind every command: ``geocli.api.train(...)`` is ``geoloc train``.

Each function takes the same arguments as its command, does the work, and returns paths and figures;
it never prints tables or exits (the CLI layer renders results and maps errors to exit codes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from geocli import config as cfgmod
from geocli import registry, runs
from geocli.errors import CheckpointError, UsageError
from geocli.fileio import atomic_write_text


@dataclass
class Loaded:
    """A model restored from a checkpoint, ready for eval/export/retrieve/match."""

    backend: Any
    cfg: Dict[str, Any]
    network: Any
    meta: Dict[str, Any]


def _context(run_dir: Path, device, mode, seed, threads, quiet: bool = False, distributed=None):
    from geocli.runtime import context
    from geocli.runtime.runlog import RunLogger

    ctx = context.setup(run_dir, device=device, mode=mode, seed=seed, threads=threads, distributed=distributed)
    ctx.log = RunLogger(run_dir, rank=ctx.rank, quiet=quiet)
    return ctx


def train(model: str, *, preset: Optional[str] = None, config_file: Optional[Path] = None,
          overrides: Iterable[str] = (), data: Optional[Path] = None, out: Optional[Path] = None,
          device: Optional[str] = None, mode: str = "graph", seed: Optional[int] = None,
          threads: Optional[int] = None, resume: Optional[str] = None, weights: Optional[Path] = None,
          quiet: bool = False, progress: Optional[Callable] = None):
    """Train ``model``; returns a :class:`geocli.runtime.trainer.TrainResult`.

    ``resume`` ('auto' or a path) restores network, optimizer state and step and continues in the same
    run folder with the checkpoint's config (``overrides`` still apply, e.g. more steps); ``weights``
    only initialises the network.
    """
    from geocli.runtime import interrupt

    interrupt.defer()  # before MindSpore starts its threads: Ctrl-C then ends the run cleanly
    try:
        return _train(model, preset=preset, config_file=config_file, overrides=overrides, data=data, out=out,
                      device=device, mode=mode, seed=seed, threads=threads, resume=resume, weights=weights,
                      quiet=quiet, progress=progress)
    finally:
        interrupt.restore()


def _train(model, *, preset, config_file, overrides, data, out, device, mode, seed, threads, resume, weights,
           quiet, progress):
    from geocli.runtime import checkpoint as ckpt
    from geocli.runtime import trainer

    spec = registry.get(model, "train")
    preset = preset or spec.default_preset
    resume_path = runs.resolve_resume(resume, spec.name, preset, out) if resume else None
    if resume_path is not None:
        meta = ckpt.read_meta(resume_path)
        _check_model(meta, spec.name, resume_path)
        if "step" not in meta or "config" not in meta:
            raise CheckpointError(f"{resume_path}: has no training state (not written by geoloc train); "
                                  "use --weights to initialise from it instead of --resume")
        cfg = cfgmod.apply_overrides(meta["config"], overrides)
        preset = meta.get("preset", preset)
        run_dir = Path(out) if out is not None else (runs.run_dir_of_checkpoint(resume_path) or runs.new_run_dir(spec.name, preset))
    else:
        cfg = cfgmod.resolve(spec.name, preset, config_file, overrides)
        run_dir = runs.new_run_dir(spec.name, preset, out)
    if weights is not None and not Path(weights).is_file():
        raise UsageError(f"--weights {weights}: file not found")
    seed = int(cfg.get("seed", 0)) if seed is None else seed
    ctx = _context(run_dir, device, mode, seed, threads, quiet)
    if ctx.is_main:
        cfgmod.save(cfg, run_dir / "config.yaml")
    backend = registry.load_backend(spec.name)
    plan = backend.train_plan(cfg, Path(data) if data else None, ctx)
    meta = {"model": spec.name, "preset": preset, "config": cfg, "seed": seed,
            "data": str(data) if data else None, "group_size": ctx.group_size}
    ctx.log.info(f"training {spec.name} ({preset}) on {ctx.device} x{ctx.group_size}, {plan.steps} steps -> {run_dir}")
    try:
        return trainer.train(plan, ctx, resume=resume_path, weights=weights, meta=meta,
                             mapper=lambda p: backend.map_weights(p, cfg), progress=progress)
    finally:
        ctx.log.close()


def _check_model(meta: Dict[str, Any], model: str, path: Path) -> None:
    if meta.get("model") and meta["model"] != model:
        raise CheckpointError(f"{path}: is a {meta['model']} checkpoint, not {model}")


def load_model(model: str, checkpoint: Optional[Path], *, preset: Optional[str] = None,
               config_file: Optional[Path] = None, overrides: Iterable[str] = (), task: Optional[str] = None,
               strict: bool = True) -> Loaded:
    """Build the network of ``model`` and load ``checkpoint`` into it.

    A geoloc checkpoint brings its own resolved config; a foreign one (e.g. a ModelZoo checkpoint) is
    loaded through the backend's parameter-name map with the preset's config. Without a checkpoint the
    network keeps its initial weights (only useful for smoke tests and export checks)."""
    from geocli.runtime import checkpoint as ckpt

    spec = registry.get(model, task)
    backend = registry.load_backend(spec.name)
    meta: Dict[str, Any] = {}
    params: Dict[str, Any] = {}
    if checkpoint is not None:
        params, meta = ckpt.load(checkpoint)
        _check_model(meta, spec.name, checkpoint)
    if meta.get("config") and config_file is None:  # keys added to the model since: its defaults
        cfg = cfgmod.apply_overrides(cfgmod.with_defaults(meta["config"], cfgmod.load_preset(spec.name)), overrides)
    else:
        cfg = cfgmod.resolve(spec.name, preset or meta.get("preset") or spec.default_preset, config_file, overrides)
    network = backend.build_network(cfg)
    if checkpoint is not None:
        net_params, _ = ckpt.split_optimizer_state(params)
        if not meta:
            net_params = backend.map_weights(net_params, cfg)
        ckpt.load_into(network, net_params, checkpoint, strict=strict)
    network.set_train(False)
    return Loaded(backend, cfg, network, meta)


def _task_dir(kind: str, model: str, checkpoint: Optional[Path], out: Optional[Path]) -> Path:
    if out is not None:
        return Path(out)
    run = runs.run_dir_of_checkpoint(checkpoint) if checkpoint else None
    return runs.new_run_dir(model, kind, root=run)  # <run>/<kind>-<time> or runs/<model>-<kind>-<time>


def evaluate(model: str, checkpoint: Optional[Path], *, data: Optional[Path] = None, out: Optional[Path] = None,
             preset: Optional[str] = None, config_file: Optional[Path] = None, overrides: Iterable[str] = (),
             device: Optional[str] = None, mode: str = "graph", threads: Optional[int] = None,
             quiet: bool = False, engine: str = "mindspore"):
    """Evaluate with the model's published protocol; returns (metrics, output folder with metrics.json).

    ``engine`` runs the network in MindSpore or in onnxruntime (``geocli.runtime.engine``)."""
    from geocli.runtime import engine as engines

    engine = engines.check(engine)
    registry.get(model, "eval")
    out_dir = _task_dir("eval", model, checkpoint, out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = _context(out_dir, device, mode, 0, threads, quiet, distributed=False)
    loaded = load_model(model, checkpoint, preset=preset, config_file=config_file, overrides=overrides, task="eval")
    ctx.engine, ctx.checkpoint = engines.require(loaded.backend, engine, "eval"), checkpoint
    metrics = loaded.backend.evaluate(loaded.cfg, Path(data) if data else None, loaded.network, out_dir, ctx)
    write_metrics(out_dir, model, metrics, checkpoint=checkpoint, data=data)
    ctx.log.close()
    return metrics, out_dir


def write_metrics(out_dir: Path, model: str, metrics: Dict[str, Any], *, checkpoint: Optional[Path] = None,
                  data: Optional[Path] = None) -> Path:
    """The one writer of ``metrics.json``: what was evaluated, on what, and the figures."""
    payload = {"model": model, "checkpoint": str(checkpoint) if checkpoint else None,
               "data": str(data) if data else None, "metrics": metrics}
    return atomic_write_text(Path(out_dir) / "metrics.json", json.dumps(payload, indent=2) + "\n")


def infer(task: str, model: str, inputs: Sequence[Path], checkpoint: Optional[Path], *,
          out: Optional[Path] = None, overrides: Iterable[str] = (), device: Optional[str] = None,
          mode: str = "graph", threads: Optional[int] = None, quiet: bool = False, engine: str = "mindspore",
          **options):
    """``retrieve`` or ``match``: run the backend's inference command; returns (result, output folder).

    ``engine`` runs the network in MindSpore or in onnxruntime (``geocli.runtime.engine``)."""
    from geocli.runtime import engine as engines

    if task not in ("retrieve", "match"):
        raise ValueError(task)
    engine = engines.check(engine)
    registry.get(model, task)
    out_dir = _task_dir(task, model, checkpoint, out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = _context(out_dir, device, mode, 0, threads, quiet, distributed=False)
    loaded = load_model(model, checkpoint, overrides=overrides, task=task)
    ctx.engine, ctx.checkpoint = engines.require(loaded.backend, engine, task), checkpoint
    method = getattr(loaded.backend, task)
    result = method(loaded.cfg, [Path(p) for p in inputs], loaded.network, out_dir, ctx, **options)
    ctx.log.close()
    return result, out_dir


def list_models(include_hidden: bool = False) -> List[registry.ModelSpec]:
    return [registry.get(n) for n in registry.names(include_hidden=include_hidden)]
