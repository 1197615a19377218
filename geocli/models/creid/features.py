"""Features of Centroids-ReID images in geoloc's HDF5 feature store (:mod:`geocli.retrieval.store`).

One group per image, named by its path relative to the dataset (or gallery) folder, holding
``global`` (the post-BN feature, un-normalised), ``pid`` and ``cam`` (-1 when unknown). Embedding is
incremental: images already in the store are skipped, so a gallery is embedded once and an
interrupted run resumes; the store records the model, preset and checkpoint, and refuses features of
another checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from geocli.retrieval.store import FeatureStore


def save_split_features(path: Path, ds, q: np.ndarray, g: np.ndarray) -> Path:
    """Evaluation's query and gallery features (``query/<name>``, ``gallery/<name>``) in a fresh store."""
    with FeatureStore(path, "w", attrs={"model": "creid", "root": str(ds.root)}) as store:
        for prefix, split, feats in (("query", ds.query, q), ("gallery", ds.gallery, g)):
            for p, pid, cam, f in zip(split.paths, split.pids, split.cams, feats):
                store.write(f"{prefix}/{Path(p).name}", {"global": f, "pid": np.int64(pid), "cam": np.int64(cam)})
    return Path(path)


def embed_into_store(store_path: Path, names: Sequence[str], paths: Sequence[Path], pids: Sequence[int],
                     cams: Sequence[int], embed: Callable[[Sequence[Path]], np.ndarray], attrs: Dict[str, object],
                     chunk: int = 256, overwrite: bool = False) -> Tuple[int, int]:
    """Embed the images not yet in the store, ``chunk`` at a time; returns (embedded now, already there)."""
    with FeatureStore(store_path, "w" if overwrite else "a", attrs=attrs) as store:
        todo = [i for i, n in enumerate(names) if n not in store]
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            feats = embed([paths[i] for i in part])
            for i, f in zip(part, feats):
                store.write(names[i], {"global": f, "pid": np.int64(pids[i]), "cam": np.int64(cams[i])})
    return len(todo), len(names) - len(todo)


def read_store(store_path: Path, names: Optional[List[str]] = None):
    """``(names, features, pids, cams)`` of a store, rows in the store's name order."""
    with FeatureStore(store_path, "r") as store:
        names, feats = store.stack_global("global", names)
        pids = np.asarray([int(store.read(n, ["pid"])["pid"]) for n in names], np.int64)
        cams = np.asarray([int(store.read(n, ["cam"])["cam"]) for n in names], np.int64)
    return names, feats, pids, cams
