"""Nearest neighbours among all database descriptors: exact chunked NumPy, or faiss's inverted file.

DELF retrieval asks, for each of a query's ~1,000 local descriptors, its nearest database descriptors
among millions. Two engines behind one interface (:class:`DescriptorIndex`):

- ``exact``: :func:`geocli.retrieval.search.topk_search` (chunked BLAS, bounded memory, ties by row).
  The default below :data:`EXACT_BELOW` descriptors, where it is fast enough and its answers are exact,
  which keeps tests independent of any approximation;
- ``ivf``: faiss ``IndexIVFFlat`` (k-means cells, search in ``nprobe`` of them). faiss replaced a
  hand-written NumPy IVF: on the same 1 M x 40-d set (``benchmarks/search.py --compare-ann``) it trains
  and adds in a fraction of the time and answers 1,000 queries several times faster at equal recall
  (figures in docs/delf.md). faiss-cpu is a dependency of geoloc.

Distances are Euclidean (not squared): the unit of DELF's distance bounds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from geocli.errors import DataError, UsageError
from geocli.retrieval.search import topk_search

#: Below this many descriptors the exact search is used by default.
EXACT_BELOW = 200_000
KINDS = ("auto", "exact", "ivf")
_VECTORS = "vectors.npy"
_FAISS = "ivf.faiss"
_META = "ann.json"


def _faiss():
    try:
        import faiss  # noqa: PLC0415 - heavy import, only when an IVF index is used
    except ImportError:  # pragma: no cover - faiss-cpu is a declared dependency
        raise UsageError("the ivf index needs faiss: pip install faiss-cpu (or use --set retrieve.ann=exact)") from None
    return faiss


def default_cells(n: int) -> int:
    """About sqrt(N) cells (1,000 at 1 M), with at least 39 training points per cell as faiss wants."""
    return int(max(1, min(round(np.sqrt(n)), n // 39)))


class DescriptorIndex:
    """``search(queries, k)`` over a fixed set of float32 vectors; rows are insertion order."""

    def __init__(self, kind: str, dim: int, size: int, vectors: Optional[np.ndarray] = None,
                 faiss_index=None, nprobe: int = 8):
        self.kind, self.dim, self.size = kind, int(dim), int(size)
        self.vectors, self.faiss_index, self.nprobe = vectors, faiss_index, int(nprobe)

    def __len__(self) -> int:
        return self.size

    @classmethod
    def build(cls, x: np.ndarray, kind: str = "auto", n_cells: Optional[int] = None, nprobe: int = 8,
              seed: int = 0) -> "DescriptorIndex":
        """Index ``x`` (n, d). ``kind`` auto picks exact below :data:`EXACT_BELOW` rows, else ivf."""
        if kind not in KINDS:
            raise UsageError(f"unknown index kind {kind!r}; valid: {', '.join(KINDS)}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise DataError(f"cannot index descriptors of shape {x.shape}: no features were extracted")
        if kind == "auto":
            kind = "exact" if len(x) < EXACT_BELOW else "ivf"
        if kind == "exact":
            return cls("exact", x.shape[1], len(x), vectors=x, nprobe=nprobe)
        faiss = _faiss()
        cells = int(n_cells or default_cells(len(x)))
        quantizer = faiss.IndexFlatL2(x.shape[1])
        index = faiss.IndexIVFFlat(quantizer, x.shape[1], cells)
        index.cp.seed = int(seed)
        rng = np.random.default_rng(seed)
        sample = x if len(x) <= 64 * cells else x[np.sort(rng.choice(len(x), 64 * cells, replace=False))]
        index.train(sample)
        index.add(x)
        index.nprobe = int(nprobe)
        return cls("ivf", x.shape[1], len(x), faiss_index=index, nprobe=nprobe)

    def search(self, queries: np.ndarray, k: int = 1, nprobe: Optional[int] = None,
               max_distance: float = np.inf) -> Tuple[np.ndarray, np.ndarray]:
        """``(distances, rows)``, both ``(n_query, k)``, nearest first (ties by row for exact).

        Slots without a neighbour (fewer than k, or farther than ``max_distance``) hold ``inf``, ``-1``.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise DataError(f"query descriptors are {queries.shape[1]}-d but the index holds {self.dim}-d ones "
                            "(extracted with another PCA?)")
        k = int(k)
        distances = np.full((len(queries), k), np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        if len(queries) == 0 or k < 1:
            return distances, rows
        if self.kind == "exact":
            result = topk_search(queries, self.vectors, k=k, metric="l2")
            sq, found = result.scores, result.indices
        else:
            self.faiss_index.nprobe = int(nprobe or self.nprobe)
            sq, found = self.faiss_index.search(queries, k)
        width = found.shape[1]
        dist = np.sqrt(np.maximum(sq, 0.0)).astype(np.float32)
        keep = (found >= 0) & (found < self.size) & (dist <= max_distance)
        distances[:, :width] = np.where(keep, dist, np.inf)
        rows[:, :width] = np.where(keep, found, -1)
        return distances, rows

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, folder: Union[str, Path]) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "exact":
            np.save(folder / _VECTORS, self.vectors)
        else:
            _faiss().write_index(self.faiss_index, str(folder / _FAISS))
        meta = {"kind": self.kind, "dim": self.dim, "size": self.size, "nprobe": self.nprobe}
        (folder / _META).write_text(json.dumps(meta) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "DescriptorIndex":
        folder = Path(folder)
        try:
            meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{folder}: not a descriptor index ({exc}); build one with `index`") from None
        if meta["kind"] == "exact":
            vectors = np.load(folder / _VECTORS, allow_pickle=False)
            return cls("exact", meta["dim"], meta["size"], vectors=vectors, nprobe=meta["nprobe"])
        index = _faiss().read_index(str(folder / _FAISS))
        return cls("ivf", meta["dim"], meta["size"], faiss_index=index, nprobe=meta["nprobe"])
