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


class IndexedSource(BatchSource):
    """Batches from an indexable dataset with a per-epoch seeded shuffle, sharded by rank.

    ``load(indices) -> Batch`` builds one batch (e.g. reads and augments images). Every rank draws the
    same global permutation and takes its own contiguous slice of each global batch, so N ranks with
    batch B see exactly the batches of one process with batch N*B (what the distributed equality test
    checks). ``augment_seed`` gives ``load`` a seed per (epoch, step) for reproducible augmentation.
    """

    def __init__(self, n_items: int, batch_size: int, load: Callable[..., Batch], seed: int = 0,
                 rank: int = 0, group_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                 sampler: Optional[Callable[[np.random.Generator], np.ndarray]] = None,
                 workers: int = 0, prefetch: int = 2):
        if n_items < batch_size * group_size and drop_last:
            raise ValueError(f"{n_items} items cannot fill one global batch of {batch_size} x {group_size}")
        self.n_items, self.batch_size, self.load = n_items, batch_size, load
        self.seed, self.rank, self.group_size = seed, rank, group_size
        self.shuffle, self.drop_last, self.sampler = shuffle, drop_last, sampler
        self.global_batch = batch_size * group_size
        # Parallel decoding (``data.workers`` processes, ``data.prefetch`` batches ahead): see the input
        # pipeline (docs/backends.md). ``load`` must then be picklable and import no MindSpore.
        self.workers, self.prefetch = workers, prefetch

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.sampler is not None:
            return np.asarray(self.sampler(rng))
        return rng.permutation(self.n_items) if self.shuffle else np.arange(self.n_items)

    def steps_per_epoch(self) -> int:
        n = len(self._order(0)) if self.sampler is not None else self.n_items
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        order = self._order(epoch)
        for step in range(start, self.steps_per_epoch()):
            chunk = order[step * self.global_batch:(step + 1) * self.global_batch]
            per_rank = -(-len(chunk) // self.group_size)
            mine = chunk[self.rank * per_rank:(self.rank + 1) * per_rank]
            yield self.load(mine, seed=(self.seed, epoch, step, self.rank))


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
    evaluate: Optional[Callable[[Any], Dict[str, float]]] = None
    eval_every: int = 0
    log_every: int = 20
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    loss_scale: float = 1.0
    meta: Dict[str, Any] = field(default_factory=dict)  # label maps, preprocessing: saved in checkpoints
