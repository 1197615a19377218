"""Pairwise DELF matching (the port's ``match_images.py``) and its side-by-side picture.

Putative matches: for every feature of image 2, its nearest feature of image 1 by a KD-tree, kept when
closer than 0.8 (``_DISTANCE_THRESHOLD``); then affine RANSAC (residual 20 px, 1,000 trials, 3
samples; :func:`geocli.retrieval.verify.ransac_affine`, seeded). This is the two-image tool only:
large-scale retrieval uses the index (:mod:`geocli.retrieval.local`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from geocli.retrieval.verify import DEFAULT_MAX_TRIALS, DEFAULT_RESIDUAL_THRESHOLD, ransac_affine

#: The port's ``_DISTANCE_THRESHOLD`` for unit-norm 40-d descriptors.
DEFAULT_MATCH_DISTANCE = 0.8


@dataclass
class PairMatch:
    pairs: np.ndarray              # (n, 2): (index in image 1, index in image 2) of putative matches
    inliers: np.ndarray            # (n,) bool
    affine: Optional[np.ndarray]   # 2x3 map from image-1 (x, y) to image-2 (x, y), None if none found

    @property
    def n_putative(self) -> int:
        return int(len(self.pairs))

    @property
    def n_inliers(self) -> int:
        return int(np.count_nonzero(self.inliers))


def putative_matches(desc1: np.ndarray, desc2: np.ndarray,
                     max_distance: float = DEFAULT_MATCH_DISTANCE) -> np.ndarray:
    """(i1, i2) pairs: the nearest image-1 feature of each image-2 feature, within ``max_distance``."""
    from scipy.spatial import cKDTree

    desc1, desc2 = np.asarray(desc1, np.float32), np.asarray(desc2, np.float32)
    if len(desc1) == 0 or len(desc2) == 0:
        return np.zeros((0, 2), np.int64)
    _, nearest = cKDTree(desc1).query(desc2, distance_upper_bound=max_distance)
    found = nearest < len(desc1)
    return np.stack([nearest[found], np.flatnonzero(found)], axis=1).astype(np.int64)


def match_features(loc1: np.ndarray, desc1: np.ndarray, loc2: np.ndarray, desc2: np.ndarray,
                   max_distance: float = DEFAULT_MATCH_DISTANCE,
                   residual_threshold: float = DEFAULT_RESIDUAL_THRESHOLD,
                   max_trials: int = DEFAULT_MAX_TRIALS) -> PairMatch:
    """Putative matches and the affine RANSAC inliers between two images' (y, x) features."""
    pairs = putative_matches(desc1, desc2, max_distance)
    xy1 = np.asarray(loc1, np.float64).reshape(-1, 2)[pairs[:, 0]][:, ::-1]
    xy2 = np.asarray(loc2, np.float64).reshape(-1, 2)[pairs[:, 1]][:, ::-1]
    affine, inliers = ransac_affine(xy1, xy2, residual_threshold, max_trials)
    return PairMatch(pairs, inliers, affine)


def draw_matches(image1: np.ndarray, image2: np.ndarray, loc1: np.ndarray, loc2: np.ndarray,
                 match: PairMatch, path: Path) -> Path:
    """Both RGB images side by side (tops aligned), a line per inlier, like the port's eval_match.png."""
    import cv2

    h = max(image1.shape[0], image2.shape[0])
    canvas = np.full((h, image1.shape[1] + image2.shape[1], 3), 255, np.uint8)
    canvas[: image1.shape[0], : image1.shape[1]] = image1
    canvas[: image2.shape[0], image1.shape[1]:] = image2
    canvas = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
    thickness = max(1, int(round(h / 400)))
    for (i1, i2), good in zip(match.pairs, match.inliers):
        if not good:
            continue
        y1, x1 = loc1[i1]
        y2, x2 = loc2[i2]
        p1 = (int(round(x1)), int(round(y1)))
        p2 = (int(round(x2)) + image1.shape[1], int(round(y2)))
        cv2.line(canvas, p1, p2, (0, 200, 255), thickness, cv2.LINE_AA)
        cv2.circle(canvas, p1, 2 * thickness, (0, 255, 0), -1)
        cv2.circle(canvas, p2, 2 * thickness, (0, 255, 0), -1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        from geocli.errors import UsageError

        raise UsageError(f"--out {path}: cannot write the picture (use a .png or .jpg name)")
    return path
