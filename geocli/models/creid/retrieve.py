"""``geoloc retrieve creid QUERY... --gallery DIR|FEATURES.h5 [--centroids true]``: rank a gallery for each query.

The gallery is embedded once into geoloc's HDF5 feature store (incremental: only images not yet in it
are embedded, so a grown gallery costs only its new images and a killed run resumes) and searched with
the chunked exact top-k search (:mod:`geocli.retrieval.search`) on L2-normalised post-BN features,
squared Euclidean distance, as in evaluation. With centroids, each gallery identity is one vector, the
mean of its images (the reference's ``respect_camids=False`` mode, since a query has no known camera),
which is the paper's point: the search space shrinks to one entry per identity.

Gallery identities come from the names: a dataset folder (its gallery split), Market/Duke-named images,
or one sub-folder per identity; otherwise every image is its own identity. A query whose file name
follows the Market pattern has a known identity, and the picture then frames each result green
(same identity) or red. Single images work (the reference's inference script fails on a file path).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from geocli.data.images import image_files
from geocli.errors import DataError, UsageError
from geocli.fileio import atomic_write_text
from geocli.models.creid import data as cdata


def gallery_index(folder: Path) -> Tuple[List[Path], List[str], np.ndarray, np.ndarray, bool]:
    """(paths, names, pids, cams, labelled) of a gallery folder (see the module docstring)."""
    from geocli.data.formats import reid

    folder = Path(folder)
    try:
        root, _ = reid.find_root(folder)
        ds = reid.load(root, need_train=False)
        split = ds.gallery
        return split.paths, reid.names_of(split.paths, ds.root), split.pids, split.cams, True
    except DataError:
        pass
    images = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in reid.IMAGE_SUFFIXES]
    if images and all(reid.PATTERN.search(p.name) for p in images):
        split = reid.read_market_dir(folder)
        return split.paths, reid.names_of(split.paths, folder), split.pids, split.cams, True
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir())
    if subdirs and not images:
        paths, pids = [], []
        for number, d in enumerate(subdirs):
            for p in sorted(q for q in d.iterdir() if q.is_file() and q.suffix.lower() in reid.IMAGE_SUFFIXES):
                paths.append(p)
                pids.append(int(d.name) if d.name.isdigit() else number)
        if paths:
            cams = [-2] * len(paths)
            return paths, reid.names_of(paths, folder), np.asarray(pids), np.asarray(cams), True
    paths = image_files([folder])
    return paths, reid.names_of(paths, folder), np.arange(len(paths)), np.full(len(paths), -2), False


def default_store(gallery: Path, checkpoint: Optional[Path], out_dir: Path) -> Path:
    """``features/gallery-<folder>-<hash>.h5`` beside the checkpoint's run (one store per gallery folder
    and checkpoint), or in ``out_dir`` without a checkpoint."""
    digest = hashlib.blake2b(str(Path(gallery).resolve()).encode(), digest_size=4).hexdigest()
    name = f"gallery-{Path(gallery).resolve().name}-{digest}.h5"
    if checkpoint is not None:
        return Path(checkpoint).resolve().parent.parent / "features" / name
    return out_dir / name


def gallery_features(cfg: Dict[str, Any], network, ctx, gallery: Path, out_dir: Path, embed_fn):
    """``(names, features, pids, labelled, paths, store info)``: from a store file, or a folder embedded
    into one."""
    from geocli.models.creid.features import embed_into_store, read_store

    gallery = Path(gallery)
    if gallery.is_file():
        if gallery.suffix.lower() not in (".h5", ".hdf5"):
            raise UsageError(f"--gallery {gallery}: give an image folder or an HDF5 feature store (.h5)")
        names, feats, pids, _ = read_store(gallery)
        return names, feats, pids, True, [None] * len(names), {"store": str(gallery), "embedded": 0,
                                                                "reused": len(names)}
    if not gallery.is_dir():
        raise UsageError(f"--gallery {gallery}: no such folder or file")
    paths, names, pids, cams, labelled = gallery_index(gallery)
    checkpoint = getattr(ctx, "checkpoint", None)
    store = Path(cfg["retrieve"]["features"]) if cfg["retrieve"]["features"] else default_store(gallery, checkpoint, out_dir)
    attrs = {"model": "creid", "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else "none",
             "gallery": str(gallery.resolve())}
    if _distributed(cfg):
        from geocli.models.creid.distributed import embed_distributed

        workers = str(cfg["retrieve"]["workers"])
        if not workers.isdigit() or int(workers) < 1:
            raise UsageError(f"--workers {workers}: give a whole number of msrun workers, at least 1")
        new, old = embed_distributed(store, names, paths, pids, cams, attrs, cfg, ctx, int(workers))
    else:
        new, old = embed_into_store(store, names, paths, pids, cams, embed_fn, attrs,
                                    chunk=int(cfg["retrieve"]["batch_images"]))
    _, feats, pids, _ = read_store(store, names)
    return names, feats, pids, labelled, paths, {"store": str(store), "embedded": new, "reused": old}


def _distributed(cfg: Dict[str, Any]) -> bool:
    value = cfg["retrieve"].get("distributed", False)
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise UsageError(f"--distributed {value!r}: give true or false")
        value = value.lower() == "true"
    return bool(value)


def run_retrieval(cfg: Dict[str, Any], inputs: Sequence[Path], network, out_dir: Path, ctx, top_k: int = 10,
                  **_: Any) -> Dict[str, Any]:
    from geocli.data.formats import reid
    from geocli.models.creid.backend import embed
    from geocli.models.creid.centroids import by_identity
    from geocli.models.creid.scoring import l2_normalise
    from geocli.retrieval.search import topk_search

    r = cfg["retrieve"]
    if not r["gallery"]:
        raise UsageError("--gallery is required: an image folder (embedded once into an HDF5 store) or a "
                         "FEATURES.h5 store")
    queries = image_files(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)

    def embed_fn(paths):
        return embed(network, paths, cfg, ctx, "gallery")

    names, feats, pids, labelled, paths, store_info = gallery_features(cfg, network, ctx, Path(r["gallery"]),
                                                                       out_dir, embed_fn)
    q_feats = l2_normalise(embed(network, queries, cfg, ctx, "queries"))
    centroids = bool(r["centroids"])
    if centroids:
        c = by_identity(feats, pids)
        search_feats = l2_normalise(c.features)
        # a picture per centroid: its member nearest to the centroid
        members = [m[int(np.argmin(((l2_normalise(feats[m]) - search_feats[i]) ** 2).sum(1)))]
                   for i, m in enumerate(c.members)]
        items = [(names[j], int(c.pids[i]), paths[j]) for i, j in enumerate(members)]
    else:
        search_feats = l2_normalise(feats)
        items = [(names[j], int(pids[j]), paths[j]) for j in range(len(names))]
    result = topk_search(q_feats, search_feats, k=top_k, metric="l2")
    q_pids = []
    for q in queries:
        match = reid.PATTERN.search(q.name)
        q_pids.append(int(match.group(1)) if match and labelled else None)
    per_query, rows = [], []
    for i, q in enumerate(queries):
        ranked = []
        for rank, (j, dist) in enumerate(zip(result.indices[i], result.scores[i]), 1):
            name, pid, _ = items[int(j)]
            same = None if q_pids[i] is None else pid == q_pids[i]
            ranked.append({"rank": rank, "identity": pid, "distance": float(dist), "gallery": name, "match": same})
            rows.append({"query": q.name, "rank": rank, "identity": pid, "distance": float(dist), "gallery": name,
                         "match": "" if same is None else ("yes" if same else "no")})
        per_query.append({"query": str(q), "identity": q_pids[i], "results": ranked})
    payload = {"gallery": str(r["gallery"]), "centroids": centroids, "gallery_items": len(items),
               "feature_store": store_info, "queries": per_query}
    atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2) + "\n")
    picture = draw_ranked(out_dir / "ranked.png", queries, per_query, items, cfg["data"]["size"])
    return {"rows": rows, "json": str(out_dir / "results.json"), "picture": str(picture) if picture else None,
            "feature_store": store_info}


def draw_ranked(path: Path, queries: Sequence[Path], per_query: List[Dict[str, Any]], items, size,
                max_rows: int = 12) -> Optional[Path]:
    """One row per query: the query, a gap, then its ranked gallery images; green/red frames when both
    identities are known. Gallery items read from a feature store have no image: a grey tile."""
    import cv2

    h, w = max(int(size[0]), 96), max(int(size[1]), 48)
    border = 3
    image_of = {name: image_path for name, _, image_path in items}
    rows = []
    for q, entry in list(zip(queries, per_query))[:max_rows]:
        tiles = [_tile(cdata.read_rgb(q), h, w, (255, 255, 255), border), np.full((h + 2 * border, 8, 3), 255, np.uint8)]
        for res in entry["results"]:
            image_path = image_of.get(res["gallery"])
            image = cdata.read_rgb(image_path) if image_path is not None else np.full((h, w, 3), 128, np.uint8)
            colour = (200, 200, 200) if res["match"] is None else ((0, 170, 0) if res["match"] else (220, 0, 0))
            tiles.append(_tile(image, h, w, colour, border))
        rows.append(np.concatenate(tiles, axis=1))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    return Path(path)


def _tile(image: np.ndarray, h: int, w: int, colour, border: int) -> np.ndarray:
    import cv2

    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_CONSTANT, value=colour)
