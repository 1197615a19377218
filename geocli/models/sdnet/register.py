"""Whole-image optical/SAR registration with SDNet descriptors (the paper's purpose).

1. keypoints: SIFT on the optical image (strongest, spaced, whose 64x64 window fits); on the SAR image
   a dense grid by default (``match.sar_keypoints``), because SIFT on speckle mostly finds noise;
2. 64x64 patches around them, normalised as in training, described by the optical / SAR branch;
3. mutual nearest neighbours in descriptor space (L2, the metric the network was trained with);
4. RANSAC (OpenCV) for a homography or an affine map from SAR to optical pixel coordinates;
5. a picture: checkerboard of the optical image and the warped SAR image, beside a colour overlay.

Works on images of any size at least 64x64; the number of grid patches grows with the area, so large
images are described in batches (``eval.batch_size``) and ``match.grid_step`` trades density for time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np

from geocli.data.sen12_npz import HALF, crop, keypoints
from geocli.errors import DataError, UsageError
from geocli.models.sdnet.data import normalise

MODELS = ("homography", "affine")


@dataclass
class Registration:
    transform: Optional[np.ndarray]  # 3x3, SAR pixel -> optical pixel (None: not enough matches)
    model: str
    optical_points: int
    sar_points: int
    matches: int
    inliers: int
    src: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 2)))
    dst: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 2)))
    inlier_mask: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))

    def summary(self) -> Dict[str, Any]:
        return {"model": self.model, "optical_keypoints": self.optical_points, "sar_keypoints": self.sar_points,
                "mutual_matches": self.matches, "inliers": self.inliers,
                "transform_sar_to_optical": None if self.transform is None else np.round(self.transform, 6).tolist()}


def grid_points(shape, step: int) -> np.ndarray:
    """(x, y) centres on a regular grid whose 64x64 windows fit, centred in the image."""
    h, w = shape
    if h < 2 * HALF or w < 2 * HALF:
        return np.zeros((0, 2), np.int64)
    xs = np.arange(HALF, w - HALF + 1, step)
    ys = np.arange(HALF, h - HALF + 1, step)
    xs = xs + (w - HALF - xs[-1]) // 2
    ys = ys + (h - HALF - ys[-1]) // 2
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)


def detect(gray: np.ndarray, how: str, cfg: Dict[str, Any]) -> np.ndarray:
    if how == "grid":
        return grid_points(gray.shape, int(cfg["grid_step"]))
    if how == "sift":
        return keypoints(gray, {"sift_contrast": cfg["sift_contrast"], "sift_edge": cfg["sift_edge"],
                                "min_distance": cfg["min_distance"], "max_per_image": cfg["max_keypoints"]})
    raise UsageError(f"match keypoints {how!r}: choose sift or grid")


def describe(fn: Callable[[np.ndarray], np.ndarray], gray: np.ndarray, points: np.ndarray, batch: int) -> np.ndarray:
    """Descriptors (n, 128) of the 64x64 patches centred on ``points`` through ``fn`` (one branch)."""
    out: List[np.ndarray] = []
    for start in range(0, len(points), batch):
        patches = np.stack([crop(gray, p) for p in points[start:start + batch]])
        out.append(np.asarray(fn(normalise(patches)), np.float32))
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def mutual_nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(k, 2) index pairs (i in a, j in b) that are each other's nearest neighbour (L2)."""
    if not len(a) or not len(b):
        return np.zeros((0, 2), np.int64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
    ab = d.argmin(axis=1)
    ba = d.argmin(axis=0)
    i = np.flatnonzero(ba[ab] == np.arange(len(a)))
    return np.stack([i, ab[i]], axis=1)


def estimate(src: np.ndarray, dst: np.ndarray, model: str, threshold: float):
    """RANSAC fit of ``model`` mapping src -> dst: (3x3 matrix or None, inlier mask)."""
    src = np.ascontiguousarray(src, np.float32).reshape(-1, 2)
    dst = np.ascontiguousarray(dst, np.float32).reshape(-1, 2)
    need = 4 if model == "homography" else 3
    if len(src) < need:
        return None, np.zeros(len(src), bool)
    if model == "homography":
        m, mask = cv2.findHomography(src, dst, cv2.RANSAC, float(threshold), maxIters=5000, confidence=0.999)
    else:  # geocli.retrieval.verify counts affine inliers the same way; here the matrix itself is needed
        m, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=float(threshold),
                                       maxIters=5000, confidence=0.999)
        if m is not None:
            m = np.vstack([m, [0.0, 0.0, 1.0]])
    if m is None or mask is None:
        return None, np.zeros(len(src), bool)
    return m.astype(np.float64), mask.ravel().astype(bool)


def register(describe_opt, describe_sar, optical: np.ndarray, sar: np.ndarray, cfg: Dict[str, Any],
             batch: int = 256) -> Registration:
    """Register a grayscale SAR image onto a grayscale optical image (any sizes >= 64x64)."""
    model = cfg["model"]
    if model not in MODELS:
        raise UsageError(f"match.model {model!r}: choose homography or affine")
    p_opt = detect(optical, cfg["optical_keypoints"], cfg)
    p_sar = detect(sar, cfg["sar_keypoints"], cfg)
    d_opt = describe(describe_opt, optical, p_opt, batch)
    d_sar = describe(describe_sar, sar, p_sar, batch)
    pairs = mutual_nearest(d_sar, d_opt)
    src = p_sar[pairs[:, 0]].astype(np.float64)
    dst = p_opt[pairs[:, 1]].astype(np.float64)
    m, mask = estimate(src, dst, model, float(cfg["ransac_threshold"]))
    inliers = int(mask.sum())
    if inliers < int(cfg["min_inliers"]):
        m = None
    return Registration(m, model, len(p_opt), len(p_sar), len(pairs), inliers, src, dst, mask)


def read_image(path: Path) -> np.ndarray:
    """Any image file as 2-D uint8 grayscale (optical RGB converted with OpenCV's BT.601 weights)."""
    from geocli.data.sen12_npz import read_gray

    image = read_gray(Path(path))
    if image is None:
        raise DataError(f"{path}: empty or not a readable image")
    if min(image.shape) < 2 * HALF:
        raise DataError(f"{path}: {image.shape[1]}x{image.shape[0]} is smaller than one 64x64 patch")
    return image


def picture(optical: np.ndarray, sar: np.ndarray, reg: Registration, tile: int = 32) -> np.ndarray:
    """BGR picture: [checkerboard optical / warped SAR | overlay (optical green, SAR magenta) + inliers]."""
    h, w = optical.shape
    if reg.transform is not None:
        warped = cv2.warpPerspective(sar, reg.transform, (w, h))
    else:
        warped = cv2.resize(sar, (w, h))
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // tile) + (xx // tile)) % 2 == 0, optical, warped).astype(np.uint8)
    board = cv2.cvtColor(board, cv2.COLOR_GRAY2BGR)
    overlay = np.stack([warped, optical, warped], axis=2).astype(np.uint8)
    for (x, y), ok in zip(reg.dst, reg.inlier_mask):
        cv2.circle(overlay, (int(x), int(y)), 2, (0, 255, 255) if ok else (0, 0, 255), -1)
    gap = np.full((h, 4, 3), 255, np.uint8)
    out = np.hstack([board, gap, overlay])
    text = (f"{reg.model}: {reg.inliers}/{reg.matches} inliers" if reg.transform is not None
            else f"not registered ({reg.inliers} inliers of {reg.matches})")
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def reprojection_error(estimated: np.ndarray, truth: np.ndarray, shape) -> float:
    """Mean distance (px) between where the two transforms send a grid of points of an image of ``shape``."""
    h, w = shape
    pts = np.stack(np.meshgrid(np.linspace(0, w - 1, 5), np.linspace(0, h - 1, 5)), -1).reshape(-1, 1, 2)
    a = cv2.perspectiveTransform(pts.astype(np.float64), estimated)
    b = cv2.perspectiveTransform(pts.astype(np.float64), truth)
    return float(np.linalg.norm(a - b, axis=2).mean())
