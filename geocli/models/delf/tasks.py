"""DELF's inference tasks (extraction, match, retrieve, eval, demo) as a mixin of the DELF backend.

Kept apart from ``backend.py`` (network and training) so the two halves of the backend read on their own.
The work itself lives in small modules: :mod:`.extract` (pyramid -> features), :mod:`.pca`,
:mod:`.verify` (pairwise matching), :mod:`.index` (index, query, result files), :mod:`.protocol`
(datasets and the three evaluation protocols). This file wires them to the backend interface.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from geocli.errors import UsageError

#: ``eval.*`` settings read here besides C1's dataset / protocol (defaults when the config lacks them).
EVAL_DEFAULTS = {"features_dir": None, "pca_images": 200}


def file_digest(path: Optional[Path]) -> str:
    """A short content hash of a checkpoint: the identity of features extracted with it."""
    if path is None:
        return "untrained"
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def step_logger(log, label: str, every_seconds: float = 10.0):
    """``progress(done, total, rate)`` that logs a line every ``every_seconds`` and at the end."""
    state = {"last": 0.0}

    def progress(done: int, total: int, rate: float = 0.0) -> None:
        now = time.perf_counter()
        if done == total or now - state["last"] >= every_seconds:
            state["last"] = now
            speed = f", {rate:.2f} images/s" if rate else ""
            log.info(f"{label}: {done}/{total}{speed}")

    return progress


#: Image side of the ONNX export behind ``--engine onnxruntime``: its batch and image axes are freed
#: (:mod:`geocli.runtime.onnx_axes`), so the size only has to be cheap to export and check.
ENGINE_EXPORT_SIZE = 64


def extraction_network(cfg: Mapping[str, Any], network, engine: str = "mindspore", *,
                       checkpoint: Optional[Path] = None, cache_dir: Optional[Path] = None,
                       threads: Optional[int] = None):
    """What the extractor runs for a MindSpore ``network``: on ``mindspore`` a BatchNorm-folded copy
    (:func:`geocli.runtime.engine.inference_network`); on ``onnxruntime`` the network's ONNX export with
    its batch and image size left free, one file for every canvas of the pyramid (checked at two sizes
    against the network, cached next to ``checkpoint``)."""
    from geocli import registry
    from geocli.runtime import engine as engines

    backend = registry.load_backend("delf")
    if engines.check(engine) == "mindspore":
        return engines.inference_network(backend, cfg, network)
    export_cfg = {**cfg, "export": {"batch": 1, "size": ENGINE_EXPORT_SIZE}}
    return engines.runner(engine, backend, export_cfg, network, checkpoint=checkpoint, cache_dir=cache_dir,
                          threads=threads, free_axes=(0, 2, 3))


def make_extractor(cfg: Mapping[str, Any], network, pca_dir: Optional[Path] = None, ctx=None):
    """An :class:`~.extract.Extractor` for the config's ``extract`` settings (``pca_dir`` overrides).
    A MindSpore network runs on ``ctx.engine`` (:func:`extraction_network`; MindSpore without a ``ctx``);
    anything else (a test double) as it is."""
    return extractor_on(cfg, runnable_for(cfg, network, ctx), pca_dir)


def runnable_for(cfg: Mapping[str, Any], network, ctx=None):
    """:func:`extraction_network` on ``ctx.engine`` for a MindSpore network; anything else as it is."""
    from mindspore import nn

    if not isinstance(network, nn.Cell):
        return network
    return extraction_network(cfg, network, getattr(ctx, "engine", "mindspore"),
                              checkpoint=getattr(ctx, "checkpoint", None))


def extractor_on(cfg: Mapping[str, Any], runnable, pca_dir: Optional[Path] = None):
    """:func:`make_extractor` on what :func:`runnable_for` returned, so that several extractors (with
    and without a PCA, as ``geoloc eval delf`` needs) share one folded copy or one onnxruntime session, and
    the folded copy's compiled canvases."""
    from geocli.models.delf import extract as ex
    from geocli.models.delf.pca import load_pca

    settings = ex.settings(cfg)
    pca_dir = pca_dir if pca_dir is not None else settings["pca"]
    pca = load_pca(pca_dir, settings["pca_dim"], settings["whiten"]) if pca_dir else None
    return ex.Extractor(runnable, settings, pca), settings, (str(Path(pca_dir).resolve()) if pca_dir else "none")


def extract_queries(extractor, sources: Sequence[Path]) -> Tuple[List[str], List[Dict[str, np.ndarray]]]:
    """Features of query images given as files, folders or list files; a file is named by its path,
    an image found in a folder or list by its name there."""
    from geocli.models.delf import extract as ex

    names, queries = [], []
    for source in sources:
        paths, found = ex.list_images(Path(source))
        for path, name in zip(paths, found):
            names.append(str(path) if Path(source).is_file() and path == Path(source) else name)
            queries.append(extractor.extract(ex.read_image(path)).arrays())
    return names, queries


def read_features(store_path: Path, names: Sequence[str]) -> List[Dict[str, np.ndarray]]:
    from geocli.retrieval.store import FeatureStore

    with FeatureStore(store_path, mode="r") as store:
        return [store.read(n, ["locations", "descriptors"]) for n in names]


class DelfTasks:
    """evaluate / match / retrieve / demo of :class:`geocli.models.delf.backend.DelfBackend`."""

    # ---- match -----------------------------------------------------------------------------------
    def match(self, cfg, inputs: Sequence[Path], network, out_dir: Path, ctx, **options) -> Dict[str, Any]:
        """Two images: putative matches (KD-tree, 0.8), affine RANSAC inliers, ``match.png``."""
        from geocli.models.delf import extract as ex
        from geocli.models.delf.verify import draw_matches, match_features

        if len(inputs) != 2:
            raise UsageError(f"geoloc match delf takes exactly two images, got {len(inputs)}")
        extractor, settings, _ = make_extractor(cfg, network, ctx=ctx)
        images = [ex.read_image(Path(p)) for p in inputs]
        feats = [extractor.extract(image) for image in images]
        result = match_features(feats[0].locations, feats[0].descriptors, feats[1].locations,
                                feats[1].descriptors,
                                residual_threshold=float(options.get("residual", 20.0)))
        picture = draw_matches(images[0], images[1], feats[0].locations, feats[1].locations, result,
                               Path(out_dir) / "match.png")
        row = {"image1": str(inputs[0]), "image2": str(inputs[1]), "features1": len(feats[0].scores),
               "features2": len(feats[1].scores), "putative": result.n_putative, "inliers": result.n_inliers}
        if min(len(f.scores) for f in feats) == 0:
            row["note"] = (f"no feature above extract.score_threshold={settings['score_threshold']:g} "
                           f"(scores seen up to {max(f.max_score for f in feats):.3g})")
        return {"rows": [row], "picture": str(picture)}

    # ---- retrieve (library form of `geoloc retrieve delf query IMG...`) -------------------------
    def retrieve(self, cfg, inputs: Sequence[Path], network, out_dir: Path, ctx, index: Optional[Path] = None,
                 top_k: Optional[int] = None, **options) -> Dict[str, Any]:
        """Extract the query images, search ``index``, verify, and write results.csv / results.json."""
        from geocli.models.delf import index as idx

        if index is None:
            raise UsageError("DELF retrieval needs an index: geoloc retrieve delf query IMG... --index DIR")
        settings = idx.settings({**idx.settings(cfg), **{k: v for k, v in options.items() if k in idx.DEFAULTS}})
        top = int(top_k or settings["top"])
        local = idx.load_index(index)
        extractor, _, _ = make_extractor(cfg, network, ctx=ctx)
        names, queries = extract_queries(extractor, inputs)
        results = idx.query_index(local, queries, settings)
        files = idx.write_results(Path(out_dir), names, local.names, results, top,
                                  extra={"model": "delf", "index": str(index)})
        return {"rows": idx.ranked_rows(names, local.names, results, min(top, 10)),
                "csv": str(files["csv"]), "json": str(files["json"])}

    # ---- eval ------------------------------------------------------------------------------------
    def evaluate(self, cfg, data, network, out_dir: Path, ctx) -> Dict[str, Any]:
        from geocli.models.delf.evaluate import run_evaluation

        return run_evaluation(cfg, data, network, Path(out_dir), ctx)

    # ---- demo ------------------------------------------------------------------------------------
    def demo(self, data_dir: Path, out_dir: Path, ctx, **kwargs) -> Dict[str, Any]:
        from geocli.models.delf.demo import run_demo

        return run_demo(self, Path(data_dir), Path(out_dir), ctx, **kwargs)


def ensure_features(extractor, paths: Sequence[Path], names: Sequence[str], store: Path,
                    identity: Dict[str, str], log, label: str, crops: Optional[Sequence] = None):
    """Extract what ``store`` lacks (incremental), log progress and the no-feature warning."""
    from geocli.models.delf.extract import extract_to_store

    report = extract_to_store(extractor, paths, names, store, attrs=identity,
                              progress=step_logger(log, f"{label} extraction"), crops=crops)
    if report.skipped:
        log.info(f"{label}: {report.skipped} of {len(names)} images already in {store} (re-used)")
    warning = report.warning(extractor.cfg["score_threshold"])
    if warning:
        log.info(f"warning: {label}: {warning}")
    return report
