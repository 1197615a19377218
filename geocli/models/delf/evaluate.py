"""``geoloc eval delf --dataset NAME [--protocol original|port]``: extract (incrementally), retrieve, score.

Features are cached beside the evaluation folder, in ``<parent of --out>/delf-features-<dataset>-<ckpt>``
(or ``eval.features_dir``), keyed by the checkpoint's content hash and the PCA, so a second evaluation
of the same checkpoint (another protocol, other retrieval settings) re-uses every feature.

Without ``extract.pca`` the 1024 -> 40 PCA is fitted on ``eval.pca_images`` database images (evenly
spaced) and stored in the cache (the port ships a PCA learned on landmark images by TF DELF instead;
``--set extract.pca=DIR`` uses that one).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np

from geocli.fileio import atomic_write_text


def _settings(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    from geocli.models.delf.tasks import EVAL_DEFAULTS

    section = dict(cfg.get("eval", {}))
    return {"dataset": section.get("dataset", "oxford5k"), "protocol": section.get("protocol", "original"),
            **{k: section.get(k, v) for k, v in EVAL_DEFAULTS.items()}}


def _fit_sample_pca(cfg, runnable, evalset, cache: Path, identity: Dict[str, str], n_images: int, log) -> Path:
    """Fit the PCA on raw (1024-d) features of ``n_images`` evenly spaced database images, once.
    ``runnable``: what :func:`~geocli.models.delf.tasks.runnable_for` returned."""
    from geocli.models.delf.pca import MATRIX_FILE, fit_pca, save_pca
    from geocli.models.delf.tasks import ensure_features, extractor_on
    from geocli.retrieval.store import FeatureStore

    folder = cache / "pca"
    if (folder / MATRIX_FILE).is_file():
        return folder
    picks = np.unique(np.linspace(0, len(evalset.db_names) - 1, min(n_images, len(evalset.db_names))).astype(int))
    names = [evalset.db_names[i] for i in picks]
    extractor, _, _ = extractor_on({**cfg, "extract": {**cfg.get("extract", {}), "pca": None}}, runnable)
    sample = cache / "pca-sample.h5"
    ensure_features(extractor, [evalset.db_paths[i] for i in picks], names, sample,
                    {**identity, "pca": "none"}, log, "PCA sample")
    with FeatureStore(sample, mode="r") as store:
        descriptors = [store.read(n, ["descriptors"])["descriptors"] for n in names]
    matrix = np.concatenate(descriptors) if descriptors else np.zeros((0, 0))
    pca = fit_pca(matrix)
    save_pca(pca, folder, overwrite=True)
    log.info(f"PCA fitted on {len(matrix)} descriptors of {len(names)} database images -> {folder}")
    return folder


def _per_query_csv(path: Path, header: List[str], rows: List[List[Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def run_evaluation(cfg: Mapping[str, Any], data, network, out_dir: Path, ctx) -> Dict[str, Any]:
    from geocli.metrics.retrieval import (format_port_metrics, port_metrics, revisited_gnd, revisited_map)
    from geocli.models.delf import index as idx
    from geocli.models.delf import protocol as proto
    from geocli.models.delf.extract import settings as extract_settings
    from geocli.models.delf.tasks import (ensure_features, extractor_on, file_digest, read_features,
                                          runnable_for, step_logger)
    from geocli.retrieval.local import LocalIndex
    from geocli.runtime.runlog import default_logger

    log = default_logger(getattr(ctx, "log", None))
    ev = _settings(cfg)
    dataset, protocol = ev["dataset"], ev["protocol"]
    proto.check_protocol(dataset, protocol)
    evalset = proto.load_eval_set(dataset, data)
    checkpoint = getattr(ctx, "checkpoint", None)
    digest = file_digest(Path(checkpoint) if checkpoint else None)
    cache = Path(ev["features_dir"]) if ev["features_dir"] else out_dir.parent / f"delf-features-{dataset}-{digest[:10]}"
    cache.mkdir(parents=True, exist_ok=True)
    identity = {"model": "delf", "checkpoint": digest}
    log.info(f"delf eval: {dataset} ({len(evalset.db_names)} images, {len(evalset.queries)} queries), "
             f"protocol {protocol}, features in {cache}")

    # one folded copy or onnxruntime session (and its compiled canvases) for the PCA sample and the rest
    runnable = runnable_for(cfg, network, ctx)
    pca_dir = extract_settings(cfg)["pca"] or _fit_sample_pca(cfg, runnable, evalset, cache, identity,
                                                               int(ev["pca_images"]), log)
    extractor, _, pca_id = extractor_on(cfg, runnable, Path(pca_dir))
    identity = {**identity, "pca": pca_id}
    ensure_features(extractor, evalset.db_paths, evalset.db_names, cache / "database.h5", identity, log, "database")

    rcfg = idx.settings(cfg)
    if protocol == "port":  # the port verifies every candidate
        rcfg["verify"] = None
    db_features = read_features(cache / "database.h5", evalset.db_names)
    local = LocalIndex.build([f["descriptors"] for f in db_features], [f["locations"] for f in db_features],
                             names=evalset.db_names, **idx.index_options(rcfg))
    if protocol == "port":
        position = evalset.index_of()
        queries = [db_features[position[q.image]] for q in evalset.queries]
    else:
        qstore = cache / "queries-cropped.h5"
        ensure_features(extractor, [evalset.query_paths[q.image] for q in evalset.queries],
                        [q.name for q in evalset.queries], qstore, identity, log, "queries (cropped)",
                        crops=[q.box for q in evalset.queries])
        queries = read_features(qstore, [q.name for q in evalset.queries])
    results = idx.query_index(local, queries, rcfg, progress=step_logger(log, "queries"))
    rankings = [r.ranking() for r in results]
    qnames = [q.name for q in evalset.queries]
    idx.write_results(out_dir, qnames, evalset.db_names, results, int(rcfg["top"]),
                      extra={"model": "delf", "dataset": dataset, "protocol": protocol})

    metrics: Dict[str, Any] = {"dataset": dataset, "protocol": protocol, "queries": len(evalset.queries),
                               "database_images": len(evalset.db_names),
                               "verify": "all" if rcfg["verify"] is None else int(rcfg["verify"])}
    top1 = [evalset.db_names[r[0]] if len(r) else "" for r in rankings]
    if protocol == "port":
        gts = proto.port_ground_truth(evalset)
        ranks = np.stack(rankings)
        results_by = {name: port_metrics(ranks, gts[name]) for name in ("easy", "medium", "hard")}
        atomic_write_text(out_dir / "mAP.txt", format_port_metrics(results_by))
        for name, r in results_by.items():
            metrics[f"mAP_{name}"] = round(100 * float(r["map"]), 2)
            metrics[f"mP@10_{name}"] = round(100 * float(r["mp"][0]), 2)
            metrics[f"mR@10_{name}"] = round(100 * float(r["mr"][0]), 2)
        rows = [[q.name, *[f"{100 * results_by[s]['ap'][i]:.2f}" for s in ("easy", "medium", "hard")], top1[i]]
                for i, q in enumerate(evalset.queries)]
        _per_query_csv(out_dir / "per_query.csv", ["query", "ap_easy", "ap_medium", "ap_hard", "top1"], rows)
    elif dataset in proto.REVISITED:
        ranks = np.stack(rankings).T
        rows = [[q.name] for q in evalset.queries]
        for setting in ("easy", "medium", "hard"):
            gnd = revisited_gnd(proto.revisited_ground_truth(evalset), setting)
            m, aps, mp, _ = revisited_map(ranks, gnd, kappas=(1, 5, 10))
            metrics[f"mAP_{setting}"] = round(100 * m, 2)
            for k, value in zip((1, 5, 10), mp):
                metrics[f"mP@{k}_{setting}"] = round(100 * float(value), 2)
            for row, ap in zip(rows, aps):
                row.append(f"{100 * ap:.2f}")
        for row, t in zip(rows, top1):
            row.append(t)
        _per_query_csv(out_dir / "per_query.csv", ["query", "ap_easy", "ap_medium", "ap_hard", "top1"], rows)
    else:
        mean_ap, aps = proto.original_scores(evalset, rankings)
        metrics["mAP"] = round(mean_ap, 2)
        rows = [[q.name, f"{100 * ap:.2f}", len(set(q.good) | set(q.ok)), top1[i], int(results[i].scores()[0])]
                for i, (q, ap) in enumerate(zip(evalset.queries, aps))]
        _per_query_csv(out_dir / "per_query.csv", ["query", "ap", "positives", "top1", "top1_inliers"], rows)
    metrics["features_dir"] = str(cache)
    return metrics
