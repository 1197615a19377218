"""GLDv2 (clean) -> sharded MindRecord ``{file_id, label, data}`` for DELF training, as the port lays it out.

Output folder::

    relabeling.csv                      new_label,old_label (ascending landmark id)
    validation.mindrecord000 .. NNN     (+ .db, + .json manifest) the per-landmark validation split
    train.mindrecord000 .. NNN          the training split, shuffled
    conversion_report.csv               every image skipped: file_id,landmark_id,split,problem,path

Each shard is an independent MindRecord file (``FileWriter(shard_num=1)``) with a manifest holding a
fingerprint of its rows, so an interrupted conversion resumes at the first unfinished shard and a
finished one is never rewritten (the port writes one 128-shard set in a single pass, deletes every
source image it has read and crashes on the first missing one; none of that here: sources are only
read). ``data`` holds the ORIGINAL file bytes (the port re-encodes through PIL at JPEG quality 75).
Rows are written in the split's order, shards cut contiguously, so training reads the port's order.

Missing images are found before the split (a stat per image, in a thread pool), unreadable ones while
a shard is written (a reduced-size decode, plus a check for the JPEG end marker that truncated
downloads lack); both are skipped, counted and listed in ``conversion_report.csv``. ``strict`` makes
the first of them an error instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from geocli.data import mindrecord
from geocli.data.formats import gldv2 as fmt
from geocli.errors import DataError
from geocli.fileio import atomic_write_text

SCHEMA = {"file_id": {"type": "string"}, "label": {"type": "int64"}, "data": {"type": "bytes"}}
SCHEMA_NAME = "GLDv2"  # the port's schema description
FORMAT_VERSION = 1
REPORT = "conversion_report.csv"
RELABELING = "relabeling.csv"

#: ``progress(label, total)`` returns ``advance(k)``; the CLI passes a Rich progress bar.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class Problem:
    file_id: str
    landmark: int
    split: str
    problem: str
    path: str


@dataclass
class GldReport:
    out: Path
    classes: int = 0
    rows: Dict[str, int] = field(default_factory=dict)  # images written per split (this run + earlier)
    shards: Dict[str, List[Path]] = field(default_factory=dict)
    up_to_date: List[Path] = field(default_factory=list)  # shards kept from an earlier run
    problems: List[Problem] = field(default_factory=list)
    seconds: float = 0.0
    images_written: int = 0  # by this run

    @property
    def images_per_second(self) -> float:
        return self.images_written / self.seconds if self.seconds > 0 else 0.0

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.problem.startswith(kind))


def shard_path(out: Path, split: str, index: int) -> Path:
    """The port's names: ``train.mindrecord000`` .. (three digits, as FileWriter(shard_num=128) writes)."""
    return Path(out) / f"{split}.mindrecord{index:03d}"


def split_shards(out: Path, split: str) -> List[Path]:
    """The completed shards of one split in a converted folder, in order."""
    found = sorted(Path(out).glob(f"{split}.mindrecord[0-9][0-9][0-9]"))
    return [p for p in found if mindrecord.manifest_path(p).is_file()]


def _skipped_path(shard: Path) -> Path:
    return Path(str(shard) + ".skipped.json")


def check_image(data: bytes) -> Optional[str]:
    """None if the bytes are a whole decodable image, else what is wrong with them."""
    import cv2

    if not data:
        return "unreadable: empty file"
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]:
        return "unreadable: truncated JPEG (no end marker)"
    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 if data[:2] == b"\xff\xd8" else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        return "unreadable: not a decodable image"
    return None


def _locate(images: Path, listing: fmt.Listing, workers: int) -> List[Optional[Path]]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda fid: fmt.find_image(images, fid), listing.file_ids, chunksize=256))


def _fingerprint(file_ids: List[str], labels: List[int]) -> Dict[str, str]:
    digest = hashlib.sha256()
    for fid, label in zip(file_ids, labels):
        digest.update(f"{fid},{label}\n".encode())
    return {"format": f"gldv2-v{FORMAT_VERSION}", "rows_sha256": digest.hexdigest()}


def _shard_rows(items: List[Tuple[str, int, int, Path]], split: str, strict: bool, skipped: List[Problem],
                skipped_file: Path, workers: int) -> Iterator[Dict[str, object]]:
    """Read and check a shard's images on several threads (bounded chunks), yielding MindRecord rows; the
    skipped list is saved beside the shard before the writer commits it."""
    def load(item):
        _, _, _, path = item
        try:
            data = path.read_bytes()
        except OSError as exc:
            return item, b"", f"unreadable: {exc.strerror}"
        return item, data, check_image(data)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), 16 * workers):
            for (fid, landmark, label, path), data, problem in pool.map(load, items[start:start + 16 * workers]):
                if problem is not None:
                    if strict:
                        raise DataError(f"{path}: {problem} (image {fid} of landmark {landmark}); "
                                        "drop --strict to skip such images and list them in " + REPORT)
                    skipped.append(Problem(fid, landmark, split, problem, str(path)))
                    continue
                yield {"file_id": fid, "label": label, "data": data}
    atomic_write_text(skipped_file, json.dumps([p.__dict__ for p in skipped]) + "\n")


def _load_skipped(shard: Path) -> List[Problem]:
    path = _skipped_path(shard)
    if not path.is_file():
        return []
    try:
        return [Problem(**p) for p in json.loads(path.read_text(encoding="utf-8"))]
    except (ValueError, TypeError):
        return []


def _write_report(out: Path, problems: List[Problem]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file_id", "landmark_id", "split", "problem", "path"])
    for p in problems:
        writer.writerow([p.file_id, p.landmark, p.split, p.problem, p.path])
    return atomic_write_text(Path(out) / REPORT, buf.getvalue())


def _write_relabeling(out: Path, mapping: Dict[int, int], overwrite: bool) -> None:
    text = "new_label,old_label\n" + "".join(f"{new},{old}\n" for old, new in mapping.items())
    path = Path(out) / RELABELING
    if path.is_file() and path.read_text(encoding="utf-8") != text and not overwrite:
        raise DataError(f"{path}: holds a different relabelling (other images or CSV); pass --overwrite "
                        "to convert again from scratch")
    atomic_write_text(path, text)


def resolve_inputs(data: Optional[Path], train_csv: Optional[Path], clean_csv: Optional[Path],
                   images: Optional[Path]) -> Tuple[Path, bool, Path]:
    """(CSV to read, whether it is the clean one, images folder): explicit paths win over ``data``'s
    layout; the clean CSV is preferred."""
    if data is None and (images is None or (train_csv is None and clean_csv is None)):
        raise DataError("--data DIR is required (or --images together with --clean-csv or --train-csv)")
    base = Path(data) if data is not None else None
    if base is not None and not base.is_dir():
        raise DataError(f"--data {base}: folder not found")
    images = Path(images) if images is not None else base / fmt.IMAGES_DIR
    if not images.is_dir():
        raise DataError(f"{images}: image folder not found (expected <data>/train/<a>/<b>/<c>/<id>.jpg; "
                        "--images DIR overrides)")
    if clean_csv is not None:
        return Path(clean_csv), True, images
    if train_csv is not None:
        return Path(train_csv), False, images
    for name in (fmt.CLEAN_CSV, fmt.TRAIN_CSV):
        if (base / name).is_file():
            return base / name, name == fmt.CLEAN_CSV, images
    raise DataError(f"--data {base}: neither {fmt.CLEAN_CSV} nor {fmt.TRAIN_CSV} found "
                    "(`geoloc data download gldv2` fetches them)")


def convert(data: Optional[Path] = None, out: Optional[Path] = None, *, train_csv: Optional[Path] = None,
            clean_csv: Optional[Path] = None, images: Optional[Path] = None, shards: int = 128,
            val_split: float = 0.2, seed: int = 0, strict: bool = False, overwrite: bool = False,
            progress: Optional[ProgressFactory] = None, workers: Optional[int] = None) -> GldReport:
    """Convert GLDv2 to MindRecord shards in ``out`` (default ``<data>/mindrecord``); see the module doc."""
    started = time.perf_counter()
    listing_path, clean, images = resolve_inputs(data, train_csv, clean_csv, images)
    out = Path(out) if out is not None else (Path(data) if data is not None else images.parent) / "mindrecord"
    if shards < 1:
        raise DataError(f"--shards {shards}: must be at least 1")
    workers = workers or max(2 * (os.cpu_count() or 1), 4)  # file reads wait on disk more than on the CPU
    listing = fmt.read_clean_csv(listing_path) if clean else fmt.read_train_csv(listing_path)
    if not len(listing):
        raise DataError(f"{listing_path}: lists no images")
    report = GldReport(out=out)
    paths = _locate(images, listing, workers)
    present = [i for i, p in enumerate(paths) if p is not None]
    missing = [Problem(listing.file_ids[i], listing.landmarks[i], "", "missing", str(fmt.image_path(images, listing.file_ids[i])))
               for i, p in enumerate(paths) if p is None]
    if missing and strict:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0].path}: image {missing[0].file_id} listed in {listing_path} is missing{more}; "
                        f"drop --strict to skip missing images and list them in {REPORT}")
    if not present:
        raise DataError(f"{images}: none of the {len(listing)} images listed in {listing_path} is there")
    mapping = fmt.relabel([listing.landmarks[i] for i in present])
    labels = [mapping[listing.landmarks[i]] for i in present]
    val_pos, train_pos = fmt.split(labels, val_split, seed)
    out.mkdir(parents=True, exist_ok=True)
    _write_relabeling(out, mapping, overwrite)
    report.classes = len(mapping)
    report.problems += missing
    for split, positions in zip(fmt.SPLITS, (val_pos, train_pos)):
        items = [(listing.file_ids[present[k]], listing.landmarks[present[k]], labels[k], paths[present[k]])
                 for k in positions]
        report.shards[split] = []
        report.rows[split] = 0
        if not items:
            continue
        n_shards = min(shards, len(items))
        bounds = np.linspace(0, len(items), n_shards + 1).round().astype(int)
        advance = progress(split, len(items)) if progress else None
        for s in range(n_shards):
            chunk = items[bounds[s]:bounds[s + 1]]
            target = shard_path(out, split, s)
            report.shards[split].append(target)
            fingerprint = _fingerprint([c[0] for c in chunk], [c[2] for c in chunk])
            if not mindrecord.check_writable(target, fingerprint, overwrite):
                report.up_to_date.append(target)
                skipped = _load_skipped(target)
                report.problems += skipped
                report.rows[split] += len(chunk) - len(skipped)
                if advance:
                    advance(len(chunk))
                continue
            sizes = [c[3].stat().st_size for c in chunk]
            skipped: List[Problem] = []
            rows = _shard_rows(chunk, split, strict, skipped, _skipped_path(target), workers)
            mindrecord.write(target, SCHEMA, rows, n_rows=len(chunk), max_row_bytes=max(sizes) + 256,
                             total_bytes=sum(sizes), fingerprint=fingerprint, schema_name=SCHEMA_NAME,
                             chunk=10, progress=advance)
            if advance and skipped:
                advance(len(skipped))
            report.problems += skipped
            report.rows[split] += len(chunk) - len(skipped)
            report.images_written += len(chunk) - len(skipped)
        _remove_stale_shards(out, split, n_shards, overwrite)
    _write_report(out, report.problems)
    report.seconds = time.perf_counter() - started
    return report


def _remove_stale_shards(out: Path, split: str, n_shards: int, overwrite: bool) -> None:
    """Shards beyond this conversion's count (from an earlier run with more) would be read as part of the
    split: they are ours (manifest present), so remove them; anything else needs ``overwrite``."""
    for extra in sorted(Path(out).glob(f"{split}.mindrecord[0-9][0-9][0-9]")):
        if int(extra.name[-3:]) < n_shards:
            continue
        if not mindrecord.manifest_path(extra).is_file() and not overwrite:
            raise DataError(f"{extra}: not part of this conversion and not written by geoloc; move it away or "
                            "pass --overwrite")
        for suffix in ("", ".db", ".json", ".skipped.json"):
            Path(str(extra) + suffix).unlink(missing_ok=True)
