"""Writers for ranked retrieval results: a plain ranked-pairs text file and a JSON document.

Kept apart from :mod:`~geocli.retrieval.search` because both global search and local-feature retrieval
produce rankings. Files are written to a temporary name and renamed, so a reader (or a re-run that
skips finished work) never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from geocli.fileio import PathLike, atomic_write_text


def _check_shapes(query_names: Sequence[str], indices: np.ndarray) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 2 or len(indices) != len(query_names):
        raise ValueError(f"indices must be (n_query={len(query_names)}, k), got {indices.shape}")
    return indices


def write_ranked_pairs(path: PathLike, query_names: Sequence[str], gallery_names: Sequence[str],
                       indices: np.ndarray) -> Path:
    """One line ``<query> <gallery>`` per retrieved image, best first within each query.

    This is hloc's pairs-file format, so the output can feed a matcher directly. Names are separated
    by a single space, so a name containing whitespace raises ValueError rather than writing an
    ambiguous file. Negative indices (no result) are skipped.
    """
    indices = _check_shapes(query_names, indices)
    for name in list(query_names) + list(gallery_names):
        if len(name.split()) != 1 or name != name.strip():
            raise ValueError(f"image name {name!r} contains whitespace; use the JSON writer")
    lines = [f"{query} {gallery_names[g]}\n"
             for query, row in zip(query_names, indices) for g in row if g >= 0]
    return atomic_write_text(path, "".join(lines))


def write_results_json(path: PathLike, query_names: Sequence[str], gallery_names: Sequence[str],
                       indices: np.ndarray, scores: Optional[np.ndarray] = None,
                       metric: str = "", extra: Optional[dict] = None) -> Path:
    """``{"metric", "k", "queries": [{"query", "results": [{"rank", "name", "index", "score"}]}]}``.

    ``extra`` is merged at the top level (model, preset, checkpoint...). Scores are written as floats
    (NaN/inf become null, which strict JSON readers accept).
    """
    indices = _check_shapes(query_names, indices)
    scores = None if scores is None else np.asarray(scores, dtype=np.float64)
    queries = []
    for i, (query, row) in enumerate(zip(query_names, indices)):
        results = []
        for rank, g in enumerate(row):
            if g < 0:
                continue
            entry = {"rank": rank + 1, "name": gallery_names[g], "index": int(g)}
            if scores is not None:
                value = float(scores[i, rank])
                entry["score"] = value if np.isfinite(value) else None
            results.append(entry)
        queries.append({"query": query, "results": results})
    document = {"metric": metric, "k": int(indices.shape[1]), **(extra or {}), "queries": queries}
    return atomic_write_text(path, json.dumps(document, indent=1) + "\n")
