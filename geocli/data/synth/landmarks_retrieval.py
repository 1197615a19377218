"""A synthetic landmark-retrieval benchmark in the Oxford Buildings layout (DELF demo and tests).

The buildings are those of :mod:`geocli.data.synth.gldv2` for the same spec (same seeds), photographed
again from new viewpoints, plus one-off distractor buildings: the instance-retrieval setting of a
model trained on those landmarks. Written exactly as Oxford5k is, so ``geoloc eval delf --dataset
oxford5k --data DIR`` evaluates on it with every protocol::

    jpg/landmark<k>_<nnnnnn>.jpg           database images (query images included, as in Oxford5k)
    jpg/distractor_<nnnnnn>.jpg
    gt/landmark<k>_<q>_query.txt           "oxc1_<image> x1 y1 x2 y2" (the whole image)
    gt/landmark<k>_<q>_good.txt            every other view of the same building
    gt/landmark<k>_<q>_ok.txt, _junk.txt   empty
    synth_retrieval.json                   the settings, so a re-run skips a finished set
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict

import cv2
import numpy as np

from geocli.data.synth.gldv2 import GldSynthSpec, build_landmark, view
from geocli.errors import DataError
from geocli.fileio import atomic_write_text

MARKER = "synth_retrieval.json"


@dataclass(frozen=True)
class RetrievalSpec:
    landmarks: int = 6          # buildings 0..landmarks-1 of the GLDv2 synth set of the same seed
    views: int = 8              # database views per building
    queries: int = 2            # query views per building (taken from its database views)
    distractors: int = 12       # one-off buildings never trained on
    size: int = 96              # longer image side
    seed: int = 0               # the GLDv2 synth seed (same buildings)
    view_seed: int = 7          # new viewpoints, never used for training


def synthesize_retrieval(out: Path, spec: RetrievalSpec = RetrievalSpec(), overwrite: bool = False) -> Dict:
    out = Path(out)
    marker = out / MARKER
    if marker.is_file() and not overwrite:
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved.get("spec") == asdict(spec):
            return {**saved["summary"], "path": out, "skipped": True}
        raise DataError(f"{out}: holds a retrieval set made with other settings; pass overwrite or choose "
                        "another folder")
    if not marker.is_file() and out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: not empty and not a synthetic retrieval set; choose another folder")
    for sub in ("jpg", "gt"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    gld = GldSynthSpec(size=spec.size, seed=spec.seed)
    rng = np.random.default_rng([spec.seed, spec.view_seed])
    counter = 0

    def write(name: str, image: np.ndarray) -> None:
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise DataError(f"{name}: could not encode the image")
        (out / "jpg" / f"{name}.jpg").write_bytes(encoded.tobytes())

    n_queries = 0
    for k in range(spec.landmarks):
        # the same building as landmark k of geocli.data.synth.gldv2 with this seed
        building = build_landmark(np.random.default_rng(spec.seed * 1_000_003 + k), k)
        names = []
        for _ in range(spec.views):
            counter += 1
            name = f"landmark{k}_{counter:06d}"
            image = view(building, np.random.default_rng([spec.seed, spec.view_seed, counter]), gld)
            write(name, image)
            names.append((name, image.shape))
        for q in range(min(spec.queries, spec.views)):
            name, shape = names[int(rng.integers(0, len(names)))] if q else names[0]
            query = f"landmark{k}_{q + 1}"
            atomic_write_text(out / "gt" / f"{query}_query.txt", f"oxc1_{name} 0 0 {shape[1]} {shape[0]}\n")
            atomic_write_text(out / "gt" / f"{query}_good.txt", "".join(f"{n}\n" for n, _ in names if n != name))
            atomic_write_text(out / "gt" / f"{query}_ok.txt", "")
            atomic_write_text(out / "gt" / f"{query}_junk.txt", "")
            n_queries += 1
    for j in range(spec.distractors):
        counter += 1
        building = build_landmark(np.random.default_rng([spec.seed, spec.view_seed, 10_000 + j]), 10_000 + j)
        write(f"distractor_{counter:06d}", view(building, np.random.default_rng([spec.seed, spec.view_seed, counter]),
                                               gld))
    summary = {"images": counter, "queries": n_queries, "landmarks": spec.landmarks, "distractors": spec.distractors}
    atomic_write_text(marker, json.dumps({"spec": asdict(spec), "summary": summary}, indent=2) + "\n")
    return {**summary, "path": out, "skipped": False}
