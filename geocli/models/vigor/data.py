"""VIGOR's input pipeline: split index -> picklable batch loader reading images by path.

Preprocessing (``cfg['data']``): the reference reads BGR with OpenCV, resizes with INTER_AREA (panorama
320x640, tile 320x320) and subtracts [103.939, 116.779, 123.6] (no scaling, no augmentation,
dataloader.py:150-186); the port reads RGB, resizes (tile 640x640) and normalises with the ImageNet
mean/std on 0-1 values, written here in 0-255 units. Batches are NCHW float32.

A training batch of panoramas ``i`` is ``(panoramas, positive tiles)`` in stage 1 and
``(panoramas, positive tiles, semi-positive tiles, IoU ratio, offset / 320)`` when the IoU and offset
losses are on; the semi-positive is one of the three, drawn from the batch's seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Sequence, Tuple

import cv2
import numpy as np

from geocli.data.formats import vigor as fmt
from geocli.errors import ConfigError, DataError

def prep_options(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The preprocessing settings (stored in checkpoints and given to the loader)."""
    d = cfg["data"]
    if d["color"] not in ("bgr", "rgb"):
        raise ConfigError(f"data.color {d['color']!r}: choose bgr (reference) or rgb (port)")
    return {"color": d["color"], "mean": [float(v) for v in d["mean"]], "std": [float(v) for v in d["std"]],
            "pano_hw": [int(v) for v in d["pano_hw"]], "sat_hw": [int(v) for v in d["sat_hw"]]}


def read_image(path: Path, hw: Sequence[int], prep: Dict[str, Any]) -> np.ndarray:
    """One image file -> (3, H, W) float32, preprocessed as ``prep`` says."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: missing or not a readable image; check the dataset with "
                        "`geoloc data verify vigor DIR`")
    if prep["color"] == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = cv2.resize(image.astype(np.float32), (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_AREA)
    image = (image - np.asarray(prep["mean"], np.float32)) / np.asarray(prep["std"], np.float32)
    return np.ascontiguousarray(image.transpose(2, 0, 1))


class TrainLoader:
    """``load(indices, seed)`` for IndexedSource; holds only paths and label arrays (picklable)."""

    def __init__(self, split: fmt.VigorSplit, prep: Dict[str, Any], with_semi: bool):
        self.root = Path(split.root)
        self.pano_paths, self.tile_paths = list(split.pano_paths), list(split.tile_paths)
        self.positive, self.semi, self.deltas = split.positive, split.semi, split.deltas
        self.prep, self.with_semi = prep, with_semi

    def __call__(self, indices, seed=0) -> Tuple[np.ndarray, ...]:
        rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
        idx = np.asarray(indices, np.int64)
        p, s = self.prep["pano_hw"], self.prep["sat_hw"]
        grd = np.stack([read_image(self.root / self.pano_paths[i], p, self.prep) for i in idx])
        sat = np.stack([read_image(self.root / self.tile_paths[self.positive[i]], s, self.prep) for i in idx])
        if not self.with_semi:
            return grd, sat
        pick = rng.integers(0, 3, size=len(idx))
        semi = np.stack([read_image(self.root / self.tile_paths[self.semi[i, k]], s, self.prep)
                         for i, k in zip(idx, pick)])
        iou_pos = fmt.iou_from_delta(self.deltas[idx, 0])
        iou_semi = fmt.iou_from_delta(self.deltas[idx, 1 + pick])
        ratio = (iou_semi / np.maximum(iou_pos, 1e-6)).astype(np.float32)
        offset = (self.deltas[idx, 0] / 320.0).astype(np.float32)
        return grd, sat, semi, ratio, offset


def image_batches(root: Path, paths: Sequence[str], hw, prep, batch: int) -> Iterator[np.ndarray]:
    """Fixed-size batches (the last one padded by repeating its last image, so a compiled graph sees
    one shape); callers drop the padding rows."""
    for start in range(0, len(paths), batch):
        chunk = list(paths[start:start + batch])
        images = [read_image(Path(root) / p, hw, prep) for p in chunk]
        images += [images[-1]] * (batch - len(images))
        yield np.stack(images)
