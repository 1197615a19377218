"""Geo-localise panoramas against a satellite index: ``geoloc retrieve vigor index`` / ``query``.

``build_index`` stores one entry per tile in an HDF5 feature store (geocli.retrieval.store): the
L2-normalised descriptor (``global``), the raw descriptor's norm (the offset head reads raw
descriptors), the tile centre and the metres per pixel of its city. Re-runs skip tiles already stored.
``query`` ranks the index for each panorama with the chunked exact search (geocli.retrieval.search),
refines the position with the offset head on (top-1 tile, panorama), and draws the query beside its
top tiles with the refined position marked on the first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from geocli.data.formats import vigor as fmt
from geocli.data.images import image_files
from geocli.errors import DataError, UsageError
from geocli.fileio import atomic_write_text
from geocli.models.vigor import data as vdata
from geocli.models.vigor import predict as pred


def _setup(out: Path, device: Optional[str]):
    from geocli.runtime import context

    return context.setup(Path(out), device=device, mode="graph", seed=0, distributed=False)


def _load(checkpoint: Path, engine: str):
    """The checkpoint's network; an engine VIGOR does not run on is refused before it is loaded."""
    from geocli import api, registry
    from geocli.runtime import engine as engines

    engines.require(registry.load_backend("vigor"), engine, "retrieve")
    return api.load_model("vigor", checkpoint, task="retrieve")


def _branch(loaded, graph: str, engine: str, batch: int, checkpoint: Path):
    """The ``ground`` or ``satellite`` branch on ``engine`` (:func:`geocli.runtime.engine.runner`)."""
    from geocli.runtime import engine as engines

    return engines.runner(engine, loaded.backend, loaded.cfg, loaded.network, graph=graph, batch_size=batch,
                          checkpoint=checkpoint)


def build_index(checkpoint: Path, data: Path, out: Path, *, setting: str = "same-area", labels: str = "original",
                device: Optional[str] = None, progress: Optional[Callable[[int, int], None]] = None,
                engine: str = "mindspore") -> Dict[str, Any]:
    """Describe every tile of ``setting``'s test reference set into ``out`` (an .h5 feature store), with
    the satellite branch run on ``engine`` (mindspore or onnxruntime)."""
    from geocli.retrieval.store import FeatureStore

    _setup(Path(out).parent, device)
    loaded = _load(checkpoint, engine)
    split = fmt.load_split(data, setting, "test", labels)
    prep = vdata.prep_options(loaded.cfg)
    attrs = {"model": "vigor", "checkpoint": str(checkpoint), "data": str(Path(data).resolve())}
    with FeatureStore(out, "a", attrs=attrs) as store:
        todo = [i for i, p in enumerate(split.tile_paths) if p not in store]
        bs = int(loaded.cfg["eval"]["batch_size"])
        done = [0]

        def tick(n):
            done[0] += n
            if progress is not None:
                progress(min(done[0], len(todo)), len(todo))

        if todo:
            satellite = _branch(loaded, "satellite", engine, min(bs, len(todo)), checkpoint)
            desc, norms = pred.run_branch(satellite, vdata.image_batches(
                split.root, [split.tile_paths[i] for i in todo], prep["sat_hw"], prep, bs), len(todo), tick)
            city_scale = {c: (fmt.CORRECTED_M_PER_PX[c] if labels == "corrected" else fmt.ORIGINAL_M_PER_PX)
                          for c in fmt.CITIES}
            for row, i in enumerate(todo):
                city = split.tile_paths[i].split("/", 1)[0]
                store.write(split.tile_paths[i], {"global": desc[row], "norm": np.float32(norms[row]),
                                                  "latlon": split.tile_latlon[i],
                                                  "m_per_px": np.float64(city_scale[city])})
        total = len(store)
    return {"index": str(out), "tiles": total, "added": len(todo)}


def query(checkpoint: Path, panoramas: Sequence[Path], index: Path, out: Path, *, top: int = 5,
          device: Optional[str] = None, engine: str = "mindspore") -> Dict[str, Any]:
    """Top-``top`` tiles (with their centres) and the refined position of each panorama; the ground
    branch runs on ``engine`` (mindspore or onnxruntime), the small offset head in MindSpore."""
    import mindspore as ms

    from geocli.models.vigor.net import OffsetGraph
    from geocli.retrieval.search import topk_search
    from geocli.retrieval.store import FeatureStore

    if top < 1:
        raise UsageError("--top must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _setup(out, device)
    loaded = _load(checkpoint, engine)
    cfg, net = loaded.cfg, loaded.network
    files = image_files(panoramas)
    prep = vdata.prep_options(cfg)
    with FeatureStore(index, "r") as store:
        root = Path(store.attrs.get("data", "."))
        names, gallery = store.stack_global("global")
        if gallery.shape[1] != net.dim:
            raise DataError(f"{index}: descriptors have {gallery.shape[1]} values, this checkpoint's {net.dim}; "
                            "build the index with the same checkpoint")
        extra = [store.read(n, ["norm", "latlon", "m_per_px"]) for n in names]
    norms = np.array([float(e["norm"]) for e in extra], np.float32)
    latlon = np.stack([e["latlon"] for e in extra])
    scale = np.array([float(e["m_per_px"]) for e in extra])
    bs = min(int(cfg["eval"]["batch_size"]), len(files))
    ground = _branch(loaded, "ground", engine, bs, checkpoint)
    grd, grd_norm = pred.run_branch(ground, vdata.image_batches(Path("."), [str(p) for p in files], prep["pano_hw"], prep,
                                                                bs), len(files))
    found = topk_search(grd, gallery, k=min(top, len(names)))
    best = found.indices[:, 0]
    raw = cfg["model"]["offset_input"] == "raw"
    head = OffsetGraph(net)
    s_in = gallery[best] * (norms[best][:, None] if raw else 1.0)
    g_in = grd * (grd_norm[:, None] if raw else 1.0)
    offsets = np.concatenate([head(ms.Tensor(s_in[i:i + 1]), ms.Tensor(g_in[i:i + 1])).asnumpy() for i in range(len(files))])
    lat, lon = fmt.offset_to_latlon(latlon[best, 0], latlon[best, 1], offsets * 320.0, scale[best])
    results: List[Dict[str, Any]] = []
    for q, path in enumerate(files):
        tiles = [{"tile": names[j], "score": float(s), "lat": float(latlon[j, 0]), "lon": float(latlon[j, 1])}
                 for j, s in zip(found.indices[q], found.scores[q])]
        picture = out / f"{q:04d}_{Path(path).stem[:40].lstrip('-') or 'query'}.png"
        draw(picture, path, [root / t["tile"] for t in tiles], offsets[q] * 320.0)
        results.append({"panorama": str(path), "top": tiles, "tile_centre": [tiles[0]["lat"], tiles[0]["lon"]],
                        "refined": [float(lat[q]), float(lon[q])], "offset_px640": (offsets[q] * 320).tolist(),
                        "picture": str(picture)})
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    rows = [{"panorama": Path(r["panorama"]).name, "top-1 tile": Path(r["top"][0]["tile"]).name,
             "score": r["top"][0]["score"], "lat": r["refined"][0], "lon": r["refined"][1]} for r in results]
    return {"rows": rows, "json": str(out / "results.json")}


def draw(path: Path, panorama: Path, tiles: Sequence[Path], offset_px640: np.ndarray, size: int = 160) -> Path:
    """The panorama above its top tiles; the refined position (row 320 + d0, column 320 - d1) on the first."""
    import cv2

    pano = cv2.imread(str(panorama), cv2.IMREAD_COLOR)
    if pano is None:
        raise DataError(f"{panorama}: not a readable image")
    width = size * max(len(tiles), 2)
    pano = cv2.resize(pano, (width, width // 2 if len(tiles) > 2 else size))
    thumbs = []
    for k, tile in enumerate(tiles):
        img = cv2.imread(str(tile), cv2.IMREAD_COLOR)
        img = np.full((size, size, 3), 200, np.uint8) if img is None else cv2.resize(img, (size, size))
        if k == 0:
            r = (320.0 + offset_px640[0]) / 640.0 * size
            c = (320.0 - offset_px640[1]) / 640.0 * size
            cv2.circle(img, (int(round(c)), int(round(r))), 5, (0, 0, 255), 2)
            cv2.drawMarker(img, (size // 2, size // 2), (255, 255, 255), cv2.MARKER_CROSS, 8, 1)
        cv2.putText(img, f"#{k + 1}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        thumbs.append(img)
    row = np.concatenate(thumbs, axis=1)
    if row.shape[1] < pano.shape[1]:
        row = np.concatenate([row, np.full((size, pano.shape[1] - row.shape[1], 3), 255, np.uint8)], axis=1)
    cv2.imwrite(str(path), np.concatenate([pano[:, :row.shape[1]], row], axis=0))
    return Path(path)
