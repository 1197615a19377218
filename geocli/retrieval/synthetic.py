"""Synthetic local-feature databases with real geometric structure, for tests and benchmarks.

Each query is a view of one database image under a random affine map: a share of that image's
keypoints, moved by the map plus pixel noise, with slightly perturbed descriptors, padded with
outlier keypoints (random place, random descriptor). Every other database image is unrelated. A
retrieval pipeline that works must rank the source image first, with many RANSAC inliers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np


@dataclass
class SyntheticLocalSet:
    db_locations: List[np.ndarray]       # per image (n_features, 2), pixels
    db_descriptors: List[np.ndarray]     # per image (n_features, dim), unit norm
    query_locations: List[np.ndarray]
    query_descriptors: List[np.ndarray]
    query_sources: np.ndarray            # the database image each query was made from
    query_affines: List[np.ndarray]      # (2, 3) map from database to query pixels


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_affine(rng: np.random.Generator, image_size: Tuple[int, int]) -> np.ndarray:
    """Rotation up to 30 deg, scale 0.7-1.3, shear up to 0.1 and a shift up to 10 % of the image."""
    angle = rng.uniform(-np.pi / 6, np.pi / 6)
    scale = rng.uniform(0.7, 1.3)
    shear = rng.uniform(-0.1, 0.1)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = scale * rotation @ np.array([[1.0, shear], [0.0, 1.0]])
    shift = rng.uniform(-0.1, 0.1, size=2) * np.asarray(image_size, dtype=np.float64)
    return np.hstack([linear, shift[:, None]])


def make_local_set(n_images: int, n_features: int, dim: int = 40, n_queries: int = 5,
                   inlier_share: float = 0.5, descriptor_noise: float = 0.05,
                   location_noise: float = 1.0, image_size: Tuple[int, int] = (640, 480),
                   seed: int = 0) -> SyntheticLocalSet:
    """A database of ``n_images`` x ``n_features`` keypoints and ``n_queries`` affine views.

    ``descriptor_noise`` is the per-dimension standard deviation added before re-normalising (0.05 in
    40-d moves a descriptor by ~0.3, well inside DELF's 0.8 matching threshold, while unrelated unit
    descriptors are ~1.4 apart). Query sources are distinct images (``n_queries <= n_images``).
    """
    rng = np.random.default_rng(seed)
    size = np.asarray(image_size, dtype=np.float32)
    all_descriptors = _unit_rows(rng.standard_normal((n_images * n_features, dim), dtype=np.float32))
    all_locations = rng.uniform(0, 1, size=(n_images * n_features, 2)).astype(np.float32) * size
    db_descriptors = np.split(all_descriptors, n_images)
    db_locations = np.split(all_locations, n_images)
    sources = rng.choice(n_images, size=n_queries, replace=False)
    n_inliers = int(round(inlier_share * n_features))
    query_locations, query_descriptors, affines = [], [], []
    for source in sources:
        picked = rng.choice(n_features, size=n_inliers, replace=False)
        affine = random_affine(rng, image_size)
        moved = db_locations[source][picked] @ affine[:, :2].T + affine[:, 2]
        moved += rng.normal(0.0, location_noise, size=moved.shape)
        noisy = db_descriptors[source][picked] + rng.normal(0.0, descriptor_noise, (n_inliers, dim))
        outlier_xy = rng.uniform(0, 1, size=(n_features - n_inliers, 2)) * size
        outlier_desc = rng.standard_normal((n_features - n_inliers, dim))
        order = rng.permutation(n_features)
        query_locations.append(np.vstack([moved, outlier_xy]).astype(np.float32)[order])
        query_descriptors.append(_unit_rows(np.vstack([noisy, outlier_desc])).astype(np.float32)[order])
        affines.append(affine)
    return SyntheticLocalSet(db_locations, db_descriptors, query_locations, query_descriptors,
                             sources, affines)
