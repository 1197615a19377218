"""The P x K identity sampler: each batch holds P distinct identities with K images each, in P contiguous
blocks of K (the centroid triplet loss depends on that layout).

Per epoch, as the reference's ``distributed_pids_sampler.py`` and ``datasets/bases.py:346-406``:

* each identity's images are shuffled and cut into chunks of K, drawn without replacement; an identity
  with n images appears ``ceil(n' / K)`` times, where n' = n - 1 when n % K == 1 (the reference's rule,
  which avoids a chunk of one image);
* a chunk with fewer than K images is completed by drawing from that identity's images WITH
  replacement. The reference's CTL scripts instead pad with all-zero "mock" images flagged
  ``isReal=False``; those still pass through BatchNorm and can be mined as hardest positives or
  negatives, so they are not reproduced here (docs/creid.md);
* each step draws P distinct identities, uniformly among those with chunks left, and takes one chunk of
  each. The reference ends the epoch when fewer than P identities have chunks left, so its epochs vary
  in length with the draw; here every epoch has exactly ``sum(chunks) // P`` batches (the trainer
  counts steps per epoch once), and when fewer than P identities are left before that, identities that
  are done get one fresh chunk each, drawn uniformly.

Everything comes from the generator the input pipeline passes in (seeded by (seed, epoch)), so an epoch's
order is a pure function of the seed: resume and multi-rank runs see the same batches.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np


class PKSampler:
    """``sampler(rng) -> item indices`` for :class:`geocli.runtime.plan.IndexedSource`.

    ``p`` is the number of identities per GLOBAL batch (per-rank P times the number of ranks), so every
    rank's slice is P' whole blocks of K."""

    def __init__(self, labels: Sequence[int], p: int, k: int):
        labels = np.asarray(labels)
        if p < 2 or k < 2:
            raise ValueError(f"P x K needs at least 2 identities and 2 images each, got {p} x {k}")
        self.p, self.k = int(p), int(k)
        self.groups: List[np.ndarray] = [np.flatnonzero(labels == label) for label in np.unique(labels)]
        if len(self.groups) < self.p:
            raise ValueError(f"{len(self.groups)} identities cannot fill a batch of {self.p} identities")

    def chunks_of(self, n: int) -> int:
        """How often an identity with n images appears per epoch."""
        effective = n - 1 if n % self.k == 1 and n > 1 else n
        return max(1, math.ceil(effective / self.k))

    def _chunks(self, items: np.ndarray, rng: np.random.Generator) -> List[np.ndarray]:
        shuffled = items[rng.permutation(len(items))]
        out = []
        for c in range(self.chunks_of(len(items))):
            chunk = shuffled[c * self.k:(c + 1) * self.k]
            if len(chunk) < self.k:
                chunk = np.concatenate([chunk, rng.choice(items, size=self.k - len(chunk), replace=True)])
            out.append(chunk)
        return out

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        pending = [self._chunks(items, rng) for items in self.groups]
        order = []
        for _ in range(self.batches_per_epoch()):
            alive = [i for i, chunks in enumerate(pending) if chunks]
            if len(alive) < self.p:
                done = [i for i, chunks in enumerate(pending) if not chunks]
                for i in rng.choice(done, size=self.p - len(alive), replace=False):
                    pending[i] = self._chunks(self.groups[i], rng)[:1]
                alive = [i for i, chunks in enumerate(pending) if chunks]
            for i in rng.choice(alive, size=self.p, replace=False):
                order.append(pending[i].pop())
        return np.concatenate(order) if order else np.zeros(0, np.int64)

    def batches_per_epoch(self) -> int:
        """Batches per epoch: every identity's chunks, P at a time."""
        return sum(self.chunks_of(len(g)) for g in self.groups) // self.p
