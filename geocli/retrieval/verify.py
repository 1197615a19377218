"""Geometric verification: how many putative correspondences one affine transform explains.

OpenCV's ``estimateAffine2D`` with RANSAC replaces DELF's scikit-image ``ransac(AffineTransform,
min_samples=3, residual_threshold=20, max_trials=1000)``: the same model, threshold and trial budget,
in C++, so verifying a 100-image short list takes milliseconds instead of seconds. The port's RANSAC
has no ``random_state`` and differs from run to run; OpenCV seeds its generator with a fixed value on
every call, so a result here is reproducible. Only the short list is verified (DELF's per-pair RANSAC
over the whole database took ~30 s per query at 17k images, tensorflow/models #9113).
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

#: DELF's ``_RANSAC_RESIDUAL_THRESHOLD`` (pixels) in ``match_images.py``.
DEFAULT_RESIDUAL_THRESHOLD = 20.0

#: DELF's ``max_trials``.
DEFAULT_MAX_TRIALS = 1000

#: An affine transform has six unknowns: three correspondences (DELF's ``min_samples``).
MIN_CORRESPONDENCES = 3

#: Just below 1: OpenCV then runs the whole trial budget, like scikit-image's default (no early stop).
_CONFIDENCE = 0.999999


def ransac_affine(src_xy: np.ndarray, dst_xy: np.ndarray,
                  residual_threshold: float = DEFAULT_RESIDUAL_THRESHOLD,
                  max_trials: int = DEFAULT_MAX_TRIALS) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """``(matrix, inliers)``: the 2x3 affine map ``dst ~ matrix @ [src, 1]`` and the boolean inlier mask.

    ``src_xy`` and ``dst_xy`` are ``(n, 2)`` with row i of one matching row i of the other. Fewer than
    three correspondences or a degenerate set (all collinear) give ``(None, all False)`` rather than an
    error, because a short list routinely holds images with almost nothing in common with the query.
    """
    src_xy = np.ascontiguousarray(src_xy, dtype=np.float32).reshape(-1, 2)
    dst_xy = np.ascontiguousarray(dst_xy, dtype=np.float32).reshape(-1, 2)
    if len(src_xy) != len(dst_xy):
        raise ValueError(f"{len(src_xy)} source points but {len(dst_xy)} destination points")
    none = np.zeros(len(src_xy), dtype=bool)
    if len(src_xy) < MIN_CORRESPONDENCES:
        return None, none
    matrix, inliers = cv2.estimateAffine2D(
        src_xy, dst_xy, method=cv2.RANSAC, ransacReprojThreshold=float(residual_threshold),
        maxIters=int(max_trials), confidence=_CONFIDENCE)
    if matrix is None or inliers is None:
        return None, none
    return matrix.astype(np.float64), inliers.ravel().astype(bool)


def count_inliers(query_xy: np.ndarray, db_xy: np.ndarray,
                  residual_threshold: float = DEFAULT_RESIDUAL_THRESHOLD,
                  max_iters: int = DEFAULT_MAX_TRIALS) -> int:
    """Number of correspondences consistent with the best affine map from query to database points."""
    return int(np.count_nonzero(ransac_affine(query_xy, db_xy, residual_threshold, max_iters)[1]))
