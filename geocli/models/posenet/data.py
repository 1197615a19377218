"""PoseNet's data: the scene's MindRecord files -> resized frames in memory -> cropped, normalised batches.

Preprocessing follows the port (``src/dataset.py``): decode, resize, random 224 crop for training or
centre crop for testing, ImageNet mean/std normalisation, HWC -> CHW; there is no other augmentation.

The port resizes with ``Resize([455, 256])`` (train) and ``Resize([455, 224])`` (test). MindSpore
sizes are (height, width), so a landscape 1920x1080 Cambridge frame becomes a PORTRAIT 256x455 image,
squeezed 3.2x horizontally, and the 224 crop keeps a band of its middle. By default this module does
what the paper describes instead: the shorter side is resized to 256 (aspect kept: 455x256) and a 224
square is cropped from it. ``data.resize: fixed`` with ``data.train_hw`` / ``data.test_hw``
reproduces the port exactly (the ``port`` preset).

Frames are decoded once, resized, and kept in memory as uint8 (about 350 KB per 455x256 frame: 430 MB
for KingsCollege's 1220 training frames); decoding runs on all cores. Batches are built from them
deterministically: the crop offsets come from the seed the trainer passes for each (epoch, step, rank).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from geocli.data import mindrecord
from geocli.data.cambridge_mindrecord import default_out, record_path
from geocli.errors import ConfigError, DataError, UsageError



@dataclass
class Frames:
    """One split in memory: image names, (n, 7) float32 poses, RGB uint8 images (resized or cropped)."""

    names: List[str]
    poses: np.ndarray
    images: List[np.ndarray]

    def __len__(self) -> int:
        return len(self.names)


# ---- locating and reading ---------------------------------------------------------------------------

def find_record(data: Optional[Path], split: str) -> Path:
    """``<data>/mindrecord/<split>.mindrecord`` (a converted scene) or ``<data>/<split>.mindrecord``."""
    if data is None:
        raise UsageError("--data is required: a Cambridge scene folder converted with "
                         "`geoloc data convert-mindrecord cambridge --scene DIR`")
    data = Path(data)
    for candidate in (record_path(default_out(data), split), record_path(data, split)):
        if candidate.is_file():
            return candidate
    if not data.is_dir():
        raise DataError(f"--data {data}: folder not found")
    raise DataError(f"--data {data}: no {split}.mindrecord in it or in {default_out(data)}; convert the scene "
                    f"first: geoloc data convert-mindrecord cambridge --scene {data}")


def read_poses(record: Path) -> Tuple[List[str], np.ndarray]:
    """Names and poses of a split without decoding any image."""
    names, poses = [], []
    for i, row in enumerate(mindrecord.read(record)):
        names.append(_name(row, i))
        poses.append(_pose(row, record, i))
    return names, np.stack(poses) if poses else np.zeros((0, 7), np.float32)


def _name(row: Dict[str, Any], index: int) -> str:
    name = row.get("file_name")
    if isinstance(name, bytes):
        name = name.decode("utf-8")
    return name or f"frame{index:05d}"  # port-written files have no file_name


def _pose(row: Dict[str, Any], record: Path, index: int) -> np.ndarray:
    pose = np.asarray(row.get("image_pose"), np.float32).reshape(-1)
    if pose.shape != (7,):
        raise DataError(f"{record}: row {index} has a pose of {pose.size} values, expected 7 (X Y Z W P Q R)")
    return pose


def decode(data: bytes, where: str) -> np.ndarray:
    from geocli.data.readers import decode_image

    return decode_image(data, where)


# ---- geometry ---------------------------------------------------------------------------------------

def resize(image: np.ndarray, cfg: Dict[str, Any], split: str) -> np.ndarray:
    """Resize one RGB frame for ``split`` ('train' or 'test') as ``cfg['data']`` says."""
    d = cfg["data"]
    h, w = image.shape[:2]
    if d["resize"] == "fixed":
        out_h, out_w = d["train_hw"] if split == "train" else d["test_hw"]
    elif d["resize"] == "shorter":
        side = d["train_size"] if split == "train" else d["test_size"]
        scale = side / min(h, w)
        out_h, out_w = max(round(h * scale), side), max(round(w * scale), side)
    else:
        raise ConfigError(f"data.resize {d['resize']!r}: choose shorter (paper) or fixed (the port's quirk)")
    if min(out_h, out_w) < d["crop"]:
        raise ConfigError(f"data.crop {d['crop']} is larger than the resized {split} image ({out_h}x{out_w})")
    return cv2.resize(image, (int(out_w), int(out_h)), interpolation=cv2.INTER_LINEAR)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[top:top + size, left:left + size]


def normalise(images: Sequence[np.ndarray], cfg: Dict[str, Any]) -> np.ndarray:
    """uint8 HWC images -> float32 NCHW, ImageNet mean/std (on 0-255 values, as the port)."""
    mean = np.asarray(cfg["data"]["mean"], np.float32) * 255.0
    std = np.asarray(cfg["data"]["std"], np.float32) * 255.0
    batch = (np.stack(images).astype(np.float32) - mean) / std
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def test_view(image: np.ndarray, cfg: Dict[str, Any]) -> np.ndarray:
    """What the network sees of a test frame: resized for testing, centre-cropped."""
    return center_crop(resize(image, cfg, "test"), cfg["data"]["crop"])


# ---- loading splits ---------------------------------------------------------------------------------

def load_split(data: Optional[Path], split: str, cfg: Dict[str, Any]) -> Frames:
    """Decode one split into memory: train frames resized, test frames resized and centre-cropped."""
    record = find_record(data, split)
    prepare = (lambda img: resize(img, cfg, "train")) if split == "train" else (lambda img: test_view(img, cfg))
    names, poses, images = [], [], []
    workers = max(os.cpu_count() or 1, 1)

    def work(item):
        index, row = item
        return prepare(decode(row["image"], f"{record} row {index} ({_name(row, index)})"))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunk: List[Tuple[int, Dict[str, Any]]] = []
        for index, row in enumerate(mindrecord.read(record)):
            names.append(_name(row, index))
            poses.append(_pose(row, record, index))
            chunk.append((index, row))
            if len(chunk) == 16 * workers:  # bounded: never all encoded images in memory at once
                images += list(pool.map(work, chunk))
                chunk = []
        images += list(pool.map(work, chunk))
    if not names:
        raise DataError(f"{record}: holds no frames")
    return Frames(names, np.stack(poses), images)


def train_loader(frames: Frames, cfg: Dict[str, Any]) -> Callable[..., Tuple[np.ndarray, np.ndarray]]:
    """``load(indices, seed)`` for :class:`geocli.runtime.plan.IndexedSource`: random crops + poses."""
    crop = cfg["data"]["crop"]

    def load(indices, seed=0):
        rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
        images = [random_crop(frames.images[i], crop, rng) for i in indices]
        return normalise(images, cfg), frames.poses[np.asarray(indices)]

    return load


class StreamLoader:
    """``load(indices, seed)`` that reads, decodes and resizes each frame of a batch from the MindRecord
    file when the batch is built (``data.stream: true``): memory holds the poses and a row index, never
    the scene, and the work runs in the input pipeline's worker processes (``data.workers``). Batches are
    identical to :func:`train_loader`'s over the same file (same resize, same crop draws)."""

    def __init__(self, record: Path, poses: np.ndarray, cfg: Dict[str, Any]):
        from geocli.data.readers import MindRecordRows

        self.rows = MindRecordRows(record, columns=["image"])
        self.poses = np.asarray(poses, np.float32)
        keys = ("resize", "train_size", "test_size", "train_hw", "test_hw", "crop", "mean", "std")
        self.cfg = {"data": {k: cfg["data"][k] for k in keys}}

    def __call__(self, indices, seed=0):
        rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
        crop = self.cfg["data"]["crop"]
        images = [random_crop(resize(decode(self.rows[i]["image"], self.rows.where(i)), self.cfg, "train"), crop, rng)
                  for i in indices]
        return normalise(images, self.cfg), self.poses[np.asarray(indices)]


def test_batches(frames: Frames, cfg: Dict[str, Any], batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(frames), batch_size):
        yield normalise(frames.images[start:start + batch_size], cfg)


# ---- image files (retrieve) -------------------------------------------------------------------------

def read_image_file(path: Path) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    return decode(data, str(path))
