"""The one training loop every model uses.

A backend describes its run as a :class:`~geocli.runtime.plan.TrainPlan`; :func:`train` owns the rest:
building optimizers and schedules, the (jitted) step with per-optimizer gradients, gradient averaging
across ranks, clipping, static loss scaling, logging of every named loss term, checkpoints every N
steps with keep-max, eval-while-train, epoch hooks, ``--resume`` (full state) and ``--weights``
(initialisation only).

Gradients: optimizers that minimise the same loss share one backward pass; an optimizer that minimises
a different named term gets its own ``value_and_grad`` (SDNet's three Adams). Parameters owned by no
optimizer are frozen (DELF's attention stage).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from geocli.errors import CheckpointError, ConfigError, GeolocError
from geocli.runtime import amp, blocked_conv
from geocli.runtime import checkpoint as ckpt
from geocli.runtime import interrupt
from geocli.runtime.optim import build_optimizer, make_clipper, make_scaler, optimizer_state
from geocli.runtime.plan import RunContext, TrainPlan
from geocli.runtime.runlog import default_logger
from geocli.runtime.schedules import lr_values


DATA_PREFIX = "data/"  # checkpoint entries (under optimizer/) holding the data source's state


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Optional[Path]
    step: int
    losses: Dict[str, float]
    eval_metrics: Dict[str, float]
    seconds: float
    samples_per_second: float


def _objective(forward, index: int, scale: float, float32: bool = False):
    """The differentiated function of one optimizer group: its (scaled) loss term first, all terms as aux.

    A closure rather than a default argument, which MindSpore's graph compiler does not accept. Under
    mixed precision (``float32``) the terms are cast back to float32 before scaling and logging."""
    import mindspore as ms
    from mindspore import ops

    cast, f32 = ops.Cast(), ms.float32

    def objective(*batch):
        terms = forward(*batch)
        if float32:
            cast_terms = ()
            for term in terms:
                cast_terms = cast_terms + (cast(term, f32),)
            terms = cast_terms
        return terms[index] * scale, terms

    return objective


def _applier(optimizer, spec, start: int, end: int, loss_scale: float):
    """Apply one optimizer to its slice ``[start:end]`` of a stage's gradients (unscaled, clipped)."""
    scaler = make_scaler(spec.grad_scale / loss_scale)
    clipper = make_clipper(spec.clip)

    def apply(grads):
        return optimizer(clipper(scaler(grads[start:end])))

    return apply


def _stage(grad_fn, reducer, appliers):
    """One backward pass and the optimizers that share it; returns all loss terms and the gradient of
    the stage's first parameter (the step's wait marker, see :meth:`Trainer._build_step`)."""

    def stage(*batch):
        (_, terms), grads = grad_fn(*batch)
        if reducer is not None:
            grads = reducer(grads)
        for apply in appliers:
            apply(grads)
        return terms, grads[0]

    return stage


class _Window:
    """One logging window: the steps' loss terms (device tensors, fetched together when logged), images,
    and the seconds the loop waited for data vs spent stepping."""

    def __init__(self):
        self.terms: List[Any] = []
        self.images = 0
        self.wait = 0.0
        self.compute = 0.0
        self.started = time.perf_counter()

    def add(self, terms, images: int, wait: float, compute: float) -> None:
        self.terms.append(terms)
        self.images += images
        self.wait += wait
        self.compute += compute

    def mean_terms(self) -> np.ndarray:
        """The window's mean of every loss term: the one point where the host waits for the device."""
        return np.mean([[float(t.asnumpy()) for t in terms] for terms in self.terms], axis=0)

    def speed(self) -> Dict[str, float]:
        busy = self.wait + self.compute
        return {"img/s": self.images / busy if busy > 0 else 0.0,
                "wait%": 100.0 * self.wait / busy if busy > 0 else 0.0}

    def timing(self) -> Dict[str, float]:
        busy = self.wait + self.compute
        return {"images_per_s": self.images / busy if busy > 0 else 0.0, "data_wait_s": self.wait,
                "compute_s": self.compute, "data_wait_share": self.wait / busy if busy > 0 else 0.0}


class Trainer:
    """Holds the compiled step and the optimizers of one plan; :meth:`run` drives the loop."""

    def __init__(self, plan: TrainPlan, ctx: RunContext):
        self.plan, self.ctx = plan, ctx
        self.log = default_logger(ctx.log)
        self.optimizers = [build_optimizer(spec, plan.steps) for spec in plan.optimizers]
        first = plan.optimizers[0]
        self._logged_lr = lr_values(first.lr, first.schedule, plan.steps)  # computed once, read per log line
        self.term_index = {"total": 0, **{n: i + 1 for i, n in enumerate(plan.loss_names)}}
        for spec in plan.optimizers:
            if spec.loss not in self.term_index:
                raise ConfigError(f"optimizer {spec.name!r} minimises unknown loss {spec.loss!r}; "
                                  f"known: {', '.join(self.term_index)}")
        self._check_disjoint()
        self.amp_level = amp.check_level(plan.amp_level)
        amp.apply(plan.network, self.amp_level)
        if self.amp_level == "O0":  # the op is float32 only
            blocked_conv.apply(plan.network, ctx.device, self.log)
        self.step_fn = self._build_step()
        self.step = 0

    def _check_disjoint(self) -> None:
        seen: Dict[int, str] = {}
        for spec in self.plan.optimizers:
            for p in spec.params:
                if id(p) in seen:
                    raise ConfigError(f"parameter {p.name} is in optimizers {seen[id(p)]!r} and {spec.name!r}")
                seen[id(p)] = spec.name

    def _build_step(self):
        import mindspore as ms
        from mindspore import nn

        plan, ctx = self.plan, self.ctx
        scale = float(plan.loss_scale)
        groups: "OrderedDict[str, List[int]]" = OrderedDict()
        for i, spec in enumerate(plan.optimizers):
            groups.setdefault(spec.loss, []).append(i)

        stages = []
        for loss_name, members in groups.items():
            index = self.term_index[loss_name]
            params = [p for i in members for p in plan.optimizers[i].params]
            objective = _objective(plan.forward, index, scale, float32=self.amp_level != "O0")
            grad_fn = ms.value_and_grad(objective, None, params, has_aux=True)
            reducer = nn.DistributedGradReducer(params, mean=True, degree=ctx.group_size) if ctx.distributed else None
            appliers, start = [], 0
            for i in members:
                end = start + len(plan.optimizers[i].params)
                appliers.append(_applier(self.optimizers[i], plan.optimizers[i], start, end, scale))
                start = end
            stages.append(_stage(grad_fn, reducer, appliers))

        def train_step(*batch):
            terms, marker = None, None
            for stage in stages:
                terms, marker = stage(*batch)
            return terms, marker

        compiled = ms.jit(train_step) if ctx.mode == "graph" else train_step

        def step_fn(*batch):
            """One step; returns when the device has finished it (up to the last optimizer updates).

            The host waits by reading the marker, the gradient of the first parameter: the input layer's,
            the last gradient a backward pass produces. Measured on this 2-core CPU (MindSpore 2.10,
            VIGOR's two VGG16 branches, batch 8, docs/performance.md): waiting this way, a step took
            2.7-3.6 s and 6.5 CPU-s; waiting on the loss or with ``runtime.synchronize`` it took
            4.2-4.7 s and 9.5-10.7 CPU-s, the same kernels running slower. Reading a tensor produced
            early in the graph (the loss, the last layer's gradient) was slow as well."""
            terms, marker = compiled(*batch)
            marker.asnumpy()
            return terms

        return step_fn

    # ---- state -------------------------------------------------------------------------------------
    def optimizer_state(self) -> List[Any]:
        return [p for spec, opt in zip(self.plan.optimizers, self.optimizers)
                for p in optimizer_state(opt, spec.params)]

    def data_state(self) -> List[Any]:
        """The data source's checkpointed arrays (a refreshed sampler pool) as ``data/<key>`` entries."""
        import mindspore as ms

        out = []
        for key, value in self.plan.data.state_dict().items():
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                raise ConfigError(f"data state {key!r}: only numeric arrays can be checkpointed, not {array.dtype}")
            out.append(ms.Parameter(ms.Tensor(array), name=DATA_PREFIX + key, requires_grad=False))
        return out

    def save(self, path: Path, extra_meta: Dict[str, Any]) -> Path:
        meta = {**self.plan.meta, **extra_meta, "step": self.step}
        return ckpt.save(path, self.plan.network, self.optimizer_state() + self.data_state(), meta)

    def restore(self, path: Path) -> Dict[str, Any]:
        params, meta = ckpt.load(path)
        if "step" not in meta:
            raise CheckpointError(f"{path}: has no training state (not written by geoloc train); "
                                  "use --weights to initialise from it instead of --resume")
        net_params, opt_state = ckpt.split_optimizer_state(params)
        ckpt.load_into(self.plan.network, net_params, path)
        own = self.optimizer_state()
        ckpt.load_optimizer_state([p for p in own if not _is_lr_table(p)], opt_state, path)
        self._note_changed_schedules([p for p in own if _is_lr_table(p)], opt_state, int(meta["step"]))
        data_state = {k[len(DATA_PREFIX):]: v.asnumpy() for k, v in opt_state.items() if k.startswith(DATA_PREFIX)}
        self.plan.data.load_state_dict(data_state)
        self.step = int(meta["step"])
        return meta

    def _note_changed_schedules(self, tables: List[Any], saved: Dict[str, Any], step: int) -> None:
        """The learning-rate tables are not restored: they are a function of the config and the total
        number of steps, which ``--resume --set train.steps=N`` may change (the saved table is then too
        short, and its last entries would be the old run's end). The schedule continues from the resumed
        step on the table computed for the new total; the log says so when the total changed."""
        for table in tables:
            old = saved.get(table.name)
            if old is None:
                continue
            before, now = old.asnumpy(), table.asnumpy()
            if before.size != now.size:  # (equal sizes: a backend's hook may own the table, e.g. VIGOR's decay)
                self.log.info(f"{table.name}: schedule recomputed for {now.size} steps (the checkpoint's was "
                              f"{before.size}); it continues from step {step} of the new schedule")

    # ---- loop --------------------------------------------------------------------------------------
    def _step(self, batch) -> Any:
        """Run one compiled step and wait for the device to finish it (the step's one host sync, so the
        next wait for data is time the device really idles); the loss terms stay on the device."""
        import mindspore as ms

        inputs = [ms.Tensor(b) for b in batch]
        if self.amp_level == "O0" or self.ctx.device != "cpu" or self._amp_checked:
            return self.step_fn(*inputs)
        try:  # float16 on CPU: MindSpore lacks some kernels; say so instead of its stack trace
            terms = self.step_fn(*inputs)
            [t.asnumpy() for t in terms]
        except (RuntimeError, TypeError, ValueError) as exc:
            raise amp.cpu_failure(self.amp_level, exc) from None
        self._amp_checked = True
        return terms

    def run(self, checkpoint_dir: Path, meta: Dict[str, Any], progress=None) -> TrainResult:
        """Drive the plan to its last step.

        The host waits for the device once per step (so that the next wait for data is measured as idle
        time, not overlapped with the device's work), and fetches the loss terms once per logging window:
        they stay on the device until the window is logged. Per window the log
        records the time the loop waited for data and the time it spent stepping, images/s and the
        data-wait share; the progress callback gets the last logged losses plus ``img/s`` and ``wait%``.
        """
        plan, ctx, log = self.plan, self.ctx, self.log
        per_epoch = plan.data.steps_per_epoch()
        if per_epoch <= 0:
            raise ConfigError("the training data yields no full batch: lower the batch size or add data")
        names = ["loss"] + list(plan.loss_names)
        self._amp_checked = False
        last_losses: Dict[str, float] = {}
        eval_metrics: Dict[str, float] = {}
        last_ckpt: Optional[Path] = None
        window = _Window()
        samples = 0
        started = time.perf_counter()
        first_epoch = True
        if interrupt.unguarded_threads():
            log.info(f"warning: {interrupt.unguarded_threads()} threads started before Ctrl-C was deferred "
                     "(NumPy imported before geocli.runtime.interrupt.defer()?); a Ctrl-C during a step may "
                     "end the run without saving last.ckpt")
        try:
            while self.step < plan.steps:
                epoch, offset = divmod(self.step, per_epoch)
                if offset == 0 or first_epoch:
                    for hook in plan.epoch_hooks:
                        hook(self, epoch)
                first_epoch = False
                batches = plan.data.epoch(epoch, start=offset)
                try:
                    while self.step < plan.steps:
                        t0 = time.perf_counter()
                        batch = next(batches, None)
                        if batch is None:
                            break
                        t1 = time.perf_counter()
                        terms = self._step(batch)
                        interrupt.reclaim()  # MindSpore (re)installs its SIGINT handler while steps run
                        self.step += 1
                        n = len(batch[0]) * ctx.group_size
                        samples += n
                        window.add(terms, n, t1 - t0, time.perf_counter() - t1)
                        if interrupt.requested():
                            raise KeyboardInterrupt
                        if self.step % max(plan.log_every, 1) == 0 or self.step == plan.steps:
                            last_losses = dict(zip(names, window.mean_terms().tolist()))
                            log.metrics(self.step, {**last_losses, "epoch": epoch, "lr": self._current_lr(),
                                                    **window.timing()})
                            shown = window.speed()
                            window = _Window()
                        else:
                            shown = window.speed()
                        if progress is not None:
                            progress(self.step, plan.steps, {**last_losses, **shown})
                        if plan.checkpoint_every and self.step % plan.checkpoint_every == 0 and ctx.is_main:
                            last_ckpt = self._checkpoint(checkpoint_dir, meta, epoch)
                        if plan.evaluate is not None and plan.eval_every and self.step % plan.eval_every == 0:
                            eval_metrics = plan.evaluate(self)
                            log.metrics(self.step, eval_metrics, kind="eval")
                finally:
                    batches.close()
        except KeyboardInterrupt:
            plan.data.close()  # stop the data workers first: nothing more will be read
            if ctx.is_main and self.step > 0:
                log.info(f"interrupted at step {self.step}: saving {checkpoint_dir / 'last.ckpt'}")
                self.save(checkpoint_dir / "last.ckpt", {**meta, "epoch": self.step // per_epoch})
            raise
        finally:
            plan.data.close()
        for hook in plan.finish_hooks:
            hook(self)
        if ctx.distributed:
            self.check_replicas()
        if ctx.is_main:
            last_ckpt = self.save(checkpoint_dir / "last.ckpt", {**meta, "epoch": self.step // per_epoch})
        seconds = time.perf_counter() - started
        return TrainResult(ctx.run_dir, last_ckpt, self.step, last_losses, eval_metrics, seconds,
                           samples / seconds if seconds > 0 else 0.0)

    def check_replicas(self, tolerance: float = 1e-5) -> float:
        """Data-parallel ranks must hold the same parameters; gather a fingerprint of every parameter
        (sum and sum of squares) from each rank, log the largest difference, fail loudly if it is off."""
        import mindspore as ms
        from mindspore import ops

        values = [p.asnumpy().astype(np.float64) for p in self.plan.network.trainable_params()]
        mine = np.array([[v.sum(), (v * v).sum()] for v in values], dtype=np.float32).reshape(1, -1)
        gathered = ops.AllGather()(ms.Tensor(mine)).asnumpy()
        diff = replica_difference(gathered)
        self.log.info(f"replica check: parameters of {len(gathered)} ranks agree to {diff:.3g} (relative)")
        if not diff <= tolerance:  # written so that NaN (diverged to non-finite parameters) fails too
            raise GeolocError(f"data-parallel ranks diverged (relative parameter difference {diff:.3g}); "
                              f"see {self.ctx.run_dir / 'logs'}")
        return diff

    def _checkpoint(self, folder: Path, meta: Dict[str, Any], epoch: int) -> Path:
        path = self.save(folder / f"step_{self.step:07d}.ckpt", {**meta, "epoch": epoch})
        self.save(folder / "last.ckpt", {**meta, "epoch": epoch})
        ckpt.prune(folder, self.plan.keep_checkpoints)
        return path

    def _current_lr(self) -> float:
        """Learning rate of the first optimizer at the last step taken (for the log)."""
        return float(self._logged_lr[min(max(self.step - 1, 0), self.plan.steps - 1)])


def replica_difference(fingerprints: np.ndarray) -> float:
    """Largest relative difference between rank 0's parameter fingerprints (one row per rank) and any
    other rank's; NaN when a fingerprint is not finite, so a run whose parameters blew up never passes."""
    if not np.isfinite(fingerprints).all():
        return float("nan")
    scale = np.maximum(np.abs(fingerprints).max(axis=0), 1.0)
    return float((np.abs(fingerprints - fingerprints[0]) / scale).max())


def load_weights(network, path: Path, mapper=None) -> List[str]:
    """``--weights``: initialise the network from a checkpoint (geoloc's or a foreign one via ``mapper``);
    optimizer state and step are ignored. Returns the names of unused checkpoint entries."""
    params, _ = ckpt.load(path)
    net_params, _ = ckpt.split_optimizer_state(params)
    if mapper is not None:
        net_params = mapper(net_params)
    return ckpt.load_into(network, net_params, path, strict=False)


def _is_lr_table(param) -> bool:
    """An optimizer's per-step learning-rate table (MindSpore names it ``learning_rate``)."""
    return param.name.rsplit(".", 1)[-1] == "learning_rate"


def train(plan: TrainPlan, ctx: RunContext, *, resume: Optional[Path] = None, weights: Optional[Path] = None,
          meta: Optional[Dict[str, Any]] = None, mapper=None, progress=None) -> TrainResult:
    """Run a plan to its last step; rank 0 writes ``<run_dir>/checkpoints/{step_N,last}.ckpt``.

    ``train.amp_level`` of the run's config applies when the backend's plan does not set its own."""
    configured = ((meta or {}).get("config") or {}).get("train", {}).get("amp_level")
    if plan.amp_level == "O0" and configured is not None:
        plan.amp_level = amp.check_level(configured)
    trainer = Trainer(plan, ctx)
    log = default_logger(ctx.log)
    if weights is not None:
        unused = load_weights(plan.network, weights, mapper)
        log.info(f"initialised from {weights}" + (f" ({len(unused)} entries unused)" if unused else ""))
    if resume is not None:
        restored = trainer.restore(resume)
        log.info(f"resumed from {resume} at step {trainer.step} (epoch {restored.get('epoch', '?')})")
    return trainer.run(Path(ctx.run_dir) / "checkpoints", dict(meta or {}), progress=progress)


def find_resume(run_dir: Path) -> Optional[Path]:
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


__all__: Sequence[str] = ("Trainer", "TrainResult", "train", "load_weights", "find_resume")
