"""Exact top-k global-descriptor search in bounded memory (inner product or squared L2).

hloc ran out of memory above 100k images by building the full query x gallery similarity matrix
(hloc PR #338). Here the gallery is read in chunks (once, so it may be an ``h5py.Dataset`` or a
``np.memmap`` larger than RAM) and, inside each gallery chunk, queries are processed in chunks; only a
running top-k per query survives between chunks. Memory is ``O(chunk + n_query * k)``: a 1,000,000 x
4,096 float32 gallery (16 GB) is searched with the default 256 MB budget.

Ranking is deterministic: higher score first (for L2, smaller distance first) and equal scores by
ascending gallery index, independent of chunk sizes. faiss, when installed, is an optional backend for
speed; it is never required, and its tie order is not guaranteed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from geocli.errors import UsageError
from geocli.retrieval.topk import smallest_k_per_group

METRICS = ("ip", "l2")
BACKENDS = ("numpy", "faiss", "auto")

#: Bytes for one similarity block plus one gallery chunk.
DEFAULT_MEMORY_BUDGET = 256 * 2**20


@dataclass
class SearchResult:
    """``indices[i, r]`` is the gallery row at rank r for query i; ``scores`` are inner products
    (``ip``, larger is better) or squared Euclidean distances (``l2``, smaller is better)."""

    scores: np.ndarray
    indices: np.ndarray
    metric: str


def chunk_sizes(n_query: int, dim: int, budget: int = DEFAULT_MEMORY_BUDGET,
                query_chunk: int = 1024) -> Tuple[int, int]:
    """``(gallery_chunk, query_chunk)`` so that a float32 block and a gallery chunk fit in ``budget``.

    The running top-k (``n_query x k``) comes on top; with ``k`` equal to the gallery size (a full
    ranking) that output alone is ``n_query x n_gallery``, which no chunking can avoid.
    """
    query_chunk = max(1, min(query_chunk, n_query))
    half = max(budget // 2, 4)
    gallery_chunk = max(1, min(half // (4 * max(dim, 1)), half // (4 * query_chunk)))
    return gallery_chunk, query_chunk


def _exact_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k largest scores per row, ties broken towards the lower column (unsorted).

    ``argpartition`` picks arbitrarily among values equal to the k-th largest; only rows where such a
    tie straddles the cut are redone with a stable full sort, which is rare for real descriptors.
    """
    n_cols = scores.shape[1]
    if k >= n_cols:
        return np.broadcast_to(np.arange(n_cols), scores.shape).copy()
    part = np.argpartition(scores, n_cols - k, axis=1)[:, n_cols - k:]  # no negated copy
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
    tied = np.flatnonzero(np.count_nonzero(scores >= kth[:, None], axis=1) > k)
    for row in tied:
        part[row] = np.argsort(-scores[row], kind="stable")[:k]
    return part


def _fold_block(best_scores: np.ndarray, best_idx: np.ndarray, sims: np.ndarray, offset: int,
                k: int) -> None:
    """Updates the running top-k (in place, sorted, padded with -inf) with one similarity block.

    Only entries strictly better than a row's current k-th score can enter: an equal score has a
    larger gallery index than everything already kept (chunks come in index order), so it would
    lose the tie. After the first chunks this leaves a handful of candidates, found with one
    comparison pass instead of a partition of the block.
    """
    enter = sims > best_scores[:, -1:]
    if np.count_nonzero(enter) > 4 * k * len(sims):  # early chunks: keep each row's k best only
        cols = _exact_topk(sims, min(k, sims.shape[1]))
        rows = np.repeat(np.arange(len(sims)), cols.shape[1])
        cols = cols.ravel()
    else:
        rows, cols = np.nonzero(enter)
    if rows.size == 0:
        return
    touched = np.unique(rows)
    slot = np.searchsorted(touched, rows)
    group = np.concatenate([np.repeat(np.arange(touched.size), k), slot])
    negated = np.concatenate([-best_scores[touched].ravel(), -sims[rows, cols]])
    index = np.concatenate([best_idx[touched].ravel(), cols + offset])
    negated, merged_idx = smallest_k_per_group(group, negated, index, touched.size, k)
    best_scores[touched], best_idx[touched] = -negated, merged_idx


def _check_finite(block: np.ndarray, what: str, offset: int) -> None:
    if not np.isfinite(block).all():
        row = offset + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
        raise ValueError(f"{what} row {row} is not finite (NaN or inf); fix the extraction")


def _numpy_search(queries, gallery, k, metric, budget, query_chunk, progress) -> SearchResult:
    n_query, n_gallery = len(queries), gallery.shape[0]
    gallery_chunk, query_chunk = chunk_sizes(n_query, queries.shape[1], budget, query_chunk)
    best_scores = np.full((n_query, k), -np.inf, dtype=np.float32)
    best_idx = np.full((n_query, k), n_gallery, dtype=np.int64)  # padding loses every tie
    for g0 in range(0, n_gallery, gallery_chunk):
        block = np.ascontiguousarray(gallery[g0:g0 + gallery_chunk], dtype=np.float32)
        _check_finite(block, "gallery", g0)
        norms = np.einsum("ij,ij->i", block, block) if metric == "l2" else None
        for q0 in range(0, n_query, query_chunk):
            sims = queries[q0:q0 + query_chunk] @ block.T
            if metric == "l2":  # -|q - g|^2 up to the per-query constant |q|^2, in place
                sims *= 2.0
                sims -= norms[None, :]
            rows = slice(q0, q0 + query_chunk)
            _fold_block(best_scores[rows], best_idx[rows], sims, g0, k)
        if progress is not None:
            progress(min(g0 + gallery_chunk, n_gallery), n_gallery)
    if metric == "l2":
        query_sq = np.einsum("ij,ij->i", queries, queries)
        best_scores = np.maximum(query_sq[:, None] - best_scores, 0.0)
    return SearchResult(best_scores, best_idx, metric)


def import_faiss():
    """faiss is optional: ``pip install faiss-cpu``; None when absent.

    faiss's wheel carries its own OpenMP runtime, which reads ``OMP_WAIT_POLICY`` once, when faiss is
    first imported. Its default lets idle threads spin; on a busy 2-core machine a k-means iteration
    (many short parallel regions) then waits for a descheduled thread while the other burns CPU:
    training the 20 x 16-centroid product quantizer of an ivf-pq index took 15 CPU s instead of 0.4,
    and an IVF-Flat build over 200k vectors 2.2 s instead of 0.34 (docs/delf.md). Threads therefore wait
    passively, unless the variable is already set; it is restored afterwards, so nothing else started
    later (other OpenMP runtimes, child processes) sees the change.
    """
    previous = os.environ.get("OMP_WAIT_POLICY")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import faiss  # noqa: PLC0415 - optional dependency, imported only when asked for
    except ImportError:
        return None
    finally:
        if previous is None:
            del os.environ["OMP_WAIT_POLICY"]
    from geocli.runtime import context

    threads = context.configured_threads()
    if threads:  # --threads bounds faiss's OpenMP pool too (it defaults to every core)
        faiss.omp_set_num_threads(threads)
    return faiss


def _faiss_search(faiss, queries, gallery, k, metric, budget, query_chunk, progress) -> SearchResult:
    index = faiss.IndexFlatIP(queries.shape[1]) if metric == "ip" else faiss.IndexFlatL2(queries.shape[1])
    gallery_chunk, _ = chunk_sizes(len(queries), queries.shape[1], budget, query_chunk)
    for g0 in range(0, gallery.shape[0], gallery_chunk):
        index.add(np.ascontiguousarray(gallery[g0:g0 + gallery_chunk], dtype=np.float32))
    scores, indices = index.search(queries, k)
    if progress is not None:
        progress(gallery.shape[0], gallery.shape[0])
    return SearchResult(scores, indices.astype(np.int64), metric)


def topk_search(queries: np.ndarray, gallery, k: int = 100, metric: str = "ip",
                backend: str = "numpy", memory_budget: int = DEFAULT_MEMORY_BUDGET,
                query_chunk: int = 1024,
                progress: Optional[Callable[[int, int], None]] = None) -> SearchResult:
    """The ``k`` best gallery rows for every query, best first.

    ``gallery`` is anything with ``.shape`` and row slicing (array, memmap, ``h5py.Dataset``).
    ``k`` larger than the gallery is clipped. ``progress(done_rows, total_rows)`` is called after each
    gallery chunk so a CLI can draw a bar without this module knowing about Rich. ``backend="auto"``
    uses faiss when importable (holding the gallery in RAM), else NumPy. Non-finite descriptors raise
    ValueError (NaN would otherwise sort arbitrarily).
    """
    if metric not in METRICS:
        raise UsageError(f"unknown search metric {metric!r}; valid: {', '.join(METRICS)}")
    if backend not in BACKENDS:
        raise UsageError(f"unknown search backend {backend!r}; valid: {', '.join(BACKENDS)}")
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if len(gallery.shape) != 2 or gallery.shape[1] != queries.shape[1]:
        raise ValueError(f"queries are {queries.shape[1]}-d but the gallery is {tuple(gallery.shape)}")
    _check_finite(queries, "query", 0)
    k = min(int(k), gallery.shape[0])
    if k < 1 or len(queries) == 0:
        return SearchResult(np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64),
                            metric)
    faiss = import_faiss() if backend in ("faiss", "auto") else None
    if backend == "faiss" and faiss is None:
        raise UsageError("the faiss search backend needs faiss: pip install faiss-cpu (or use numpy)")
    if faiss is not None:
        return _faiss_search(faiss, queries, gallery, k, metric, memory_budget, query_chunk, progress)
    return _numpy_search(queries, gallery, k, metric, memory_budget, query_chunk, progress)
