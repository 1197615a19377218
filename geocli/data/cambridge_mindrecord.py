"""Cambridge Landmarks scene -> ``train.mindrecord`` / ``test.mindrecord`` (image bytes + float32[7] pose).

The schema keeps the port's two fields (``image``: the encoded file as stored, ``image_pose``: X Y Z W P Q
R) and adds ``file_name`` (the row's image path), which evaluation needs for its per-frame CSV; files
written by the port itself, without it, still read.

Nothing is dropped silently: malformed rows, missing files and images OpenCV cannot decode stop the
conversion with ``file:line: problem``; with ``skip_bad`` each is skipped and listed in the report.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from geocli.data import mindrecord
from geocli.data.formats import cambridge as fmt
from geocli.errors import DataError

SCHEMA = {"image": {"type": "bytes"}, "image_pose": {"type": "float32", "shape": [7]},
          "file_name": {"type": "string"}}
SCHEMA_NAME = "cambridge_pose"
FORMAT_VERSION = 1

#: ``progress(label, total)`` returns ``advance(k)``; the CLI passes a Rich progress bar.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class ConversionReport:
    outputs: Dict[str, Path] = field(default_factory=dict)
    rows: Dict[str, int] = field(default_factory=dict)
    up_to_date: List[str] = field(default_factory=list)  # splits skipped because already converted
    skipped_rows: List[str] = field(default_factory=list)  # problems skipped with skip_bad


def default_out(scene: Path) -> Path:
    return Path(scene) / "mindrecord"


def record_path(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}.mindrecord"


def _decodes(data: bytes) -> bool:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image is not None and image.size > 0


def _problem(listing: Path, row: fmt.PoseRow, what: str) -> str:
    return f"{listing}:{row.line}: image {row.image} {what}"


def _present(scene: Path, listing: Path, rows: List[fmt.PoseRow]) -> Tuple[List[Tuple[fmt.PoseRow, int]], List[str]]:
    """Rows whose image file exists (with its size), and a problem line for each that does not."""
    found, problems = [], []
    for row in rows:
        path = scene / row.image
        if not path.is_file():
            problems.append(_problem(listing, row, "not found"))
        else:
            found.append((row, path.stat().st_size))
    return found, problems


def _rows(scene: Path, listing: Path, rows: Sequence[fmt.PoseRow], skip_bad: bool,
          skipped: List[str]) -> Iterator[Dict[str, object]]:
    """Read and verify images on every core (OpenCV decodes without the GIL), a bounded chunk at a time
    so a scene of large images is never all in memory, yielding MindRecord rows in list order."""
    def load(row: fmt.PoseRow):
        data = (scene / row.image).read_bytes()
        return row, data, _decodes(data)

    workers = max(os.cpu_count() or 1, 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(rows), 8 * workers):
            for row, data, ok in pool.map(load, rows[start:start + 8 * workers]):
                if not ok:
                    message = _problem(listing, row, "cannot be decoded as an image")
                    if not skip_bad:
                        raise DataError(message)
                    skipped.append(message)
                    continue
                yield {"image": data, "image_pose": np.asarray(row.pose, np.float32), "file_name": row.image}


def convert(scene: Path, out: Optional[Path] = None, *, splits: Sequence[str] = fmt.SPLITS,
            overwrite: bool = False, skip_bad: bool = False,
            progress: Optional[ProgressFactory] = None) -> ConversionReport:
    """Convert the listed splits of one scene; splits already converted from the same list are skipped."""
    scene = Path(scene)
    if not scene.is_dir():
        raise DataError(f"--scene {scene}: folder not found")
    out = Path(out) if out is not None else default_out(scene)
    report = ConversionReport()
    for split in splits:
        listing = fmt.split_file(scene, split)
        target = record_path(out, split)
        fingerprint = {"format": f"cambridge-v{FORMAT_VERSION}",
                       "sha256": hashlib.sha256(listing.read_bytes()).hexdigest() if listing.is_file() else None}
        report.outputs[split] = target
        if not mindrecord.check_writable(target, fingerprint, overwrite):
            report.up_to_date.append(split)
            continue
        rows, problems = fmt.read(listing, skip_bad=True)
        present, missing = _present(scene, listing, rows)
        problems += missing
        if problems and not skip_bad:
            more = f" (+{len(problems) - 1} more problems; --skip-bad skips and lists them)" if len(problems) > 1 else ""
            raise DataError(problems[0] + more)
        report.skipped_rows += problems
        if not present:
            raise DataError(f"{listing}: no usable rows left to convert")
        advance = progress(f"{scene.name}/{split}", len(present)) if progress else None
        skipped_before = len(report.skipped_rows)
        mindrecord.write(target, SCHEMA, _rows(scene, listing, [r for r, _ in present], skip_bad, report.skipped_rows),
                         n_rows=len(present), max_row_bytes=max(size for _, size in present),
                         total_bytes=sum(size for _, size in present), fingerprint=fingerprint,
                         schema_name=SCHEMA_NAME, progress=advance)
        report.rows[split] = len(present) - (len(report.skipped_rows) - skipped_before)
    return report
