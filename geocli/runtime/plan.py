"""What a backend hands the trainer: the network, its loss, its optimizers, its data and its hooks.

The trainer (:mod:`geocli.runtime.trainer`) owns everything generic (steps, schedules, clipping, loss
scaling, logging, checkpoints, resume, distributed gradient averaging). A backend describes only what is
particular to its model with the dataclasses below, so five very different training recipes fit one
loop: several optimizers over disjoint parameter groups (SDNet's three Adams, Centroids-ReID's SGD for
the centres), frozen sub-networks (parameters in no optimizer do not train), named loss terms, per-epoch
hooks (VIGOR's hard-negative re-mining) and custom batch samplers (P identities x K images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

Batch = Tuple[np.ndarray, ...]


@dataclass
class RunContext:
    """Where and how this process runs; built once by :func:`geocli.runtime.context.setup`."""

    run_dir: Path
    device: str = "cpu"
    mode: str = "graph"
    seed: int = 0
    rank: int = 0
    group_size: int = 1
    log: Any = None  # geocli.runtime.logging.RunLogger

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.group_size > 1


@dataclass
class Schedule:
    """Learning-rate schedule, evaluated per optimizer step.

    name: ``constant``, ``linear`` (to ``end_factor`` at the last step), ``poly`` (power ``power``),
    ``step`` (times ``gamma`` at each of ``milestones``), ``cosine`` (to ``end_factor``).
    ``warmup_steps`` ramps linearly from ``warmup_factor`` * lr before any of them.
    """

    name: str = "constant"
    warmup_steps: int = 0
    warmup_factor: float = 0.0
    end_factor: float = 0.0
    power: float = 1.0
    gamma: float = 0.1
    milestones: Sequence[int] = ()


@dataclass
class Clip:
    """Gradient clipping: ``value`` (element-wise to [-max, max]), ``norm`` (each tensor's L2 norm to
    max, the PoseNet port's per-tensor clip) or ``global_norm`` (all tensors together)."""

    mode: str = "global_norm"
    max: float = 1.0


@dataclass
class OptimizerSpec:
    """One optimizer over one parameter group, minimising one loss (``total`` or a named term)."""

    name: str
    params: List[Any]  # mindspore Parameters
    kind: str = "adam"  # adam, adamw, sgd, momentum, adagrad
    lr: float = 1e-3
    schedule: Schedule = field(default_factory=Schedule)
    weight_decay: float = 0.0
    # coupled weight decay on every parameter of the group, BatchNorm gamma/beta included (as
    # torch.optim.Adam's weight_decay); False keeps MindSpore's default, which skips names with gamma/beta
    decay_all: bool = False
    clip: Optional[Clip] = None
    loss: str = "total"
    grad_scale: float = 1.0  # multiply this group's gradients (Centroids-ReID: 1 / centre_loss_weight)
    options: Dict[str, Any] = field(default_factory=dict)  # beta1, beta2, eps, momentum, nesterov, ...


class BatchSource:
    """A deterministic, resumable stream of batches for one rank.

    ``epoch(e, start)`` must yield the same batches for the same (seed, e) on every call, skipping the
    first ``start`` ones cheaply: that is what makes ``--resume`` reproduce an uninterrupted run.
    """

    def steps_per_epoch(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release workers or files; called by the trainer on every exit."""

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Arrays that must be checkpointed for an exact resume (a refreshed sampler pool)."""
        return {}

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        pass


class IndexedSource(BatchSource):
    """Batches from an indexable dataset with a per-epoch seeded order, sharded by rank, optionally
    decoded in worker processes (the input pipeline: docs/input-pipeline.md).

    ``load(indices, seed) -> Batch`` builds one batch (e.g. reads and augments images); ``seed`` is
    ``(seed, epoch, step, rank)`` and every random choice of ``load`` must come from it. Every rank draws
    the same global order and takes its own contiguous slice of each global batch, so N ranks with batch
    B see exactly the batches of one process with batch N*B (what the distributed equality test checks).
    The main process computes each batch's indices and seed; ``data.workers`` processes only run
    ``load``, ``data.prefetch`` batches ahead. So batches do not depend on the worker count, and
    ``epoch(e, start)`` begins at any step without building the ones before it.
    """

    def __init__(self, n_items: int, batch_size: int, load: Callable[..., Batch], seed: int = 0,
                 rank: int = 0, group_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                 sampler: Optional[Callable[[np.random.Generator], np.ndarray]] = None,
                 workers: Any = 0, prefetch: Any = 2):
        from geocli.data.pipeline import resolve_prefetch, resolve_workers

        if n_items < batch_size * group_size and drop_last:
            raise ValueError(f"{n_items} items cannot fill one global batch of {batch_size} x {group_size}")
        self.n_items, self.batch_size, self.load = n_items, batch_size, load
        self.seed, self.rank, self.group_size = seed, rank, group_size
        self.shuffle, self.drop_last, self.sampler = shuffle, drop_last, sampler
        self.global_batch = batch_size * group_size
        self.workers = resolve_workers(workers, group_size)
        self.prefetch = resolve_prefetch(prefetch)
        self._pool = None
        self._epoch_length: Optional[int] = None

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.sampler is not None:
            return np.asarray(self.sampler(rng))
        return rng.permutation(self.n_items) if self.shuffle else np.arange(self.n_items)

    def steps_per_epoch(self) -> int:
        if self._epoch_length is None:  # a sampler's epoch has the same length every epoch
            if self.sampler is None:
                self._epoch_length = self.n_items
            elif hasattr(self.sampler, "__len__"):  # e.g. a PoolSampler before its first refresh
                self._epoch_length = len(self.sampler)
            else:
                self._epoch_length = len(self._order(0))
        n = self._epoch_length
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)

    def tasks(self, epoch: int, start: int = 0) -> Iterator[Tuple[np.ndarray, Tuple[int, int, int, int]]]:
        """``(indices, seed)`` of this rank's batches of ``epoch`` from step ``start`` on."""
        order = self._order(epoch)
        for step in range(start, self.steps_per_epoch()):
            chunk = order[step * self.global_batch:(step + 1) * self.global_batch]
            per_rank = -(-len(chunk) // self.group_size)
            yield chunk[self.rank * per_rank:(self.rank + 1) * per_rank], (self.seed, epoch, step, self.rank)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        if self.workers == 0:
            for indices, seed in self.tasks(epoch, start):
                yield self.load(indices, seed=seed)
            return
        if self._pool is None or self._pool.closed:
            from geocli.data.pipeline import WorkerPool

            self._pool = WorkerPool(self.load, self.workers)
        yield from self._pool.map(self.tasks(epoch, start), ahead=self.prefetch)

    def close(self) -> None:
        """Stop the worker processes (the trainer calls this on every exit)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __getstate__(self):
        return {**self.__dict__, "_pool": None}

    # A sampler with a pool refreshed by an epoch hook (geocli.data.pipeline.PoolSampler) is saved in
    # checkpoints through these two, so --resume continues with the pool of the interrupted epoch.
    def state_dict(self) -> Dict[str, np.ndarray]:
        if self.sampler is not None and hasattr(self.sampler, "state_dict"):
            return dict(self.sampler.state_dict())
        return {}

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        if state and self.sampler is not None and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state)


@dataclass
class TrainPlan:
    """Everything model-specific about one training run.

    ``forward(*batch)`` returns a tuple ``(total, term_1, ..., term_n)`` of scalar tensors; the terms are
    named by ``loss_names`` and logged separately. Each optimizer minimises ``total`` or one named term
    with respect to its own parameters. ``network`` holds every parameter that is checkpointed.
    """

    network: Any
    forward: Callable[..., Tuple[Any, ...]]
    loss_names: List[str]
    optimizers: List[OptimizerSpec]
    data: BatchSource
    steps: int
    epoch_hooks: List[Callable[[Any, int], None]] = field(default_factory=list)
    #: run once with the trainer after the last step, before the replica check and ``last.ckpt``
    finish_hooks: List[Callable[[Any], None]] = field(default_factory=list)
    evaluate: Optional[Callable[[Any], Dict[str, float]]] = None
    eval_every: int = 0
    log_every: int = 20
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    loss_scale: float = 1.0
    amp_level: str = "O0"  # train.amp_level: O0 (float32), O1, O2, O3 as MindSpore defines them
    meta: Dict[str, Any] = field(default_factory=dict)  # label maps, preprocessing: saved in checkpoints
