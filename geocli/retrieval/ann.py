"""Nearest neighbours among all database descriptors: exact chunked NumPy, or faiss's inverted file.

DELF retrieval asks, for each of a query's ~1,000 local descriptors, its nearest database descriptors
among millions. Three engines behind one interface (:class:`DescriptorIndex`):

- ``exact``: :func:`geocli.retrieval.search.topk_search` (chunked BLAS, bounded memory, ties by row).
  The default below :data:`EXACT_BELOW` descriptors, where it is fast enough and its answers are exact,
  which keeps tests independent of any approximation;
- ``ivf``: faiss ``IndexIVFFlat`` (k-means cells, search in ``nprobe`` of them). faiss replaced a
  hand-written NumPy IVF: on the same 1 M x 40-d set (``benchmarks/search.py --compare-ann``) it trains
  and adds in a fraction of the time and answers 1,000 queries several times faster at equal recall
  (figures in docs/delf.md). faiss-cpu is a dependency of geoloc.
- ``ivf-pq``: the same cells, but each cell is scanned over 4-bit product-quantization codes with
  faiss's SIMD "fast scan" (``IndexIVFPQFastScan``, ``pq_m`` sub-quantizers of ``d / pq_m``
  dimensions, ``d / 2`` bytes per vector instead of ``4 d``), and the ``refine x k`` best candidates
  are then re-ranked with their exact float32 vectors (``IndexRefineFlat``). Returned distances are
  exact; only which candidates reach the re-ranking is approximate. IVF-Flat computes a float distance
  to each of ~18,000 vectors (160 bytes each) per query descriptor at 5 M descriptors and 8 cells;
  fast scan compares 10-byte codes with SIMD table look-ups, so it probes 16 cells, and finds more of
  the exact neighbours, for about a third of the CPU (0.135 vs 0.362 CPU s per 1,000-descriptor query,
  docs/delf.md). ``auto`` picks it from :data:`EXACT_BELOW` descriptors on.

Distances are Euclidean (not squared): the unit of DELF's distance bounds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from geocli.errors import DataError, UsageError
from geocli.retrieval.search import import_faiss, topk_search

#: Below this many descriptors the exact search is used by default.
EXACT_BELOW = 200_000
KINDS = ("auto", "exact", "ivf", "ivf-pq")
#: What ``auto`` builds at :data:`EXACT_BELOW` descriptors and above.
AUTO_LARGE = "ivf-pq"
#: ivf-pq: candidates re-ranked with exact distances, as a multiple of k.
DEFAULT_REFINE = 2.0
#: Cells probed per query when nothing else is asked, by kind. ivf-pq scans 16 for less than IVF-Flat
#: pays for 8, and finds more of the exact neighbours (docs/delf.md, "Speed").
DEFAULT_NPROBE = {"exact": 8, "ivf": 8, "ivf-pq": 16}
_VECTORS = "vectors.npy"
_FAISS = "ivf.faiss"
_META = "ann.json"


def _faiss():
    faiss = import_faiss()  # heavy import, only when an IVF index is used; threads wait passively
    if faiss is None:  # pragma: no cover - faiss-cpu is a declared dependency
        raise UsageError("the ivf index needs faiss: pip install faiss-cpu (or use --set retrieve.ann=exact)")
    return faiss


def default_cells(n: int) -> int:
    """About sqrt(N) cells (1,000 at 1 M), with at least 39 training points per cell as faiss wants."""
    return int(max(1, min(round(np.sqrt(n)), n // 39)))


def _check_refine(refine: float) -> float:
    if not 1.0 <= float(refine) <= 1000.0:  # faiss's own bounds for IndexRefine.k_factor
        raise UsageError(f"refine {refine}: the re-ranked candidates must be 1 to 1000 times k")
    return float(refine)


def default_pq_m(dim: int) -> int:
    """Sub-quantizers of the ivf-pq codes: two dimensions each (20 for DELF's 40-d), one if d is odd."""
    return dim // 2 if dim % 2 == 0 else dim


class DescriptorIndex:
    """``search(queries, k)`` over a fixed set of float32 vectors; rows are insertion order."""

    def __init__(self, kind: str, dim: int, size: int, vectors: Optional[np.ndarray] = None,
                 faiss_index=None, nprobe: int = 8, refine: float = DEFAULT_REFINE):
        self.kind, self.dim, self.size = kind, int(dim), int(size)
        self.vectors, self.faiss_index, self.nprobe = vectors, faiss_index, int(nprobe)
        self.refine = _check_refine(refine)

    def __len__(self) -> int:
        return self.size

    @classmethod
    def build(cls, x: np.ndarray, kind: str = "auto", n_cells: Optional[int] = None,
              nprobe: Optional[int] = None, seed: int = 0, refine: float = DEFAULT_REFINE,
              pq_m: Optional[int] = None) -> "DescriptorIndex":
        """Index ``x`` (n, d). ``kind`` auto picks exact below :data:`EXACT_BELOW` rows, else
        :data:`AUTO_LARGE`. ``nprobe`` (default :data:`DEFAULT_NPROBE` of the kind) is the index's own,
        used when a search names none; ``refine`` and ``pq_m`` only concern ivf-pq."""
        if kind not in KINDS:
            raise UsageError(f"unknown index kind {kind!r}; valid: {', '.join(KINDS)}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise DataError(f"cannot index descriptors of shape {x.shape}: no features were extracted")
        if kind == "auto":
            kind = "exact" if len(x) < EXACT_BELOW else AUTO_LARGE
        nprobe = int(nprobe or DEFAULT_NPROBE[kind])
        if kind == "exact":
            return cls("exact", x.shape[1], len(x), vectors=x, nprobe=nprobe, refine=refine)
        faiss = _faiss()
        dim = x.shape[1]
        cells = int(n_cells or default_cells(len(x)))
        quantizer = faiss.IndexFlatL2(dim)
        if kind == "ivf":
            ivf = faiss.IndexIVFFlat(quantizer, dim, cells)
        else:
            m = int(pq_m or default_pq_m(dim))
            if m < 1 or dim % m:
                raise UsageError(f"pq_m {m} must divide the descriptor size {dim}")
            if len(x) < 16:
                raise DataError(f"an ivf-pq index needs at least 16 descriptors to train its 4-bit codes, "
                                f"got {len(x)}; use retrieve.ann=exact")
            ivf = faiss.IndexIVFPQFastScan(quantizer, dim, cells, m, 4)
        ivf.cp.seed = int(seed)
        rng = np.random.default_rng(seed)
        sample = x if len(x) <= 64 * cells else x[np.sort(rng.choice(len(x), 64 * cells, replace=False))]
        ivf.train(sample)
        ivf.nprobe = int(nprobe)
        # ivf-pq keeps the float vectors beside the codes, to re-rank the best candidates exactly
        index = ivf if kind == "ivf" else faiss.IndexRefineFlat(ivf)
        index.add(x)
        return cls(kind, dim, len(x), faiss_index=index, nprobe=nprobe, refine=refine)

    def search(self, queries: np.ndarray, k: int = 1, nprobe: Optional[int] = None,
               max_distance: float = np.inf, refine: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(distances, rows)``, both ``(n_query, k)``, nearest first (ties by row for exact).

        All of ``queries`` go to faiss in one call (it spreads them over its threads). ``nprobe`` and
        ``refine`` override the index's own for this call.

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
            faiss = _faiss()
            params = faiss.SearchParametersIVF(nprobe=int(nprobe or self.nprobe))
            if self.kind == "ivf-pq":
                params = faiss.IndexRefineSearchParameters(k_factor=_check_refine(refine or self.refine),
                                                           base_index_params=params)
            sq, found = self.faiss_index.search(queries, k, params=params)
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
        meta = {"kind": self.kind, "dim": self.dim, "size": self.size, "nprobe": self.nprobe,
                "refine": self.refine}
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
        return cls(meta["kind"], meta["dim"], meta["size"], faiss_index=index, nprobe=meta["nprobe"],
                   refine=meta.get("refine", DEFAULT_REFINE))
