"""Library form of ``geoloc retrieve delf extract | fit-pca | index | query``: one function per step.

Each takes what its command takes and returns paths and figures, so the steps can be scripted from
Python (hloc-style) and the CLI module stays a thin parser. MindSpore is imported only by the steps
that run the network (extract, query from images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from geocli.errors import DataError, UsageError

#: Per-rank feature files of a distributed extraction: ``<out>.parts/rank<r>.h5``.
PARTS_SUFFIX = ".parts"


def _loaded(checkpoint: Optional[Path], preset: Optional[str], overrides: Iterable[str], device: Optional[str],
            run_dir: Path, distributed: Optional[bool] = False, mode: str = "graph", engine: str = "mindspore"):
    """(run context, loaded model); the context carries the inference ``engine`` and the checkpoint, which
    :func:`geocli.models.delf.tasks.make_extractor` reads."""
    from geocli import api, registry
    from geocli.runtime import engine as engines

    engine = engines.require(registry.load_backend("delf"), engine, "retrieve")  # before loading anything
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UsageError(f"--checkpoint {checkpoint}: file not found")
    ctx = api._context(run_dir, device, mode, 0, None, quiet=True, distributed=distributed)
    ctx.engine, ctx.checkpoint = engine, checkpoint
    loaded = api.load_model("delf", checkpoint, preset=preset, overrides=list(overrides), task="retrieve")
    return ctx, loaded


def extract(images: Path, out: Path, *, checkpoint: Optional[Path] = None, pca: Optional[Path] = None,
            preset: Optional[str] = None, overrides: Iterable[str] = (), device: Optional[str] = None,
            overwrite: bool = False, progress: Optional[Callable[[int, int, float], None]] = None,
            distributed: Optional[bool] = False, mode: str = "graph", engine: str = "mindspore") -> Dict[str, Any]:
    """Extract DELF features of every image in ``images`` (folder or list) into the HDF5 file ``out``.

    Incremental: names already in ``out`` are skipped (``overwrite`` starts afresh). In an msrun
    worker (``distributed=None`` detects it), each rank extracts every ``size``-th image into
    ``<out>.parts/rank<r>.h5``; :func:`merge_parts` joins them.
    """
    from geocli.models.delf import extract as ex
    from geocli.models.delf.tasks import file_digest, make_extractor

    paths, names = ex.list_images(Path(images))
    out = Path(out)
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give the feature file to write, e.g. features.h5")
    run_dir = out.parent / (out.name + PARTS_SUFFIX)
    ctx, loaded = _loaded(checkpoint, preset, overrides, device, run_dir, distributed, mode, engine)
    target = out
    if ctx.group_size > 1:
        keep = ex.image_shard(names, ctx.rank, ctx.group_size)
        paths, names = [paths[i] for i in keep], [names[i] for i in keep]
        target = run_dir / f"rank{ctx.rank}.h5"
    extractor, settings, pca_id = make_extractor(loaded.cfg, loaded.network, pca, ctx)
    identity = {"model": "delf", "checkpoint": file_digest(checkpoint), "pca": pca_id}
    report = ex.extract_to_store(extractor, paths, names, target, attrs=identity, overwrite=overwrite,
                                 progress=progress if ctx.rank == 0 else None)
    summary = {"out": str(target), "images": len(names), "extracted": report.extracted, "skipped": report.skipped,
               "features": report.features, "seconds": round(report.seconds, 2),
               "images_per_second": round(report.images_per_second, 3), "graphs": report.graphs,
               "rank": ctx.rank, "ranks": ctx.group_size,
               "descriptor_dim": settings["pca_dim"] if pca_id != "none" else None}
    warning = report.warning(settings["score_threshold"])
    if warning:
        summary["warning"] = warning
    ctx.log.info(f"extraction rank {ctx.rank}: {summary}", show=False)
    ctx.log.close()
    return summary


def merge_parts(out: Path, overwrite: bool = False) -> int:
    """Join the per-rank files of a distributed extraction into ``out``; returns images copied."""
    from geocli.models.delf.extract import merge_stores

    parts = sorted((Path(out).parent / (Path(out).name + PARTS_SUFFIX)).glob("rank*.h5"))
    if not parts:
        raise DataError(f"{out}{PARTS_SUFFIX}: no per-rank feature files; did every worker fail?")
    if overwrite and Path(out).exists():
        Path(out).unlink()
    from geocli.retrieval.store import FeatureStore

    with FeatureStore(parts[0], mode="r") as first:
        attrs = first.attrs
    return merge_stores(parts, Path(out), attrs=attrs)


def fit_pca(features: Path, out: Path, *, max_descriptors: int = 1_000_000, seed: int = 0,
            overwrite: bool = False) -> Dict[str, Any]:
    """Fit the descriptor PCA on a feature file of raw (1024-d, extracted without --pca) descriptors."""
    from geocli.models.delf.pca import fit_pca as fit, save_pca
    from geocli.retrieval.store import FeatureStore

    with FeatureStore(features, mode="r") as store:
        if store.attrs.get("pca", "none") != "none":
            raise DataError(f"--features {features}: holds PCA-projected descriptors; fit the PCA on features "
                            "extracted without --pca")
        blocks = [store.read(n, ["descriptors"])["descriptors"] for n in store.names()]
    matrix = np.concatenate([b for b in blocks if len(b)]) if any(len(b) for b in blocks) else np.zeros((0, 0))
    if len(matrix) > max_descriptors:
        rng = np.random.default_rng(seed)
        matrix = matrix[np.sort(rng.choice(len(matrix), max_descriptors, replace=False))]
    pca = fit(matrix)
    save_pca(pca, out, overwrite=overwrite)
    explained = float(pca.variances[:40].sum() / max(pca.variances.sum(), 1e-12))
    return {"out": str(out), "descriptors": int(len(matrix)), "images": len(blocks), "dim": int(matrix.shape[1]),
            "variance_in_40": round(explained, 4)}


def build_index(features: Path, out: Path, *, preset: Optional[str] = None, overrides: Iterable[str] = (),
                overwrite: bool = False) -> Dict[str, Any]:
    from geocli.models.delf import index as idx

    out = Path(out)
    if (out / idx.INDEX_INFO).exists() and not overwrite:
        raise UsageError(f"--out {out}: already holds an index; pass --overwrite to rebuild it")
    return idx.build_index(Path(features), out, idx.settings(_config(preset, overrides)))


def query(index: Path, *, features: Optional[Path] = None, images: Sequence[Path] = (), out: Path,
          checkpoint: Optional[Path] = None, preset: Optional[str] = None, overrides: Iterable[str] = (),
          device: Optional[str] = None, top: Optional[int] = None, verify: Optional[str] = None,
          progress: Optional[Callable[[int, int], None]] = None, engine: str = "mindspore") -> Dict[str, Any]:
    """Rank the index for query features (a feature file) or query images (extracted first, on ``engine``)."""
    from geocli.models.delf import index as idx

    if bool(features) == bool(images):
        raise UsageError("give query images or --features Q.h5 (one of the two)")
    overrides = list(overrides)
    retrieve_cfg = idx.settings(_config(preset, overrides))
    if verify is not None:
        retrieve_cfg["verify"] = idx.parse_verify(verify)
    top = int(top or retrieve_cfg["top"])
    local = idx.load_index(index)
    out = Path(out)
    if features:
        from geocli.models.delf.tasks import read_features
        from geocli.retrieval.store import FeatureStore

        with FeatureStore(features, mode="r") as store:
            names = store.names()
        queries = read_features(Path(features), names)
    else:
        from geocli.models.delf.tasks import extract_queries, make_extractor

        ctx, loaded = _loaded(checkpoint, preset, overrides, device, out, engine=engine)
        extractor, _, _ = make_extractor(loaded.cfg, loaded.network, ctx=ctx)
        names, queries = extract_queries(extractor, images)
        ctx.log.close()
    dims = {q["descriptors"].shape[1] for q in queries if len(q["descriptors"])}
    if dims and dims != {local.ann.dim}:
        raise DataError(f"query descriptors are {sorted(dims)}-d, the index holds {local.ann.dim}-d ones: "
                        "extract queries with the same --pca as the database")
    results = idx.query_index(local, queries, retrieve_cfg, progress=progress)
    files = idx.write_results(out, names, local.names, results, top,
                              extra={"model": "delf", "index": str(index),
                                     "verify": "all" if retrieve_cfg["verify"] is None else retrieve_cfg["verify"]})
    return {"rows": idx.ranked_rows(names, local.names, results, top), "csv": str(files["csv"]),
            "json": str(files["json"]), "queries": len(names)}


def _config(preset: Optional[str], overrides: Iterable[str]) -> Dict[str, Any]:
    """The DELF config (preset + ``--set`` overrides, validated) for steps that load no checkpoint."""
    from geocli import config

    return config.resolve("delf", preset or "default", None, list(overrides))


def image_inputs(images: List[Path]) -> List[Path]:
    for path in images:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such image, folder or list file")
    return images
