"""DELF's training data: GLDv2 MindRecord rows -> random-resized crops, streamed by row index.

The port's pipeline (``src/data_augmentation_parallel.py``): decode -> float32 -> normalise
``(x - 128) / 128`` -> ``RandomResizedCrop(321, scale (0.08, 1), ratio (3/4, 4/3), bilinear,
max_attempts=100)`` -> CHW; no flip. The same here, with the crop taken on the decoded image and
normalisation applied after the float resize (identical up to float rounding: both are linear).

Nothing is held in memory but the row index: :class:`TrainBatches` is the picklable ``load(indices,
seed)`` of the input pipeline (docs/input-pipeline.md) and reads each row with
:class:`geocli.data.readers.MindRecordRows` (one ``.db`` query and two ``pread`` s), so GLDv2-clean's
1.6 M images stream from disk in worker processes. Every random choice comes from the per-batch seed.

The port shuffles with a 100-image buffer over its stored order; here each epoch is a full seeded
permutation (the trainer's ``IndexedSource``), which is what the buffer approximates.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from geocli.data import readers
from geocli.data.formats import gldv2 as fmt
from geocli.data.gldv2_mindrecord import RELABELING, split_shards
from geocli.errors import DataError, UsageError

MEAN = 128.0
STD = 128.0


# ---- locating the converted data --------------------------------------------------------------------

def split_files(data: Optional[Path], split: str) -> List[Path]:
    """The MindRecord files of ``split`` ('train' or 'validation') under ``data``: geoloc's shards
    (``<split>.mindrecord000`` .. with manifests), or the port's 128-shard set, in ``data`` or in
    ``data/mindrecord`` (a GLDv2 folder converted with the default --out)."""
    if data is None:
        raise UsageError("--data is required: the folder written by `geoloc data convert-mindrecord gldv2`")
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"--data {data}: folder not found")
    for folder in (data, data / "mindrecord"):
        ours = split_shards(folder, split)
        if ours:
            return ours
        for first in (folder / f"{split}.mindrecord000", folder / f"{split}.mindrecord"):
            if first.is_file():
                return readers.shard_paths(first)
    if split == "validation":
        return []
    raise DataError(f"--data {data}: no {split}.mindrecord000 in it or in {data / 'mindrecord'}; convert GLDv2 "
                    f"first: geoloc data convert-mindrecord gldv2 --data DIR")


def num_classes(data: Path, rows: Sequence["readers.MindRecordRows"]) -> int:
    """Classes = rows of ``relabeling.csv`` beside the shards (the port's relabelling), else max label + 1."""
    for folder in (Path(data), Path(data) / "mindrecord"):
        if (folder / RELABELING).is_file():
            return len(fmt.read_relabeling(folder / RELABELING))
    return int(max(int(r.column("label").max()) for r in rows if len(r)) + 1)


# ---- image operations ---------------------------------------------------------------------------------

def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (0.75, 4 / 3),
                            attempts: int = 100) -> Tuple[int, int, int, int]:
    """(top, left, h, w) of MindSpore/torchvision ``RandomResizedCrop``: area fraction uniform in
    ``scale``, log-aspect uniform in ``ratio``, up to ``attempts`` tries (the port: 100), else a centre
    crop with the aspect clamped to ``ratio``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_float(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize in float32 (no rounding to uint8 between decode and normalisation)."""
    import cv2

    return cv2.resize(image.astype(np.float32), (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def center_view(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side resized to ``size``, centre square crop (validation images), float32 HWC."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(int(round(h * scale)), size), max(int(round(w * scale)), size)
    resized = resize_float(image, nw, nh)
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[top:top + size, left:left + size]


def normalise(images: Sequence[np.ndarray]) -> np.ndarray:
    """float HWC RGB 0-255 -> NCHW float32 ``(x - 128) / 128``."""
    batch = (np.stack(images).astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


# ---- batches ----------------------------------------------------------------------------------------

class TrainBatches:
    """``load(indices, seed) -> (images NCHW float32, labels int32)``: picklable; holds only the index."""

    def __init__(self, files: Sequence[Path], size: int, scale: Sequence[float], ratio: Sequence[float]):
        self.rows = readers.MindRecordRows(list(files), columns=["data", "label"])
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)

    def __len__(self) -> int:
        return len(self.rows)

    def __call__(self, indices, seed=0) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
        images, labels = [], []
        for index in indices:
            row = self.rows[int(index)]
            image = readers.decode_image(row["data"], self.rows.where(int(index)))
            top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], rng, self.scale, self.ratio)
            images.append(resize_float(image[top:top + h, left:left + w], self.size, self.size))
            labels.append(int(row["label"]))
        return normalise(images), np.asarray(labels, np.int32)


def eval_batches(rows: "readers.MindRecordRows", size: int, batch_size: int,
                 limit: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Validation batches in stored order (centre views), the first ``limit`` rows (0: all)."""
    n = len(rows) if limit <= 0 else min(limit, len(rows))
    for start in range(0, n, batch_size):
        images, labels = [], []
        for index in range(start, min(start + batch_size, n)):
            row = rows[index]
            images.append(center_view(readers.decode_image(row["data"], rows.where(index)), size))
            labels.append(int(row["label"]))
        yield normalise(images), np.asarray(labels, np.int32)


def describe(rows: "readers.MindRecordRows") -> Dict[str, int]:
    labels = rows.column("label") if len(rows) else np.zeros(0, np.int64)
    return {"images": int(len(rows)), "labels": int(len(np.unique(labels)))}
