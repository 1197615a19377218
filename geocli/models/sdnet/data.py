"""SDNet's input pipeline: memory-mapped ``train.npz`` / ``test.npz`` rows -> normalised patch batches.

Preprocessing is the port's ``src/dataset.py``: split a row into its optical (columns 0:64) and SAR
(64:) halves, resize each to 64x64 if needed (bilinear), per-patch min-max to [0, 1] (a constant patch
becomes 0) and (x - 0.5) / 0.5. The network then standardises each patch again (``net.input_norm``);
the [-1, 1] patch is also the reconstruction target. There is no augmentation in the port.

The batch loader holds only the file path: every worker maps the file itself and reads the rows of
its batch, so memory does not grow with the number of pairs (docs/backends.md, section 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Tuple

import cv2
import numpy as np

from geocli.data.sen12_npz import PairFile, open_pairs, split_halves
from geocli.errors import DataError, UsageError

PATCH = 64


def find_file(data: Optional[Path], name: str) -> Path:
    """``<data>/<name>`` or ``<data>/npz/<name>`` (a SEN1-2 root prepared in place)."""
    if data is None:
        raise UsageError("--data is required: a folder with train.npz and test.npz "
                         "(make them with `geoloc data npz-prep sen12 --root DIR`)")
    data = Path(data)
    for candidate in (data / name, data / "npz" / name):
        if candidate.is_file():
            return candidate
    if not data.is_dir():
        raise DataError(f"--data {data}: folder not found")
    raise DataError(f"--data {data}: no {name} in it or in {data / 'npz'}; build it with "
                    f"`geoloc data npz-prep sen12 --root <SEN1-2 folder> --out {data}`")


def open_train(path: Path) -> PairFile:
    """The training file, refusing non-matching rows: the port trains every row as a match."""
    pairs = open_pairs(path)
    if not len(pairs):
        raise DataError(f"{path}: holds no pairs")
    bad = int((pairs.labels != 1).sum())
    if bad:
        raise DataError(f"{path}: {bad} rows are labelled 0 (non-match), but training treats every row as a "
                        "matching pair (negatives are mined inside each batch); keep matches only in train.npz")
    return pairs


def normalise(patches: np.ndarray) -> np.ndarray:
    """(B, H, W) uint8 -> (B, 1, 64, 64) float32: resize, per-patch min-max, then (x - 0.5) / 0.5."""
    if patches.shape[1:] != (PATCH, PATCH):
        patches = np.stack([cv2.resize(p, (PATCH, PATCH), interpolation=cv2.INTER_LINEAR) for p in patches])
    x = patches.astype(np.float32)
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    x = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)
    return ((x - 0.5) / 0.5)[:, None].astype(np.float32)


def to_batch(rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    opt, sar = split_halves(np.asarray(rows))
    return normalise(opt), normalise(sar)


class PairBatches:
    """``load(indices, seed)`` for :class:`geocli.runtime.plan.IndexedSource`: picklable (its state is
    the path and the member's offset), rows are read with ``pread`` in whichever process calls it, so
    resident memory is one batch whatever the size of the file. Rows come in the order asked for."""

    def __init__(self, path: Path):
        from geocli.data.sen12_npz import RowReader

        self.reader = RowReader(path, "arr_0")

    def __call__(self, indices, seed=None) -> Tuple[np.ndarray, np.ndarray]:
        return to_batch(self.reader.rows(np.asarray(indices, np.int64)))


def test_batches(pairs: PairFile, batch_size: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(pairs), batch_size):
        yield to_batch(pairs.images[start:start + batch_size])
