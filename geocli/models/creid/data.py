"""Images in, batches out: the training augmentation and the test transform of Centroids-ReID.

Training, in the reference's order (``datasets/transforms/build.py:18-26``): resize to (H, W) bilinear,
horizontal flip (p 0.5), zero pad (10 px at 256x128), random crop back to (H, W), scale to [0, 1],
ImageNet mean/std, random erasing (p 0.5, area 0.02-0.4 of the image, aspect 0.3-1/0.3, up to 100
tries, the box filled with the raw values (0.485, 0.456, 0.406) IN NORMALISED SPACE, as
``random_erasing.py:23-53`` does). Testing: resize, scale, normalise.

Resizing uses OpenCV's bilinear filter; the reference resizes PIL images (also bilinear, with slightly
different sampling at borders), so pixel values differ by a few grey levels, not the geometry.

:class:`TrainLoader` is what the shared input pipeline calls: a picklable object holding only paths and
labels, reading and augmenting one batch per call from disk, every random choice drawn from the
per-batch seed (seed, epoch, step, rank). It imports no MindSpore, so it can run in worker processes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterator, Sequence, Tuple

import cv2
import numpy as np

from geocli.errors import DataError

MEAN = np.asarray([0.485, 0.456, 0.406], np.float32)
STD = np.asarray([0.229, 0.224, 0.225], np.float32)


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: cannot be read as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) with ImageNet mean/std on [0, 1] values."""
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def random_erasing(x: np.ndarray, rng: np.random.Generator, p: float = 0.5, area=(0.02, 0.4),
                   ratio: float = 0.3, fill=tuple(MEAN.tolist())) -> np.ndarray:
    """Erase one random box of a normalised CHW image in place (the reference's RandomErasing)."""
    if rng.random() >= p:
        return x
    _, h, w = x.shape
    for _ in range(100):
        target = rng.uniform(area[0], area[1]) * h * w
        aspect = rng.uniform(ratio, 1.0 / ratio)
        eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if ew < w and eh < h:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            for c in range(3):
                x[c, top:top + eh, left:left + ew] = fill[c]
            return x
    return x


def augment(image: np.ndarray, aug: Dict, rng: np.random.Generator) -> np.ndarray:
    """Resize, flip, pad, crop (uint8 HWC); normalising and erasing follow in :meth:`TrainLoader.__call__`."""
    h, w = aug["size"]
    image = resize(image, (h, w))
    if rng.random() < aug["flip"]:
        image = image[:, ::-1]
    pad = int(aug["pad"])
    if pad > 0:
        image = cv2.copyMakeBorder(np.ascontiguousarray(image), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        top, left = int(rng.integers(0, 2 * pad + 1)), int(rng.integers(0, 2 * pad + 1))
        image = image[top:top + h, left:left + w]
    return image


class TrainLoader:
    """``load(indices, seed) -> (images float32 NCHW, labels int32)`` for the shared input pipeline."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], data_cfg: Dict):
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, np.int32)
        self.aug = {"size": tuple(data_cfg["size"]), "flip": float(data_cfg["flip"]), "pad": int(data_cfg["pad"]),
                    "erase": float(data_cfg["erase"]), "erase_area": tuple(data_cfg["erase_area"]),
                    "erase_ratio": float(data_cfg["erase_ratio"])}

    def __call__(self, indices, seed=0) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
        images = np.stack([augment(read_rgb(Path(self.paths[i])), self.aug, rng) for i in indices])
        batch = normalise(images)
        a = self.aug
        for x in batch:
            random_erasing(x, rng, a["erase"], a["erase_area"], a["erase_ratio"])
        return batch, self.labels[np.asarray(indices)]


def test_batches(paths: Sequence[Path], size: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Resized, normalised batches of ``paths`` in order (the reference's test transform)."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        yield normalise(np.stack([resize(read_rgb(Path(p)), size) for p in chunk]))


