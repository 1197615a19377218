"""An inverted-file (IVF) nearest-neighbour index in NumPy: k-means cells, search in a few cells only.

Why IVF and not ``scipy.spatial.cKDTree`` or brute force: DELF descriptors are 40-d, where k-d trees
degrade towards a full scan. Measured on this 2-core machine (``benchmarks/search.py --compare-ann``):
1M x 40 unit descriptors, 1,000 noisy copies as queries, 1-NN within 0.8, time per 1,000 queries:
brute force in BLAS chunks 2.8 s, exact cKDTree 8.9 s, cKDTree ``eps=1`` 0.48 s (all recall 1.0),
IVF with ``nprobe`` 8 0.07 s (recall 0.94; 0.99 with 16). The first three grow linearly with the
index (> 2 s per 1,000-feature query at DELF's 5M descriptors); IVF touches only ~nprobe * sqrt(N)
descriptors: 0.17 s per whole query (search, votes and verification) at 5M. Lost neighbours cost a
few votes, not the ranking: a true match has hundreds. faiss's IVF would be faster still, but it is
an optional dependency and not needed at this scale.

Distances are Euclidean (not squared), the unit of DELF's ``distance_upper_bound``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from geocli.retrieval.topk import smallest_k_per_group

#: Rows per block when assigning vectors to cells: bounds the block x n_cells matrix (~64 MB at 2k cells).
_ASSIGN_BLOCK = 8192


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, n: int = 1) -> np.ndarray:
    """Indices ``(len(x), n)`` of the ``n`` nearest centroids (unordered for n > 1), in blocks."""
    centroid_sq = np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty((len(x), n), dtype=np.int64)
    for start in range(0, len(x), _ASSIGN_BLOCK):
        block = np.asarray(x[start:start + _ASSIGN_BLOCK], dtype=np.float32)
        scores = centroid_sq[None, :] - 2.0 * (block @ centroids.T)  # |x|^2 is constant per row
        if n == 1:
            out[start:start + len(block), 0] = np.argmin(scores, axis=1)
        else:
            out[start:start + len(block)] = np.argpartition(scores, n - 1, axis=1)[:, :n]
    return out


def train_kmeans(x: np.ndarray, n_cells: int, iterations: int = 10, points_per_cell: int = 64,
                 seed: int = 0) -> np.ndarray:
    """Lloyd's k-means on a random sample of ``points_per_cell * n_cells`` rows (as faiss does).

    A sample is enough for a coarse quantiser and keeps training time independent of the index size.
    Cells that empty out are re-seeded with random sample points, so every centroid stays in use.
    """
    rng = np.random.default_rng(seed)
    n_sample = min(len(x), points_per_cell * n_cells)
    sample = np.asarray(x[np.sort(rng.choice(len(x), n_sample, replace=False))], dtype=np.float32)
    centroids = sample[rng.choice(n_sample, n_cells, replace=False)].copy()
    for _ in range(iterations):
        cells = nearest_centroids(sample, centroids)[:, 0]
        counts = np.bincount(cells, minlength=n_cells)
        sums = np.zeros_like(centroids)
        np.add.at(sums, cells, sample)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        n_empty = int((~filled).sum())
        if n_empty:
            centroids[~filled] = sample[rng.choice(n_sample, n_empty, replace=False)]
    return centroids


@dataclass
class IVFIndex:
    """Vectors grouped by cell: ``vectors[offsets[c]:offsets[c + 1]]`` are cell ``c``'s members.

    ``ids[r]`` is the original row (insertion order) of stored row ``r``; search returns original rows.
    """

    centroids: np.ndarray
    vectors: np.ndarray
    ids: np.ndarray
    offsets: np.ndarray
    squared_norms: np.ndarray  # |vectors[r]|^2, computed once instead of per search

    @classmethod
    def build(cls, x: np.ndarray, n_cells: Optional[int] = None, iterations: int = 10,
              seed: int = 0) -> "IVFIndex":
        """Trains ~sqrt(N) cells (a balance of centroid cost and cell size) and files every row."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            raise ValueError("cannot build an index over zero vectors")
        n_cells = int(n_cells or max(1, round(np.sqrt(len(x)))))
        n_cells = min(n_cells, len(x))
        centroids = train_kmeans(x, n_cells, iterations=iterations, seed=seed)
        cells = nearest_centroids(x, centroids)[:, 0]
        order = np.argsort(cells, kind="stable")
        offsets = np.zeros(n_cells + 1, dtype=np.int64)
        np.cumsum(np.bincount(cells, minlength=n_cells), out=offsets[1:])
        vectors = x[order]
        return cls(centroids=centroids, vectors=vectors, ids=order, offsets=offsets,
                   squared_norms=np.einsum("ij,ij->i", vectors, vectors))

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int = 1, nprobe: int = 8,
               max_distance: float = np.inf) -> Tuple[np.ndarray, np.ndarray]:
        """Approximate k nearest neighbours among the ``nprobe`` cells nearest to each query.

        Returns ``(distances, rows)``, both ``(n_query, k)``, nearest first, ties by row among the
        candidates found; slots without a neighbour (fewer than k within ``max_distance`` in the
        probed cells) hold ``inf`` and ``-1``. With ``nprobe`` equal to the number of cells the
        search is exact. Work is grouped by cell, so each cell is one matrix product for all
        queries that probe it.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n_query, n_cells = len(queries), len(self.centroids)
        nprobe = min(int(nprobe), n_cells)
        probes = nearest_centroids(queries, self.centroids, nprobe).ravel()  # query i: i*nprobe...
        by_cell = np.argsort(probes, kind="stable")
        bounds = np.searchsorted(probes[by_cell], np.arange(n_cells + 1))
        query_sq = np.einsum("ij,ij->i", queries, queries)
        bound_sq = float(max_distance) ** 2
        found_query, found_sq, found_row = [], [], []
        for cell in np.flatnonzero(np.diff(bounds)):
            lo, hi = self.offsets[cell], self.offsets[cell + 1]
            if lo == hi:
                continue
            q_rows = by_cell[bounds[cell]:bounds[cell + 1]] // nprobe
            members = self.vectors[lo:hi]
            sq = queries[q_rows] @ members.T  # |q|^2 - 2 q.m + |m|^2, in place: one block in memory
            sq *= -2.0
            sq += self.squared_norms[None, lo:hi]
            sq += query_sq[q_rows, None]
            rows, cols = _candidates(sq, k, bound_sq)
            found_query.append(q_rows[rows])
            found_sq.append(sq[rows, cols])
            found_row.append(self.ids[lo + cols])
        return _best_per_query(found_query, found_sq, found_row, n_query, k)


def _candidates(sq: np.ndarray, k: int, bound_sq: float) -> Tuple[np.ndarray, np.ndarray]:
    """(row, column) of the entries of one cell's distance block that may be among the k nearest.

    With a distance bound, usually only a handful of entries qualify and ``nonzero`` finds them far
    faster than a partition of the whole block (DELF's bound of 0.8 keeps ~1 in 10,000); when the
    bound keeps many, only the k smallest per row are kept.
    """
    if bound_sq < np.inf:
        rows, cols = np.nonzero(sq <= bound_sq)
        if rows.size <= 4 * k * len(sq):
            return rows, cols
    take = min(k, sq.shape[1])
    cols = (np.argpartition(sq, take - 1, axis=1)[:, :take] if sq.shape[1] > take
            else np.broadcast_to(np.arange(take), (len(sq), take)))
    rows = np.repeat(np.arange(len(sq)), take)
    cols = cols.ravel()
    keep = sq[rows, cols] <= bound_sq
    return rows[keep], cols[keep]


def _best_per_query(found_query, found_sq, found_row, n_query: int, k: int
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """The k nearest candidates of each query as Euclidean distances; ``inf``/``-1`` padding."""
    if not found_query:
        return np.full((n_query, k), np.inf, np.float32), np.full((n_query, k), -1, np.int64)
    sq, rows = smallest_k_per_group(np.concatenate(found_query), np.concatenate(found_sq),
                                    np.concatenate(found_row), n_query, k)
    return np.sqrt(np.maximum(sq, 0.0)), rows
