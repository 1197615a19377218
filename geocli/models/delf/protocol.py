"""The evaluation datasets and protocols of ``geoloc eval delf --dataset NAME [--protocol port]``.

Three ways to score the same retrieval system, because published DELF figures use different ones:

- ``original`` (default for oxford5k / paris6k): the Oxford Buildings protocol (``compute_ap.cpp``):
  positives good + ok, junk ignored, each query cropped to its box, the query image itself not counted
  (it is treated as junk in its own ranking); mAP over the 55 queries and a per-query table.
- revisited (roxford5k / rparis6k, always): Radenovic et al. 2018, easy / medium / hard from the
  ``gnd_*.pkl`` files, queries cropped to their box, mAP and mP@1,5,10 (:mod:`geocli.metrics.retrieval`).
- ``port``: the MindSpore port exactly (``src/dataset.py``, ``eval.py``): its easy / medium / hard are
  built from the ORIGINAL lists (easy = query + good, hard = ok, medium = both; an easy list holding
  only the query is replaced by hard), queries uncropped and inside the index (they match themselves
  at rank 1), every candidate verified, mP@k / mR@k at k = 10..90 written to ``mAP.txt``.

Datasets are found where ``geoloc data download NAME`` puts them (``data/NAME``: ``jpg/`` and ``gt/``
or ``gnd_NAME.pkl``), or under ``--data DIR`` with the same files anywhere below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from geocli.errors import DataError, UsageError

ORIGINAL = ("oxford5k", "paris6k")
REVISITED = ("roxford5k", "rparis6k")
DATASETS = ORIGINAL + REVISITED
PROTOCOLS = ("original", "port")


@dataclass
class EvalQuery:
    name: str                                   # e.g. all_souls_1
    image: str                                  # database image name (stem) the query comes from
    box: Optional[Tuple[float, float, float, float]]  # x1, y1, x2, y2 in image pixels
    good: List[str] = field(default_factory=list)     # original lists (names) ...
    ok: List[str] = field(default_factory=list)
    junk: List[str] = field(default_factory=list)
    revisited: Optional[Dict[str, np.ndarray]] = None  # ... or revisited easy/hard/junk (db indices)


@dataclass
class EvalSet:
    name: str
    db_names: List[str]          # image stems, sorted
    db_paths: List[Path]
    queries: List[EvalQuery]
    query_paths: Dict[str, Path]  # query image stem -> file

    def index_of(self) -> Dict[str, int]:
        return {name: i for i, name in enumerate(self.db_names)}


def default_data_dir(dataset: str) -> Path:
    """Where ``geoloc data download NAME`` leaves a dataset by default."""
    return Path("data") / dataset


def _images_by_stem(root: Path, exclude: Optional[Path] = None) -> Dict[str, Path]:
    found: Dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or not path.is_file():
            continue
        if exclude is not None and exclude in path.parents:
            continue
        if path.stem in found:
            raise DataError(f"{path}: image name {path.stem!r} appears twice (also {found[path.stem]})")
        found[path.stem] = path
    return found


def load_eval_set(dataset: str, data_dir: Optional[Path]) -> EvalSet:
    """Images and ground truth of ``dataset`` under ``data_dir`` (default ``data/<dataset>``)."""
    from geocli.metrics.oxford import load_oxford_gt

    if dataset not in DATASETS:
        raise UsageError(f"--dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    root = Path(data_dir) if data_dir is not None else default_data_dir(dataset)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; run `geoloc data download {dataset}` "
                        "or pass --data DIR")
    if dataset in ORIGINAL:
        query_files = sorted(root.rglob("*_query.txt"))
        if not query_files:
            raise DataError(f"{root}: no '*_query.txt' ground-truth files below this folder; "
                            f"run `geoloc data download {dataset}`")
        gt_dir = query_files[0].parent
        images = _images_by_stem(root, exclude=gt_dir if gt_dir != root else None)
        gt = load_oxford_gt(gt_dir)
        queries = [EvalQuery(q.name, q.image, q.box, q.good, q.ok, q.junk) for q in gt]
        names = sorted(images)
        query_paths = {}
    else:
        from geocli.data.verify import load_pickle

        pickles = sorted(root.rglob(f"gnd_{dataset}.pkl"))
        if not pickles:
            raise DataError(f"{root}: gnd_{dataset}.pkl not found; run `geoloc data download {dataset}`")
        gnd = load_pickle(pickles[0])
        try:
            names, qnames, entries = list(gnd["imlist"]), list(gnd["qimlist"]), list(gnd["gnd"])
        except (KeyError, TypeError):
            raise DataError(f"{pickles[0]}: not a revisited ground truth (imlist, qimlist, gnd)") from None
        images = _images_by_stem(root)
        queries = []
        for qname, entry in zip(qnames, entries):
            box = tuple(float(v) for v in entry["bbx"]) if entry.get("bbx") is not None else None
            lists = {k: np.asarray(entry.get(k, ()), dtype=np.int64).ravel() for k in ("easy", "hard", "junk")}
            queries.append(EvalQuery(qname, qname, box, revisited=lists))
        query_paths = {}
    missing = [n for n in names if n not in images]
    if missing:
        raise DataError(f"{root}: {len(missing)} database images are missing, e.g. {missing[0]}.jpg; "
                        f"run `geoloc data verify {dataset} {root}`")
    for q in queries:
        if q.image not in images:
            raise DataError(f"{root}: query image {q.image}.jpg of {q.name} is missing")
        query_paths[q.image] = images[q.image]
    return EvalSet(dataset, names, [images[n] for n in names], queries, query_paths)


def check_protocol(dataset: str, protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise UsageError(f"--protocol {protocol!r}: choose original or port")
    if protocol == "port" and dataset not in ORIGINAL:
        raise UsageError(f"--protocol port builds easy/medium/hard from the original Oxford/Paris lists: "
                         f"use --dataset oxford5k or paris6k (not {dataset})")


def crop_box(image: np.ndarray, box: Optional[Tuple[float, float, float, float]]) -> np.ndarray:
    """The query region ``x1, y1, x2, y2`` (clipped to the image; the whole image without a box)."""
    if box is None:
        return image
    h, w = image.shape[:2]
    x1, y1 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return image
    return image[y1:y2, x1:x2]


# ---------------------------------------------------------------------------------------------- ground truth

def port_ground_truth(evalset: EvalSet) -> Dict[str, List[dict]]:
    """The port's easy / medium / hard ``{ok, junk}`` index lists from the original lists."""
    index = evalset.index_of()

    def ids(names: Sequence[str]) -> np.ndarray:
        return np.asarray([index[n] for n in names if n in index], dtype=np.int64)

    out: Dict[str, List[dict]] = {"easy": [], "medium": [], "hard": []}
    for q in evalset.queries:
        easy = np.concatenate([ids([q.image]), ids(q.good)])
        hard, junk = ids(q.ok), ids(q.junk)
        out["medium"].append({"ok": np.concatenate([easy, hard]), "junk": junk})
        if easy.size == 1:
            out["easy"].append({"ok": hard, "junk": np.concatenate([junk, easy])})
        else:
            out["easy"].append({"ok": easy, "junk": np.concatenate([junk, hard])})
        out["hard"].append({"ok": hard, "junk": np.concatenate([junk, easy])})
    return out


def revisited_ground_truth(evalset: EvalSet) -> List[dict]:
    return [q.revisited for q in evalset.queries]


def original_scores(evalset: EvalSet, rankings: Sequence[np.ndarray]) -> Tuple[float, List[float]]:
    """mAP (percent) and per-query AP under the original protocol; the query's own image is junk."""
    from geocli.metrics.retrieval import oxford_ap

    aps = []
    for q, ranking in zip(evalset.queries, rankings):
        names = [evalset.db_names[i] for i in ranking]
        aps.append(oxford_ap(names, q.good, q.ok, list(q.junk) + [q.image]))
    valid = [a for a in aps if not np.isnan(a)]
    return (100.0 * float(np.mean(valid)) if valid else float("nan")), aps
