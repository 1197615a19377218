"""DELF large-scale retrieval on feature files: build the index, query it, write the ranked lists.

The settings (``retrieve.*`` in the DELF config, :data:`DEFAULTS`) follow the port's retrieval
(``perform_retrieval.py``): 60 neighbours per query descriptor, no distance bound, at least 4 putative
correspondences before verification, score = RANSAC inliers. Where the port verifies every candidate
image (30 s per query at 17k images, tensorflow/models #9113), ``verify: 100`` verifies only the 100
most-voted ones; ``verify: all`` is the port's exhaustive procedure, without its last-group bug.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from geocli.errors import ConfigError, DataError
from geocli.retrieval.local import LocalIndex, LocalQueryResult

DEFAULTS: Dict[str, Any] = {
    "knn": 60,               # neighbours per query descriptor (the port's Annoy get_nns_by_vector(f, 60))
    "max_distance": None,    # None: no bound (the port); e.g. 0.8 to ignore far neighbours
    "min_matches": 4,        # putative correspondences needed before RANSAC (the port's --threshold)
    "verify": 100,           # images verified per query; "all": every image with min_matches (the port)
    "residual": 20.0,        # RANSAC residual threshold in pixels
    "ann": "auto",           # exact (chunked NumPy) | ivf (faiss IVF-Flat) | ivf-pq (IVF, 4-bit PQ fast scan,
                             # exact re-ranking) | auto (exact below 200k descriptors, else ivf-pq)
    "nprobe": None,          # IVF cells searched per query descriptor; None: the index's own (16 for
                             # ivf-pq, 8 for ivf)
    "refine": 2.0,           # ivf-pq: the refine x knn best candidates are re-ranked with exact distances
    "cells": None,           # IVF cells; None: about sqrt(descriptors)
    "top": 100,              # results written per query
}
INDEX_INFO = "index.json"


def settings(cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    section = dict(cfg or {})
    section = dict(section.get("retrieve", section))
    out = {**DEFAULTS, **{k: v for k, v in section.items() if k in DEFAULTS}}
    out["verify"] = parse_verify(out["verify"])
    return out


def parse_verify(value) -> Optional[int]:
    """``"all"`` -> None (verify every candidate), else a non-negative int."""
    if value is None or str(value).lower() == "all":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--verify {value!r}: give a number of images or 'all'") from None
    if number < 0:
        raise ConfigError(f"--verify {value}: must be >= 0 or 'all'")
    return number


def _optional_int(value) -> Optional[int]:
    return None if value is None else int(value)


def index_options(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """Keyword arguments of :meth:`LocalIndex.build` from the ``retrieve`` settings."""
    return {"kind": cfg["ann"], "nprobe": _optional_int(cfg["nprobe"]), "refine": float(cfg["refine"]),
            "n_cells": _optional_int(cfg["cells"])}


def build_index(features: Path, out: Path, cfg: Mapping[str, Any], seed: int = 0) -> Dict[str, Any]:
    """Index every image of the feature file ``features`` into the folder ``out``."""
    from geocli.retrieval.store import FeatureStore

    start = time.perf_counter()
    with FeatureStore(features, mode="r") as store:
        attrs = store.attrs
        index = LocalIndex.from_store(store, seed=seed, **index_options(cfg))
    index.save(out)
    info = {"features": str(features), "images": index.n_images, "descriptors": len(index.ann),
            "ann": index.ann.kind, "dim": index.ann.dim, "seconds": round(time.perf_counter() - start, 3),
            "store": attrs}
    (Path(out) / INDEX_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def query_index(index: LocalIndex, queries: Sequence[Mapping[str, np.ndarray]], cfg: Mapping[str, Any],
                progress: Optional[Callable[[int, int], None]] = None) -> List[LocalQueryResult]:
    """One :class:`LocalQueryResult` per query feature dict (``locations``, ``descriptors``)."""
    bound = cfg["max_distance"]
    results = []
    for i, q in enumerate(queries):
        results.append(index.query(q["locations"], q["descriptors"], k=int(cfg["knn"]),
                                   nprobe=_optional_int(cfg["nprobe"]),
                                   max_distance=np.inf if bound is None else float(bound),
                                   verify=parse_verify(cfg["verify"]), min_matches=int(cfg["min_matches"]),
                                   residual_threshold=float(cfg["residual"]), refine=float(cfg["refine"])))
        if progress is not None:
            progress(i + 1, len(queries))
    return results


def ranked_rows(query_names: Sequence[str], db_names: Sequence[str], results: Sequence[LocalQueryResult],
                top: int) -> List[Dict[str, Any]]:
    """Flat rows (query, rank, image, inliers, votes) of the ``top`` results of each query."""
    rows = []
    for name, result in zip(query_names, results):
        ranking, scores = result.ranking()[:top], result.scores()[:top]
        for rank, (image, inliers) in enumerate(zip(ranking, scores), 1):
            rows.append({"query": name, "rank": rank, "image": db_names[image], "inliers": int(inliers),
                         "votes": int(result.votes[image])})
    return rows


def write_results(out_dir: Path, query_names: Sequence[str], db_names: Sequence[str],
                  results: Sequence[LocalQueryResult], top: int, extra: Optional[dict] = None) -> Dict[str, Path]:
    """``results.csv`` (query, rank, image, inliers, votes) and ``results.json`` in ``out_dir``."""
    from geocli.fileio import atomic_write_text
    from geocli.retrieval.results import write_results_json

    out_dir = Path(out_dir)
    rows = ranked_rows(query_names, db_names, results, top)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["query", "rank", "image", "inliers", "votes"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write_text(out_dir / "results.csv", buffer.getvalue())
    width = min(top, len(db_names))
    indices = np.stack([r.ranking()[:width] for r in results]) if results else np.zeros((0, width), np.int64)
    scores = np.stack([r.scores()[:width] for r in results]) if results else np.zeros((0, width))
    json_path = write_results_json(out_dir / "results.json", list(query_names), list(db_names), indices,
                                   scores, metric="inliers", extra=extra)
    return {"csv": csv_path, "json": json_path}


def load_index(folder: Path) -> LocalIndex:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--index {folder}: folder not found; build it with `geoloc retrieve delf index`")
    return LocalIndex.load(folder)
