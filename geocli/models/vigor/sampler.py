"""Epoch orders for VIGOR training: tile-exclusive batches and hard-negative mining.

Reference (dataloader.py:230-328; ../shared/reference/vigor.md §6):

* a random sample is drawn *by tile*: a random tile among those that are some panorama's positive,
  then a random panorama with that positive;
* a batch never holds two samples sharing any tile (positive or semi-positive): a candidate whose four
  tiles meet a tile already in the batch is rejected (``check_overlap``);
* with mining on (from epoch ``mining_start``), the first half of the batch is random; then, for each
  of those samples, a tile is drawn from its top-``K`` mined list and a panorama with that tile as its
  positive joins the batch; after 101 failed tries a random sample is taken instead;
* an epoch is ``iters`` batches (``int(training panoramas / 14)`` in both stages).

The mined lists are refreshed at every epoch start by :class:`MiningHook` from descriptors that the
current network computes for every training panorama and a random pool of tiles. The reference stores
stale descriptors from the training forward passes instead; recomputing them keeps the lists a pure
function of the checkpointed parameters and the seed, and identical on every data-parallel rank.

Resume: the sampler's :meth:`state_dict` (the epoch its lists were mined for, and the lists) goes into
every checkpoint. A run resumed in the middle of an epoch gets back the lists that epoch was mined
with (the network they were mined from is gone) and the hook does not mine again, so the rest of the
epoch draws the same batches as an uninterrupted run.

``mode="port"`` is the MindSpore port's sampler: every positive tile twice per epoch with a random
panorama, shuffled, no overlap rule, no mining.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from geocli.errors import DataError


class TileSampler:
    def __init__(self, positive: np.ndarray, semi: np.ndarray, global_batch: int, iters: int,
                 mode: str = "reference", mining_start: int = 2, mined_fraction: float = 0.5,
                 max_tries: int = 101):
        self.positive = np.asarray(positive, np.int64)
        self.tiles = np.concatenate([self.positive[:, None], np.asarray(semi, np.int64)], axis=1)
        self.global_batch, self.iters, self.mode = int(global_batch), int(iters), mode
        self.mining_start, self.mined_fraction, self.max_tries = mining_start, mined_fraction, max_tries
        by_tile: Dict[int, List[int]] = {}
        for i, t in enumerate(self.positive):
            by_tile.setdefault(int(t), []).append(i)
        self.positive_tiles = np.array(sorted(by_tile), np.int64)
        self.by_tile = {t: np.array(v, np.int64) for t, v in by_tile.items()}
        self.epoch = 0
        self.pool_epoch = -1  # the epoch set_epoch last prepared (-1: none yet)
        self.mined: Optional[np.ndarray] = None  # (n_panoramas, K) tile ids, best first

    def set_epoch(self, epoch: int, mined: Optional[np.ndarray] = None) -> None:
        self.epoch = self.pool_epoch = int(epoch)
        self.mined = None if mined is None else np.asarray(mined, np.int64)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Checkpointed by the trainer (``data/...`` entries): the prepared epoch and its mined lists."""
        state = {"pool_epoch": np.array([self.pool_epoch], np.int64)}
        if self.mined is not None:
            state["mined"] = np.asarray(self.mined, np.int64)
        return state

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        if "pool_epoch" not in state:
            return  # a checkpoint from before mining state was saved: the hook mines again
        epoch = int(np.asarray(state["pool_epoch"]).reshape(-1)[0])
        mined = state.get("mined")
        if epoch >= 0:
            self.set_epoch(epoch, None if mined is None else np.asarray(mined, np.int64))

    @property
    def mining_active(self) -> bool:
        return self.mined is not None and self.epoch >= self.mining_start

    def __len__(self) -> int:
        if self.mode == "port":
            return 2 * len(self.positive_tiles)
        return self.iters * self.global_batch

    def _random(self, rng: np.random.Generator) -> int:
        tile = int(self.positive_tiles[rng.integers(len(self.positive_tiles))])
        panos = self.by_tile[tile]
        return int(panos[rng.integers(len(panos))])

    def _fits(self, i: int, used: set) -> bool:
        return not any(int(t) in used for t in self.tiles[i])

    def _add(self, i: int, batch: List[int], used: set) -> None:
        batch.append(i)
        used.update(int(t) for t in self.tiles[i])

    def _random_fitting(self, rng, used: set) -> int:
        for _ in range(100 * self.max_tries):
            i = self._random(rng)
            if self._fits(i, used):
                return i
        raise DataError(f"cannot fill a batch of {self.global_batch} panoramas that share no tile: the training "
                        f"split has too few tiles ({len(self.positive_tiles)} positives); lower train.batch_size")

    def batch(self, rng: np.random.Generator) -> List[int]:
        batch: List[int] = []
        used: set = set()
        n_random = self.global_batch
        if self.mining_active:
            n_random = max(self.global_batch - int(round(self.global_batch * self.mined_fraction)), 1)
        while len(batch) < n_random:
            self._add(self._random_fitting(rng, used), batch, used)
        anchor = 0
        while len(batch) < self.global_batch:
            chosen = None
            source = batch[anchor % n_random]
            anchor += 1
            for _ in range(self.max_tries):
                tile = int(self.mined[source, rng.integers(self.mined.shape[1])])
                panos = self.by_tile.get(tile)
                if panos is None:
                    continue
                i = int(panos[rng.integers(len(panos))])
                if self._fits(i, used):
                    chosen = i
                    break
            self._add(chosen if chosen is not None else self._random_fitting(rng, used), batch, used)
        return batch

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        if self.mode == "port":
            order = np.array([self.by_tile[int(t)][rng.integers(len(self.by_tile[int(t)]))]
                              for _ in range(2) for t in self.positive_tiles], np.int64)
            return order[rng.permutation(len(order))]
        return np.array([i for _ in range(self.iters) for i in self.batch(rng)], np.int64)
