"""Geometric verification: how many putative correspondences one affine transform explains.

OpenCV's ``estimateAffine2D`` with RANSAC replaces DELF's scikit-image ``ransac(AffineTransform)``: the
same model and the same residual threshold, in C++, so verifying a 100-image short list takes
milliseconds instead of seconds. Only the short list is verified (DELF's original per-pair RANSAC over
the whole database took ~30 s per query at 17k images, tensorflow/models #9113).
"""

from __future__ import annotations

import cv2
import numpy as np

#: DELF's ``_RANSAC_RESIDUAL_THRESHOLD`` (pixels) in ``match_images.py``.
DEFAULT_RESIDUAL_THRESHOLD = 20.0

#: An affine transform has six unknowns: three correspondences.
MIN_CORRESPONDENCES = 3


def count_inliers(query_xy: np.ndarray, db_xy: np.ndarray,
                  residual_threshold: float = DEFAULT_RESIDUAL_THRESHOLD, max_iters: int = 1000,
                  confidence: float = 0.99) -> int:
    """Number of correspondences consistent with the best affine map from query to database points.

    ``query_xy`` and ``db_xy`` are ``(n, 2)``: row i of one corresponds to row i of the other. Fewer
    than three correspondences, or a degenerate set (all collinear), give 0 rather than an error,
    because a short list routinely contains images with almost nothing in common with the query.
    OpenCV seeds its RANSAC generator identically on every call, so results are reproducible.
    """
    query_xy = np.ascontiguousarray(query_xy, dtype=np.float32).reshape(-1, 2)
    db_xy = np.ascontiguousarray(db_xy, dtype=np.float32).reshape(-1, 2)
    if len(query_xy) != len(db_xy):
        raise ValueError(f"{len(query_xy)} query points but {len(db_xy)} database points")
    if len(query_xy) < MIN_CORRESPONDENCES:
        return 0
    matrix, inliers = cv2.estimateAffine2D(
        query_xy, db_xy, method=cv2.RANSAC, ransacReprojThreshold=float(residual_threshold),
        maxIters=int(max_iters), confidence=float(confidence))
    if matrix is None or inliers is None:
        return 0
    return int(np.count_nonzero(inliers))
