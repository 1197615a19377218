"""Local-feature retrieval (DELF): one ANN index over all descriptors, votes, verify the short list.

A query goes through three stages, each cheaper than doing the next on everything:

1. every query descriptor finds its ``k`` approximate nearest neighbours within ``max_distance`` in
   one :class:`~geocli.retrieval.ivf.IVFIndex` over all database descriptors;
2. each database image gets one vote per query descriptor with a neighbour in it, and the ``shortlist``
   images with most votes are kept;
3. only those are verified: the neighbour pairs found in stage 1 are the putative correspondences,
   and the affine-RANSAC inlier count (:func:`~geocli.retrieval.verify.count_inliers`) is the score.

Stage 1 replaces DELF's per-pair KD-tree matching, so no image outside the short list costs anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from geocli.retrieval.ivf import IVFIndex
from geocli.retrieval.verify import DEFAULT_RESIDUAL_THRESHOLD, count_inliers

#: DELF's ``_DISTANCE_THRESHOLD`` for unit-norm 40-d descriptors (``match_images.py``).
DEFAULT_MAX_DISTANCE = 0.8


@dataclass
class LocalQueryResult:
    """The verified short list (best first) and the votes every database image received."""

    images: np.ndarray   # short-listed image indices, by inliers, then votes, then index
    inliers: np.ndarray  # RANSAC inliers of each short-listed image
    votes: np.ndarray    # (n_images,) votes of every database image

    def ranking(self) -> np.ndarray:
        """All database images: the verified short list, then the rest by votes, then index."""
        rest = np.setdiff1d(np.arange(self.votes.size), self.images)
        rest = rest[np.lexsort((rest, -self.votes[rest]))]
        return np.concatenate([self.images, rest])


class LocalIndex:
    """Descriptors and keypoint locations of a whole database, searchable by descriptor."""

    def __init__(self, ivf: IVFIndex, image_of_row: np.ndarray, locations: np.ndarray,
                 n_images: int, names: Optional[Sequence[str]] = None):
        self.ivf = ivf
        self.image_of_row = image_of_row  # database image of each descriptor row
        self.locations = locations        # (n_rows, 2) keypoint location of each descriptor row
        self.n_images = int(n_images)     # images without features still get a (zero) vote count
        self.names = list(names) if names is not None else None

    @classmethod
    def build(cls, descriptors: Sequence[np.ndarray], locations: Sequence[np.ndarray],
              names: Optional[Sequence[str]] = None, n_cells: Optional[int] = None,
              seed: int = 0) -> "LocalIndex":
        """Indexes one ``(n_i, d)`` descriptor array and ``(n_i, 2)`` location array per image."""
        if len(descriptors) != len(locations):
            raise ValueError(f"{len(descriptors)} descriptor arrays but {len(locations)} location arrays")
        counts = np.array([len(d) for d in descriptors], dtype=np.int64)
        if any(len(loc) != n for loc, n in zip(locations, counts)):
            raise ValueError("each image needs as many locations as descriptors")
        image_of_row = np.repeat(np.arange(len(descriptors), dtype=np.int32), counts)
        all_locations = np.concatenate([np.asarray(loc, np.float32).reshape(-1, 2) for loc in locations])
        ivf = IVFIndex.build(np.concatenate(descriptors).astype(np.float32, copy=False),
                             n_cells=n_cells, seed=seed)
        return cls(ivf, image_of_row, all_locations, len(descriptors), names)

    @classmethod
    def from_store(cls, store, names: Optional[Sequence[str]] = None, descriptor_key: str = "descriptors",
                   location_key: str = "locations", **build_kwargs) -> "LocalIndex":
        """Indexes the local features of a :class:`~geocli.retrieval.store.FeatureStore`."""
        names = store.names() if names is None else list(names)
        arrays = [store.read(name, [descriptor_key, location_key]) for name in names]
        return cls.build([a[descriptor_key] for a in arrays], [a[location_key] for a in arrays],
                         names=names, **build_kwargs)

    def query(self, locations: np.ndarray, descriptors: np.ndarray, k: int = 10, nprobe: int = 8,
              max_distance: float = DEFAULT_MAX_DISTANCE, shortlist: int = 100,
              residual_threshold: float = DEFAULT_RESIDUAL_THRESHOLD) -> LocalQueryResult:
        """Retrieves and verifies database images for one query image's local features.

        ``k`` neighbours per query descriptor, searched in the ``nprobe`` nearest IVF cells, count
        when closer than ``max_distance``; the ``shortlist`` most-voted images are verified with
        RANSAC at ``residual_threshold`` pixels.

        A query descriptor votes at most once per image (its nearest neighbour there is its
        correspondence), so repeated texture in one database image cannot outvote real matches.
        Images without votes are never verified; fewer than ``shortlist`` may come back.
        """
        locations = np.asarray(locations, dtype=np.float32).reshape(-1, 2)
        if len(locations) != len(descriptors):
            raise ValueError(f"{len(locations)} query locations but {len(descriptors)} descriptors")
        votes = np.zeros(self.n_images, dtype=np.int64)
        if len(descriptors) == 0:
            return LocalQueryResult(np.empty(0, np.int64), np.empty(0, np.int64), votes)
        _, rows = self.ivf.search(descriptors, k=k, nprobe=nprobe, max_distance=max_distance)
        query_feature = np.repeat(np.arange(len(descriptors)), rows.shape[1])
        rows = rows.ravel()
        found = rows >= 0
        query_feature, rows = query_feature[found], rows[found]
        images = self.image_of_row[rows].astype(np.int64)
        # rows are nearest-first per query feature, so the first (feature, image) pair is the nearest
        _, first = np.unique(query_feature * self.n_images + images, return_index=True)
        query_feature, rows, images = query_feature[first], rows[first], images[first]
        votes += np.bincount(images, minlength=self.n_images)

        candidates = np.flatnonzero(votes)
        candidates = candidates[np.lexsort((candidates, -votes[candidates]))][:shortlist]
        by_image = np.argsort(images, kind="stable")
        bounds = np.searchsorted(images[by_image], np.stack([candidates, candidates + 1]))
        inliers = np.zeros(len(candidates), dtype=np.int64)
        for c, (lo, hi) in enumerate(bounds.T):
            pairs = by_image[lo:hi]
            inliers[c] = count_inliers(locations[query_feature[pairs]], self.locations[rows[pairs]],
                                       residual_threshold=residual_threshold)
        order = np.lexsort((candidates, -votes[candidates], -inliers))
        return LocalQueryResult(candidates[order], inliers[order], votes)
