"""Google Landmarks v2 (train set): its CSVs, its image layout, relabelling and the train/validation split.

On disk, as ``geoloc data download gldv2`` leaves it (the dataset's own tar layout)::

    DIR/train_clean.csv     landmark_id,images          images: space-separated image ids
    DIR/train.csv           id,url,landmark_id          (all 4.1 M images; used only without the clean CSV)
    DIR/train/<a>/<b>/<c>/<id>.jpg                      a, b, c: the first three characters of the id

The rules below are the port's (research/cv/delf src/build_image_dataset.py), with two deliberate
differences, both documented in docs/delf.md:

* an image listed in the CSV but absent from disk is skipped and reported (the port, like TF DELF,
  crashes with ``KeyError: 'image_path'``, tensorflow/models #8924 #9125 #10474);
* a landmark with a single image keeps it for training (the port's ``max(1, int(0.2 n))`` sends it to
  validation, leaving that class with no training image at all).

Relabelling: landmark ids that have at least one image present, sorted numerically, become 0..N-1
(with every image present this is the port's relabelling: 81,313 classes for GLDv2-clean). Without a
clean CSV the port keeps the raw ids of ``train.csv`` (up to 203,093); here they are relabelled too,
so the classifier has no empty outputs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from geocli.errors import DataError

CLEAN_CSV = "train_clean.csv"
TRAIN_CSV = "train.csv"
IMAGES_DIR = "train"
SPLITS = ("validation", "train")  # the order the port writes them in


@dataclass
class Listing:
    """Images of the CSV in the port's order: ``file_ids[i]`` belongs to landmark ``landmarks[i]``."""

    file_ids: List[str]
    landmarks: List[int]
    source: Path

    def __len__(self) -> int:
        return len(self.file_ids)


def image_path(images: Path, file_id: str) -> Path:
    """``images/<a>/<b>/<c>/<id>.jpg``: GLDv2's layout (the first three characters of the id)."""
    return Path(images) / file_id[0] / file_id[1] / file_id[2] / f"{file_id}.jpg"


def find_image(images: Path, file_id: str) -> Optional[Path]:
    """The image's path in GLDv2's nested layout, or directly in ``images`` (a flat folder); None if absent."""
    for candidate in (image_path(images, file_id), Path(images) / f"{file_id}.jpg"):
        if candidate.is_file():
            return candidate
    return None


def _reader(path: Path, required: Sequence[str]):
    if not Path(path).is_file():
        raise DataError(f"{path}: CSV file not found")
    handle = open(path, newline="", encoding="utf-8")
    reader = csv.DictReader(handle)
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        handle.close()
        raise DataError(f"{path}:1: header lacks column {missing[0]!r} (expected {','.join(required)})")
    return handle, reader


def _landmark(value: str, path: Path, line: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}:{line}: landmark_id {value!r} is not an integer") from None


def read_clean_csv(path: Path) -> Listing:
    """``train_clean.csv``: one row per landmark, its image ids space-separated. As in the port, an id
    listed under two landmarks belongs to the last one (at the position it was first listed)."""
    handle, reader = _reader(path, ("landmark_id", "images"))
    owner: Dict[str, int] = {}
    with handle:
        for line, row in enumerate(reader, start=2):
            landmark = _landmark(row["landmark_id"], path, line)
            for file_id in (row["images"] or "").split():
                owner[file_id] = landmark
    return Listing(list(owner), list(owner.values()), Path(path))


def read_train_csv(path: Path) -> Listing:
    """``train.csv``: ``id,url,landmark_id`` per image (the full, noisy set)."""
    handle, reader = _reader(path, ("id", "landmark_id"))
    owner: Dict[str, int] = {}
    with handle:
        for line, row in enumerate(reader, start=2):
            owner[row["id"]] = _landmark(row["landmark_id"], path, line)
    return Listing(list(owner), list(owner.values()), Path(path))


def relabel(landmarks: Sequence[int]) -> Dict[int, int]:
    """Landmark id -> label 0..N-1, in ascending numeric order of the ids."""
    return {old: new for new, old in enumerate(sorted(set(int(x) for x in landmarks)))}


def split(labels: Sequence[int], val_split: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(validation, train) positions into ``labels``, by the port's rule: for each label in order of first
    appearance, shuffle its images and send ``max(1, int(val_split * n))`` to validation; then shuffle
    both splits. The random state and the order of its calls are the port's, so the same images give
    the same split. Differences: a label with one image keeps it in training, and ``val_split == 0``
    puts everything in training (the port's ``--generate_train_validation_splits false``)."""
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split {val_split}: must be at least 0 and below 1")
    positions = np.arange(len(labels))
    if val_split == 0.0:
        return positions[:0], positions
    by_label: Dict[int, List[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(index)
    rs = np.random.RandomState(np.random.MT19937(np.random.SeedSequence(seed)))
    val_parts, train_parts = [], []
    for indexes in by_label.values():
        subset = np.asarray(indexes)
        order = np.arange(len(subset))
        rs.shuffle(order)
        subset = subset[order]
        cutoff = max(1, int(val_split * len(subset))) if len(subset) > 1 else 0
        val_parts.append(subset[:cutoff])
        train_parts.append(subset[cutoff:])
    out = []
    for parts in (val_parts, train_parts):
        joined = np.concatenate(parts) if parts else positions[:0]
        order = np.arange(len(joined))
        rs.shuffle(order)
        out.append(joined[order])
    return out[0], out[1]


def read_relabeling(path: Path) -> Dict[int, int]:
    """``relabeling.csv`` (``new_label,old_label``) -> {new: old}."""
    handle, reader = _reader(path, ("new_label", "old_label"))
    with handle:
        return {_landmark(r["new_label"], path, i): _landmark(r["old_label"], path, i)
                for i, r in enumerate(reader, start=2)}
