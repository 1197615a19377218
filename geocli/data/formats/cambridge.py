"""Cambridge Landmarks pose lists: ``dataset_train.txt`` / ``dataset_test.txt`` of one scene.

Layout (as distributed by Kendall et al. and used unchanged by the MindSpore PoseNet port)::

    Visual Landmark Dataset V1
    ImageFile, Camera Position [X Y Z W P Q R]
    <blank>
    seq1/frame00001.png X Y Z W P Q R

X Y Z is the camera centre in metres, W P Q R a quaternion (w first). Images live next to the lists,
``<scene>/seqN/frameNNNNN.png``. The port skips the first three lines whatever they hold; this parser
checks them, because a file whose header is missing would otherwise lose its first data row.

Every problem is reported as ``file:line: what is wrong``. With ``skip_bad`` the offending rows are
returned as a list of such messages instead of raising, so a caller can show each one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, List, Tuple

from geocli.errors import DataError
from geocli.fileio import atomic_write_text

HEADER = ("Visual Landmark Dataset V1", "ImageFile, Camera Position [X Y Z W P Q R]", "")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class PoseRow:
    """One labelled frame: image path relative to the scene folder, position (m), quaternion (w,x,y,z)."""

    image: str
    xyz: Tuple[float, float, float]
    wpqr: Tuple[float, float, float, float]
    line: int = 0

    @property
    def pose(self) -> Tuple[float, ...]:
        return self.xyz + self.wpqr


def split_file(scene: Path, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return Path(scene) / f"dataset_{split}.txt"


def _parse_row(text: str) -> PoseRow:
    """One data line -> PoseRow; raises ValueError with the reason (no file/line: the caller adds it)."""
    fields = text.split()
    if len(fields) != 8:
        raise ValueError(f"expected 'IMAGE X Y Z W P Q R' (8 fields), got {len(fields)}")
    image = fields[0]
    parts = PurePosixPath(image).parts
    if image.startswith("/") or ".." in parts or "\\" in image:
        raise ValueError(f"image path {image!r} must be relative to the scene folder")
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        bad = next(v for v in fields[1:] if not _is_float(v))
        raise ValueError(f"{bad!r} is not a number") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError("pose values must be finite")
    if math.sqrt(sum(v * v for v in values[3:])) < 1e-6:
        raise ValueError("quaternion W P Q R is zero: it describes no rotation")
    return PoseRow(image, tuple(values[:3]), tuple(values[3:]))


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse(lines: Iterable[str], source: str, skip_bad: bool = False) -> Tuple[List[PoseRow], List[str]]:
    """Parse the lines of a pose list; returns (rows, problems). Problems are only returned, not
    raised, with ``skip_bad``; blank lines after the header are ignored."""
    rows: List[PoseRow] = []
    problems: List[str] = []
    lines = list(lines)
    for number, expected in enumerate(HEADER, start=1):
        got = lines[number - 1].strip() if len(lines) >= number else None
        if got != expected:
            shown = "end of file" if got is None else repr(got[:60])
            raise DataError(f"{source}:{number}: expected the header line {expected!r}, found {shown} "
                            "(Cambridge lists start with 3 header lines)")
    for number, text in enumerate(lines[len(HEADER):], start=len(HEADER) + 1):
        if not text.strip():
            continue
        try:
            row = _parse_row(text)
        except ValueError as exc:
            message = f"{source}:{number}: {exc}"
            if not skip_bad:
                raise DataError(message) from None
            problems.append(message)
            continue
        rows.append(PoseRow(row.image, row.xyz, row.wpqr, number))
    if not rows and not problems:
        raise DataError(f"{source}: has the header but no data rows")
    return rows, problems


def read(path: Path, skip_bad: bool = False) -> Tuple[List[PoseRow], List[str]]:
    """Read one pose list from disk (see :func:`parse`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found (a Cambridge scene folder holds dataset_train.txt and "
                        "dataset_test.txt)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
    return parse(text.splitlines(), str(path), skip_bad)


def format_row(row: PoseRow) -> str:
    return " ".join([row.image] + [f"{v:.6f}" for v in row.pose])


def write(path: Path, rows: Iterable[PoseRow]) -> Path:
    """Write a pose list with the 3 header lines (6 decimals, as the distributed files)."""
    body = [*HEADER, *(format_row(r) for r in rows)]
    return atomic_write_text(path, "\n".join(body) + "\n")
