"""Person re-identification datasets on disk: Market-1501, DukeMTMC-reID, MSMT17 and a plain folder layout.

Market-1501 and DukeMTMC-reID share one layout (``bounding_box_train/``, ``query/``,
``bounding_box_test/``) and one naming scheme, ``0002_c1s1_000451_03.jpg`` / ``0001_c2_f0046182.jpg``:
person id and camera come from ``([-\\d]+)_c(\\d)``. The Centroids-ReID reference
(``datasets/market1501.py:71-89``) is followed with three deliberate differences, each a fix:

* the pattern is matched on the file's BASE name (the reference searches the full path, so a folder
  named like ``run_c1`` could be parsed instead of the file);
* file lists are sorted (the reference keeps ``glob`` order, which leaks into its results through the
  centroid camera bug, see :mod:`geocli.models.creid.centroids`);
* training ids are relabelled 0..N-1 in ascending pid order (the reference uses set order, which is not
  sorted for Duke's large ids; any bijection trains the same network).

As in the reference: Market's pid -1 ("junk") images are dropped from every split, pid 0
("distractors") stay in the gallery, cameras become 0-based, query and gallery keep their raw pids.

MSMT17 (V1 or V2) is read from its list files (``list_train.txt``, ``list_val.txt``, ``list_query.txt``,
``list_gallery.txt``: ``<pid folder>/<name>.jpg <pid>``); the camera is the third ``_`` field of the name
(``0000_000_01_0303morning_0015_0.jpg`` is camera 1 -> 0). Training uses train + val, as torchreid.

The folder layout is for a user's own data: ``<root>/{train,query,gallery}/<identity>/<image>``. An
identity folder named by an integer keeps that pid; other names are numbered in sorted order over all
splits. The camera is read from ``_c<digits>`` in the file name when present; an image without one
gets camera -1 (query) or -2 (gallery), so it never counts as "same camera" as anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from geocli.errors import DataError

PATTERN = re.compile(r"([-\d]+)_c(\d)")
FOLDER_CAMERA = re.compile(r"_c(\d+)")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MARKET_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
FORMATS = ("market1501", "dukemtmc", "msmt17", "folder")
#: Folder names a Market/Duke root is commonly unpacked into (tried below the given folder).
KNOWN_ROOTS = ("market1501", "Market-1501-v15.09.15", "Market-1501", "DukeMTMC-reID", "dukemtmc-reid",
               "MSMT17_V1", "MSMT17_V2", "MSMT17")


@dataclass
class Split:
    """One split: sorted image paths, raw pids, 0-based cameras (all the same length)."""

    paths: List[Path]
    pids: np.ndarray
    cams: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_ids(self) -> int:
        return int(np.unique(self.pids).size)


@dataclass
class ReidDataset:
    """Train (with ``labels``: pids relabelled 0..N-1 in sorted order), query and gallery splits."""

    root: Path
    format: str
    train: Split
    query: Split
    gallery: Split
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    label_pids: List[int] = field(default_factory=list)  # label -> raw pid

    @property
    def n_classes(self) -> int:
        return len(self.label_pids)

    def summary(self) -> Dict[str, int]:
        return {"format": self.format, "train_images": len(self.train), "train_ids": self.train.n_ids,
                "query_images": len(self.query), "query_ids": self.query.n_ids,
                "gallery_images": len(self.gallery), "gallery_ids": self.gallery.n_ids}


def parse_name(name: str) -> Tuple[int, int]:
    """(pid, 0-based camera) of a Market/Duke file name; the pattern is applied to the base name only."""
    base = Path(name).name
    match = PATTERN.search(base)
    if match is None:
        raise DataError(f"{name}: file name does not follow the Market/Duke pattern <pid>_c<camera>..."
                        " (e.g. 0002_c1s1_000451_03.jpg)")
    pid, cam = int(match.group(1)), int(match.group(2))
    if cam < 1:
        raise DataError(f"{name}: camera {cam} (cameras are numbered from 1 in file names)")
    return pid, cam - 1


def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_market_dir(folder: Path, drop_junk: bool = True) -> Split:
    """One Market/Duke folder: every image, sorted by name, pid -1 dropped (``drop_junk``)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected Market/Duke layout: "
                        f"{', '.join(MARKET_DIRS.values())})")
    paths, pids, cams = [], [], []
    for path in _images(folder):
        pid, cam = parse_name(path.name)
        if pid == -1 and drop_junk:
            continue
        if pid < -1:
            raise DataError(f"{path}: pid {pid} is negative")
        paths.append(path)
        pids.append(pid)
        cams.append(cam)
    return Split(paths, np.asarray(pids, np.int64), np.asarray(cams, np.int64))


def relabel(pids: np.ndarray) -> Tuple[np.ndarray, List[int]]:
    """Labels 0..N-1 by ascending pid, and the pid of each label."""
    order = sorted(int(p) for p in np.unique(pids))
    index = {pid: i for i, pid in enumerate(order)}
    return np.asarray([index[int(p)] for p in pids], np.int32), order


def find_root(data: Path) -> Tuple[Path, str]:
    """The dataset folder under ``data`` and its format (market1501, dukemtmc, msmt17 or folder)."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"--data {data}: folder not found")
    for candidate in [data] + [data / name for name in KNOWN_ROOTS]:
        if (candidate / MARKET_DIRS["query"]).is_dir() and (candidate / MARKET_DIRS["gallery"]).is_dir():
            fmt = "dukemtmc" if "duke" in candidate.resolve().name.lower() else "market1501"
            return candidate, fmt
        if (candidate / "list_query.txt").is_file():
            return candidate, "msmt17"
        if (candidate / "query").is_dir() and (candidate / "gallery").is_dir():
            return candidate, "folder"
    raise DataError(f"--data {data}: not a re-identification dataset; expected Market/Duke folders "
                    f"({', '.join(MARKET_DIRS.values())}), MSMT17 list files (list_query.txt, ...) or "
                    "train/, query/, gallery/ with one folder per identity")


def load(data: Path, need_train: bool = True) -> ReidDataset:
    """Read a dataset in any supported layout (see the module docstring)."""
    root, fmt = find_root(data)
    if fmt in ("market1501", "dukemtmc"):
        train_dir = root / MARKET_DIRS["train"]
        train = read_market_dir(train_dir) if (need_train or train_dir.is_dir()) else _empty()
        query, gallery = read_market_dir(root / MARKET_DIRS["query"]), read_market_dir(root / MARKET_DIRS["gallery"])
    elif fmt == "msmt17":
        train, query, gallery = _read_msmt(root, need_train)
    else:
        train, query, gallery = _read_folder(root, need_train)
    labels, label_pids = relabel(train.pids) if len(train) else (np.zeros(0, np.int32), [])
    return ReidDataset(root, fmt, train, query, gallery, labels, label_pids)


def _empty() -> Split:
    return Split([], np.zeros(0, np.int64), np.zeros(0, np.int64))


# ---- MSMT17 -------------------------------------------------------------------------------------------

def _msmt_list(root: Path, name: str, image_dir: Path) -> Split:
    list_file = root / name
    if not list_file.is_file():
        raise DataError(f"{list_file}: MSMT17 list file not found")
    paths, pids, cams = [], [], []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise DataError(f"{list_file}:{number}: expected '<image path> <pid>', got {line!r}")
        rel, pid = tokens
        fields = Path(rel).name.split("_")
        if len(fields) < 3 or not fields[2].isdigit() or not pid.lstrip("-").isdigit():
            raise DataError(f"{list_file}:{number}: {rel!r} is not an MSMT17 name <pid>_<idx>_<camera>_...")
        paths.append(image_dir / rel)
        pids.append(int(pid))
        cams.append(int(fields[2]) - 1)
    order = sorted(range(len(paths)), key=lambda i: str(paths[i]))
    return Split([paths[i] for i in order], np.asarray(pids, np.int64)[order], np.asarray(cams, np.int64)[order])


def _read_msmt(root: Path, need_train: bool) -> Tuple[Split, Split, Split]:
    train_dir = next((root / d for d in ("train", "mask_train_v2") if (root / d).is_dir()), root / "train")
    test_dir = next((root / d for d in ("test", "mask_test_v2") if (root / d).is_dir()), root / "test")
    query, gallery = _msmt_list(root, "list_query.txt", test_dir), _msmt_list(root, "list_gallery.txt", test_dir)
    if not need_train and not (root / "list_train.txt").is_file():
        return _empty(), query, gallery
    parts = [_msmt_list(root, "list_train.txt", train_dir)]
    if (root / "list_val.txt").is_file():
        parts.append(_msmt_list(root, "list_val.txt", train_dir))
    train = Split([p for s in parts for p in s.paths], np.concatenate([s.pids for s in parts]),
                  np.concatenate([s.cams for s in parts]))
    return train, query, gallery


# ---- folder layout ------------------------------------------------------------------------------------

def _read_folder(root: Path, need_train: bool) -> Tuple[Split, Split, Split]:
    splits = {"train": root / "train", "query": root / "query", "gallery": root / "gallery"}
    names = sorted({d.name for folder in splits.values() if folder.is_dir() for d in folder.iterdir() if d.is_dir()})
    numeric = all(n.isdigit() for n in names)
    pid_of = {n: (int(n) if numeric else i) for i, n in enumerate(names)}
    out = []
    for split, folder in splits.items():
        if not folder.is_dir():
            if split == "train" and not need_train:
                out.append(_empty())
                continue
            raise DataError(f"{folder}: folder not found (folder layout: train/, query/, gallery/ with one "
                            "sub-folder per identity)")
        unknown_cam = -1 if split == "query" else -2
        paths, pids, cams = [], [], []
        for identity in sorted(d for d in folder.iterdir() if d.is_dir()):
            for path in _images(identity):
                match = FOLDER_CAMERA.search(path.stem)
                paths.append(path)
                pids.append(pid_of[identity.name])
                cams.append(int(match.group(1)) - 1 if match else unknown_cam)
        if not paths:
            raise DataError(f"{folder}: no images in its identity folders")
        out.append(Split(paths, np.asarray(pids, np.int64), np.asarray(cams, np.int64)))
    return out[0], out[1], out[2]


def count_images(data: Path) -> Dict[str, int]:
    """Images per split after parsing (what ``geoloc data verify`` compares with the published counts)."""
    ds = load(data, need_train=False)
    return {"train": len(ds.train), "query": len(ds.query), "gallery": len(ds.gallery)}


def check_cameras(split: Split, n_cameras: int, where: str) -> None:
    """Refuse camera ids beyond the dataset's (Market: 6, Duke: 8), as the reference asserts."""
    if len(split) and split.cams.max() >= n_cameras:
        bad = int(np.argmax(split.cams >= n_cameras))
        raise DataError(f"{split.paths[bad]}: camera {int(split.cams[bad]) + 1} but {where} has {n_cameras}")


def names_of(paths: Sequence[Path], root: Optional[Path] = None) -> List[str]:
    """Stable names of images (relative to ``root`` when given), e.g. for feature stores."""
    if root is None:
        return [p.name for p in paths]
    return [p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in paths]
