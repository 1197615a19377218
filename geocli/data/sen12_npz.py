"""``geoloc data npz-prep sen12``: SEN1-2 folders -> the port's ``train.npz`` / ``test.npz``, and their
memory-mapped reading.

The port ships no such step (its README names a ``src/prepare_data.py`` that no commit ever had; the
only description is "SIFT keypoints in every image, 64x64 patches"). What is built here, with every
choice the port leaves open a ``prep.*`` config key (docs/sdnet.md):

* optical RGB -> grayscale (``prep.gray``), SAR read as one channel;
* SIFT keypoints on the optical image (``prep.detect_on``), strongest first, at least
  ``prep.min_distance`` px apart, only where the whole 64x64 window fits, at most
  ``prep.max_per_image`` per image; co-registration gives the same (x, y) in the SAR twin;
* a split by scene folder (``prep.test_fraction`` of the scenes, drawn with ``--seed``), so no scene
  is in both files;
* ``arr_0`` (N, 64, 128) uint8 with optical in columns 0:64 and SAR in 64:128, ``arr_1`` int32 labels;
  ``train.npz`` holds matches only (the port trains every row as a match), ``test.npz`` one non-match
  per match (``prep.negatives``): the optical patch against a SAR patch of another image of the test
  split (the previous one in file order; the first image borrows from the last).

Rows go to a raw temporary file chunk by chunk and are then streamed into an UNCOMPRESSED zip member,
so memory stays bounded for the full 282k pairs and training reads rows of ``arr_0`` in place instead
of loading 4.8 GB (:class:`RowReader`; :func:`member_memmap` for sequential evaluation). Row order is deterministic (season, scene, patch, keypoint).
"""

from __future__ import annotations

import json
import time
import zipfile
from array import array
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from geocli.data.formats import sen12
from geocli.errors import ConfigError, DataError, UsageError
from geocli.fileio import atomic_write_text

PATCH = 64
HALF = PATCH // 2
FILES = ("train.npz", "test.npz")


# ---- memory-mapped reading ----------------------------------------------------------------------------

def member_memmap(path: Path, name: str) -> np.ndarray:
    """A read-only ``np.memmap`` of member ``name`` (e.g. ``arr_0``) of an uncompressed ``.npz``, through
    the shared reader :class:`geocli.data.readers.NpzMembers` (compressed members are refused there with
    the way out)."""
    from geocli.data.readers import NpzMembers

    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    return NpzMembers(path)[name]


class RowReader:
    """Reads rows of a C-ordered member with ``os.pread``: no mapping, so resident memory holds only the
    rows of the current batch however large the file is (a mapping keeps every page it touched
    resident, which over an epoch is the whole 4.8 GB file). Picklable: its state is the path."""

    def __init__(self, path: Path, name: str = "arr_0"):
        self.path, self.name = Path(path), name
        mapped = member_memmap(path, name)  # only to learn where the rows are; dropped right away
        if np.isfortran(mapped) and mapped.ndim > 1:
            raise DataError(f"{path}: member {name} is stored in Fortran order; re-save it C-ordered")
        self.offset, self.shape, self.dtype = int(mapped.offset), tuple(mapped.shape), mapped.dtype
        del mapped
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self._fd: Optional[int] = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_fd"} | {"_fd": None}

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, indices: Sequence[int]) -> np.ndarray:
        import os

        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(indices),) + self.shape[1:], self.dtype)
        view = out.reshape(len(indices), -1).view(np.uint8)
        for k, i in enumerate(indices):
            i = int(i)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {i} outside {self.path} ({self.shape[0]} rows)")
            data = os.pread(self._fd, self.row_bytes, self.offset + i * self.row_bytes)
            if len(data) != self.row_bytes:
                raise DataError(f"{self.path}: truncated at row {i}")
            view[k] = np.frombuffer(data, np.uint8)
        return out


@dataclass
class PairFile:
    """One port-layout npz, memory-mapped: ``images`` (N, H, 2W) and ``labels`` (N,)."""

    path: Path
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def open_pairs(path: Path) -> PairFile:
    """Map ``arr_0``/``arr_1`` and check the port's layout (2-D grayscale rows, 0/1 labels)."""
    images = member_memmap(path, "arr_0")
    labels = np.asarray(member_memmap(path, "arr_1")).reshape(-1)
    if images.ndim != 3 or images.shape[2] < 2:
        raise DataError(f"{path}: arr_0 has shape {images.shape}; expected (N, 64, 128) grayscale rows "
                        "(optical in columns 0:64, SAR in 64:128)")
    if len(images) != len(labels):
        raise DataError(f"{path}: arr_0 has {len(images)} rows but arr_1 {len(labels)} labels")
    if len(labels) and not np.isin(labels, (0, 1)).all():
        raise DataError(f"{path}: arr_1 must hold 0 (non-match) / 1 (match) labels")
    return PairFile(Path(path), images, labels)


def split_halves(rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, H, W) rows -> optical ``[:, :, :64]`` and SAR ``[:, :, 64:]`` halves, as the port slices them."""
    return rows[:, :, :PATCH], rows[:, :, PATCH:]


# ---- detection ----------------------------------------------------------------------------------------

def read_gray(path: Path, method: str = "bt601") -> Optional[np.ndarray]:
    """A PNG as a 2-D uint8 image, or None when it is empty or cannot be decoded."""
    try:
        if Path(path).stat().st_size == 0:
            return None
        data = np.fromfile(str(path), np.uint8)
    except OSError:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype != np.uint8:  # 16-bit exports: scale to 8 bits
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    bgr = image[:, :, :3]
    if method == "mean":
        return bgr.mean(axis=2).round().astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2GRAY)


def keypoints(gray: np.ndarray, cfg: Dict[str, Any]) -> np.ndarray:
    """(k, 2) integer (x, y) centres: SIFT keypoints, strongest first, window inside, spaced, capped."""
    sift = cv2.SIFT_create(contrastThreshold=float(cfg["sift_contrast"]), edgeThreshold=float(cfg["sift_edge"]))
    found = sift.detect(gray, None)
    h, w = gray.shape
    found = sorted(found, key=lambda k: -k.response)
    kept: List[Tuple[int, int]] = []
    min_d2 = float(cfg["min_distance"]) ** 2
    for kp in found:
        x, y = int(round(kp.pt[0])), int(round(kp.pt[1]))
        if x < HALF or y < HALF or x + HALF > w or y + HALF > h:
            continue
        if any((x - a) ** 2 + (y - b) ** 2 < min_d2 for a, b in kept):
            continue
        kept.append((x, y))
        if len(kept) >= int(cfg["max_per_image"]):
            break
    return np.asarray(kept, np.int64).reshape(-1, 2)


def crop(image: np.ndarray, centre: Sequence[int]) -> np.ndarray:
    x, y = int(centre[0]), int(centre[1])
    return image[y - HALF:y + HALF, x - HALF:x + HALF]


def _detect_on(opt: np.ndarray, sar: np.ndarray, cfg: Dict[str, Any]) -> np.ndarray:
    where = cfg["detect_on"]
    if where == "optical":
        return keypoints(opt, cfg)
    if where == "sar":
        return keypoints(sar, cfg)
    both = np.concatenate([keypoints(opt, cfg), keypoints(sar, cfg)])
    keep: List[np.ndarray] = []
    for p in both:  # merge: drop points closer than min_distance to a kept one, then cap
        if all(((p - q) ** 2).sum() >= float(cfg["min_distance"]) ** 2 for q in keep):
            keep.append(p)
    return np.asarray(keep[:int(cfg["max_per_image"])], np.int64).reshape(-1, 2)


# ---- splitting -----------------------------------------------------------------------------------------

def split_scenes(scenes: Sequence[Tuple[str, int]], test_fraction: float, seed: int) -> set:
    """The test scenes: ``round(test_fraction * n)`` of the distinct scenes (at least one each way when
    there are two or more), drawn by a seeded permutation of the sorted scene list."""
    unique = sorted(set(scenes))
    if not 0.0 <= test_fraction <= 1.0:
        raise ConfigError(f"prep.test_fraction {test_fraction}: must be within [0, 1]")
    n_test = int(round(test_fraction * len(unique)))
    if len(unique) >= 2 and 0.0 < test_fraction < 1.0:
        n_test = min(max(n_test, 1), len(unique) - 1)
    order = np.random.default_rng([int(seed), 12]).permutation(len(unique))
    return {unique[i] for i in order[:n_test]}


# ---- writing -------------------------------------------------------------------------------------------

class RowWriter:
    """Append (64, 128) uint8 rows and labels to a raw temporary file; :meth:`finish` streams them into
    an uncompressed ``.npz`` (arr_0, arr_1) and removes the temporary file. Memory: one chunk."""

    def __init__(self, target: Path, chunk_rows: int):
        self.target = Path(target)
        self.tmp = self.target.with_name(self.target.name + ".rows.tmp")
        self.fh = open(self.tmp, "wb")
        self.labels = array("i")
        self.chunk: List[np.ndarray] = []
        self.chunk_rows = max(int(chunk_rows), 1)

    def add(self, row: np.ndarray, label: int) -> None:
        self.chunk.append(row)
        self.labels.append(int(label))
        if len(self.chunk) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self.chunk:
            self.fh.write(np.ascontiguousarray(np.stack(self.chunk), np.uint8).tobytes())
            self.chunk = []

    def __len__(self) -> int:
        return len(self.labels)

    def finish(self) -> Path:
        self.flush()
        self.fh.close()
        n = len(self.labels)
        partial = self.target.with_name(self.target.name + ".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as member:
                _npy_header(member, np.uint8, (n, PATCH, 2 * PATCH))
                with open(self.tmp, "rb") as raw:
                    while True:
                        block = raw.read(1 << 24)
                        if not block:
                            break
                        member.write(block)
            with zf.open("arr_1.npy", "w", force_zip64=True) as member:
                labels = np.frombuffer(self.labels, np.int32) if n else np.zeros(0, np.int32)
                _npy_header(member, np.int32, (n,))
                member.write(labels.astype("<i4").tobytes())
        self.tmp.unlink()
        partial.replace(self.target)
        return self.target

    def abort(self) -> None:
        self.fh.close()
        for p in (self.tmp, self.target.with_name(self.target.name + ".partial")):
            if p.exists():
                p.unlink()


def _npy_header(fh, dtype, shape) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(fh, header)


# ---- the whole step ------------------------------------------------------------------------------------

@dataclass
class _Decoded:
    pair: sen12.Pair
    opt: Optional[np.ndarray]
    sar: Optional[np.ndarray]
    centres: np.ndarray
    problem: str = ""


def _decode(pair: sen12.Pair, cfg: Dict[str, Any]) -> _Decoded:
    opt = read_gray(pair.optical, cfg["gray"])
    sar = read_gray(pair.sar, "bt601")
    if opt is None or sar is None:
        bad = pair.optical if opt is None else pair.sar
        return _Decoded(pair, None, None, np.zeros((0, 2), np.int64), f"{bad}: empty or unreadable")
    if opt.shape != sar.shape:
        return _Decoded(pair, None, None, np.zeros((0, 2), np.int64),
                        f"{pair.sar}: size {sar.shape[::-1]} differs from its optical twin's {opt.shape[::-1]}")
    return _Decoded(pair, opt, sar, _detect_on(opt, sar, cfg))


def check_prep_config(cfg: Dict[str, Any]) -> None:
    if cfg["detect_on"] not in ("optical", "sar", "both"):
        raise ConfigError(f"prep.detect_on {cfg['detect_on']!r}: choose optical, sar or both")
    if cfg["gray"] not in ("bt601", "mean"):
        raise ConfigError(f"prep.gray {cfg['gray']!r}: choose bt601 (OpenCV's BGR2GRAY) or mean")
    if int(cfg["max_per_image"]) < 1:
        raise ConfigError("prep.max_per_image must be at least 1")
    if int(cfg["negatives"]) < 1:
        raise ConfigError("prep.negatives must be at least 1 (test.npz needs non-matches for FPR95)")


def prepare(root: Path, out: Path, cfg: Dict[str, Any], *, seed: int = 0, skip_bad: bool = False,
            overwrite: bool = False, progress: Optional[Callable[[int, int, float], None]] = None,
            workers: int = 2) -> Dict[str, Any]:
    """Build ``out/train.npz``, ``out/test.npz``, ``out/prep.json`` (summary) and, if any file was
    skipped, ``out/skipped.txt``. ``progress(done_pairs, total_pairs, pairs_per_second)``."""
    check_prep_config(cfg)
    out = Path(out)
    targets = [out / f for f in FILES]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise UsageError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")
    pairs, orphans = sen12.scan(root, skip_bad=skip_bad)
    test_scenes = split_scenes([p.scene for p in pairs], float(cfg["test_fraction"]), seed)
    out.mkdir(parents=True, exist_ok=True)
    writers = {"train": RowWriter(targets[0], cfg["chunk_rows"]), "test": RowWriter(targets[1], cfg["chunk_rows"])}
    counts: Dict[Tuple[str, str], Counter] = defaultdict(Counter)
    skipped: List[str] = [f"{p}: twin missing" for p in orphans]
    negatives = int(cfg["negatives"])
    first_test: Optional[Tuple[int, np.ndarray]] = None  # (image index, optical patches) awaiting negatives
    previous_sar: Optional[np.ndarray] = None
    previous_index = -1
    started, done = time.perf_counter(), 0
    try:
        with ThreadPoolExecutor(max_workers=max(int(workers), 1)) as pool:
            for start in range(0, len(pairs), 64):
                batch = pairs[start:start + 64]
                for index, item in enumerate(pool.map(lambda p: _decode(p, cfg), batch), start):
                    done += 1
                    pair = item.pair
                    split = "test" if pair.scene in test_scenes else "train"
                    c = counts[(pair.season, split)]
                    if item.problem:
                        skipped.append(item.problem)
                        c["skipped_images"] += 1
                        continue
                    c["images"] += 1
                    if not len(item.centres):
                        c["images_without_keypoints"] += 1
                        continue
                    opts = np.stack([crop(item.opt, k) for k in item.centres])
                    sars = np.stack([crop(item.sar, k) for k in item.centres])
                    for o, s in zip(opts, sars):
                        writers[split].add(np.hstack([o, s]), 1)
                    c["matches"] += len(opts)
                    if split == "test":
                        if previous_sar is None:
                            first_test = (index, opts)
                        else:
                            c["non_matches"] += _negatives(writers["test"], opts, previous_sar, seed, index, negatives)
                        previous_sar, previous_index = sars, index
                if progress is not None:
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    progress(done, len(pairs), done / elapsed)
        if first_test is not None:
            index, opts = first_test
            first_pair = pairs[index]
            c = counts[(first_pair.season, "test")]
            same = previous_index == index  # one test image only: other keypoints of it are "another place"
            if not same or len(opts) > 1:
                c["non_matches"] += _negatives(writers["test"], opts, previous_sar, seed, index, negatives, same)
        for split, writer in writers.items():
            labels = np.frombuffer(writer.labels, np.int32) if len(writer) else np.zeros(0, np.int32)
            if split == "test" and len(writer) and (labels == 1).all():
                raise DataError(f"--root {root}: the test split holds patches of a single image only, so no "
                                "non-matching pair can be drawn from another place; add scenes or raise "
                                "prep.test_fraction")
            if not len(writer):
                raise DataError(f"--root {root}: no {split} patches (scenes: {len(set(p.scene for p in pairs))}, "
                                f"test scenes {len(test_scenes)}); add data or change prep.test_fraction / "
                                "prep.sift_contrast")
        for writer in writers.values():
            writer.finish()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    seconds = time.perf_counter() - started
    summary = {
        "root": str(root), "out": str(out), "seed": seed, "prep": dict(cfg), "pairs_scanned": len(pairs),
        "seconds": round(seconds, 2), "pairs_per_second": round(len(pairs) / max(seconds, 1e-9), 1),
        "train_rows": len(writers["train"]), "test_rows": len(writers["test"]),
        "scenes": {"train": len({p.scene for p in pairs} - test_scenes), "test": len(test_scenes)},
        "test_scenes": sorted(f"{s}/s1_{n}" for s, n in test_scenes),
        "per_season": {f"{season}/{split}": dict(c) for (season, split), c in sorted(counts.items())},
        "skipped": len(skipped),
    }
    if skipped:
        atomic_write_text(out / "skipped.txt", "\n".join(skipped) + "\n")
    atomic_write_text(out / "prep.json", json.dumps(summary, indent=2) + "\n")
    summary["skipped_files"] = skipped
    return summary


def _negatives(writer: RowWriter, opts: np.ndarray, other_sar: np.ndarray, seed: int, index: int, k: int,
               same_image: bool = False) -> int:
    """``k`` non-matches per optical patch against SAR patches of another image (seeded by the image
    index); with ``same_image`` (a test split of one image) against its other keypoints."""
    rng = np.random.default_rng([int(seed), int(index), 7])
    for i, o in enumerate(opts):
        for j in rng.integers(0, len(other_sar) - int(same_image), size=k):
            if same_image and j >= i:
                j += 1
            writer.add(np.hstack([o, other_sar[j]]), 0)
    return len(opts) * k
