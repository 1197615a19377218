"""DELF's descriptor PCA: 1024-d conv4 features -> 40-d, in the port's file format.

The port reads ``mean.npy`` (1, 1024) and ``pca_proj_mat.npy`` (1024, 1024, one principal axis per
row, largest variance first) and projects ``(x - mean) @ matrix[:40].T`` (``extract_utils_np.py``);
whitening is off by default (``--use_whitening False``). ``fit_pca`` writes the same two files plus
``pca_variances.npy``, so a folder from either source works with ``--pca DIR``. Everything is loaded
with ``allow_pickle=False``: a downloaded ``.npy`` can carry a pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from geocli.errors import DataError

MEAN_FILE = "mean.npy"
MATRIX_FILE = "pca_proj_mat.npy"
VARIANCES_FILE = "pca_variances.npy"


@dataclass
class Pca:
    mean: np.ndarray                     # (1, d_in)
    matrix: np.ndarray                   # (d_in, d_in) rows = axes, largest variance first
    variances: Optional[np.ndarray] = None
    dim: int = 40
    whiten: bool = False

    def project(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) @ matrix[:dim].T`` (divided by sqrt(variance) when whitening), float32."""
        x = np.asarray(x, dtype=np.float32)
        out = (x - self.mean) @ self.matrix[: self.dim].T
        if self.whiten:
            if self.variances is None:
                raise DataError("PCA whitening needs pca_variances.npy beside the projection")
            out = out / np.sqrt(np.maximum(self.variances[: self.dim], 1e-12))
        return out.astype(np.float32)


def fit_pca(descriptors: np.ndarray) -> Pca:
    """Principal axes of ``descriptors`` (n, d) by an eigendecomposition of their covariance."""
    x = np.asarray(descriptors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise DataError(f"PCA needs at least 2 descriptors, got shape {x.shape}: extract more images "
                        "or lower extract.score_threshold")
    mean = x.mean(axis=0, keepdims=True)
    centred = x - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    matrix = vectors[:, order].T
    # fix each axis's sign (eigh's is arbitrary): largest-magnitude component positive
    signs = np.sign(matrix[np.arange(len(matrix)), np.argmax(np.abs(matrix), axis=1)])
    matrix *= np.where(signs == 0, 1.0, signs)[:, None]
    return Pca(mean.astype(np.float32), matrix.astype(np.float32), np.maximum(values[order], 0).astype(np.float32))


def save_pca(pca: Pca, folder: Union[str, Path], overwrite: bool = False) -> Path:
    folder = Path(folder)
    existing = [name for name in (MEAN_FILE, MATRIX_FILE, VARIANCES_FILE) if (folder / name).exists()]
    if existing and not overwrite:
        raise DataError(f"{folder}: already holds {', '.join(existing)}; pass --overwrite to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / MEAN_FILE, pca.mean)
    np.save(folder / MATRIX_FILE, pca.matrix)
    if pca.variances is not None:
        np.save(folder / VARIANCES_FILE, pca.variances)
    return folder


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; a PCA folder needs {MEAN_FILE} and {MATRIX_FILE} "
                        "(geoloc retrieve delf fit-pca writes them)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a plain .npy array ({exc})") from None


def load_pca(folder: Union[str, Path], dim: int = 40, whiten: bool = False) -> Pca:
    """The port's ``mean.npy`` + ``pca_proj_mat.npy`` (+ ``pca_variances.npy`` if present)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--pca {folder}: folder not found")
    mean = _load(folder / MEAN_FILE).astype(np.float32).reshape(1, -1)
    matrix = _load(folder / MATRIX_FILE).astype(np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != mean.shape[1]:
        raise DataError(f"{folder / MATRIX_FILE}: shape {matrix.shape} does not fit {MEAN_FILE} of "
                        f"{mean.shape[1]} values")
    if not 0 < dim <= matrix.shape[0]:
        raise DataError(f"{folder}: cannot project to {dim} dimensions with a {matrix.shape} matrix")
    variances = None
    if (folder / VARIANCES_FILE).is_file():
        variances = _load(folder / VARIANCES_FILE).astype(np.float32).ravel()
    return Pca(mean, matrix, variances, dim=int(dim), whiten=bool(whiten))
