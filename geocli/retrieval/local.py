"""Local-feature retrieval (DELF): one ANN index over all descriptors, votes, verify the short list.

A query goes through three stages, each cheaper than doing the next on everything:

1. every query descriptor finds its ``k`` nearest database descriptors (optionally within
   ``max_distance``) in one :class:`~geocli.retrieval.ann.DescriptorIndex` over all database
   descriptors, as the port does with Annoy (60 neighbours, no distance bound);
2. the (query descriptor, database descriptor) pairs are grouped by database image: a group is that
   image's putative correspondences and its size is the image's votes;
3. the ``verify`` most-voted images with at least ``min_matches`` (4, the port's ``--threshold``)
   putative correspondences are verified with affine RANSAC; score = inliers.

``verify=None`` verifies every image with enough putative matches: the port's exhaustive procedure
(``perform_retrieval.py``), minus its bug of never verifying the last group of the sorted pair list.
The final ranking is deterministic: verified images by inliers, then votes, then database index;
then the rest by votes, then index (the port's ``np.argsort(-score)`` leaves ties to the sort).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from geocli.errors import DataError
from geocli.retrieval.ann import DEFAULT_REFINE, DescriptorIndex
from geocli.retrieval.verify import DEFAULT_RESIDUAL_THRESHOLD, count_inliers

#: DELF's ``_DISTANCE_THRESHOLD`` of the pairwise matcher for unit-norm 40-d descriptors.
DEFAULT_MAX_DISTANCE = 0.8
#: Neighbours per query descriptor in the port's retrieval (``get_nns_by_vector(feature, 60)``).
DEFAULT_K = 60
#: Putative correspondences an image needs before it is verified (the port's ``--threshold 4``).
DEFAULT_MIN_MATCHES = 4

_LOCATIONS = "locations.npy"
_IMAGES = "image_of_row.npy"
_NAMES = "names.json"


@dataclass
class LocalQueryResult:
    """The verified images (best first) and the votes every database image received."""

    images: np.ndarray   # verified image indices, by inliers, then votes, then index
    inliers: np.ndarray  # RANSAC inliers of each verified image
    votes: np.ndarray    # (n_images,) putative correspondences of every database image

    def ranking(self) -> np.ndarray:
        """All database images: the verified ones, then the rest by votes, then index."""
        rest = np.setdiff1d(np.arange(self.votes.size), self.images)
        rest = rest[np.lexsort((rest, -self.votes[rest]))]
        return np.concatenate([self.images, rest]).astype(np.int64)

    def scores(self) -> np.ndarray:
        """Inliers of every database image in :meth:`ranking` order (0 where not verified)."""
        out = np.zeros(self.votes.size, dtype=np.int64)
        out[: self.images.size] = self.inliers
        return out


class LocalIndex:
    """Descriptors and keypoint locations of a whole database, searchable by descriptor."""

    def __init__(self, ann: DescriptorIndex, image_of_row: np.ndarray, locations: np.ndarray,
                 n_images: int, names: Optional[Sequence[str]] = None):
        self.ann = ann
        self.image_of_row = image_of_row  # database image of each descriptor row
        self.locations = locations        # (n_rows, 2) keypoint location of each descriptor row
        self.n_images = int(n_images)     # images without features still get a (zero) vote count
        self.names = list(names) if names is not None else None

    @classmethod
    def build(cls, descriptors: Sequence[np.ndarray], locations: Sequence[np.ndarray],
              names: Optional[Sequence[str]] = None, kind: str = "auto", n_cells: Optional[int] = None,
              nprobe: Optional[int] = None, seed: int = 0, refine: float = DEFAULT_REFINE,
              pq_m: Optional[int] = None) -> "LocalIndex":
        """Indexes one ``(n_i, d)`` descriptor array and ``(n_i, 2)`` location array per image
        (index settings: :meth:`~geocli.retrieval.ann.DescriptorIndex.build`)."""
        if len(descriptors) != len(locations):
            raise ValueError(f"{len(descriptors)} descriptor arrays but {len(locations)} location arrays")
        counts = np.array([len(d) for d in descriptors], dtype=np.int64)
        if any(len(loc) != n for loc, n in zip(locations, counts)):
            raise ValueError("each image needs as many locations as descriptors")
        if counts.sum() == 0:
            raise DataError("no image of the database has any local feature: nothing to index "
                            "(check extract.score_threshold against the scores the model produces)")
        image_of_row = np.repeat(np.arange(len(descriptors), dtype=np.int32), counts)
        all_locations = np.concatenate([np.asarray(loc, np.float32).reshape(-1, 2) for loc in locations])
        dim = next(np.asarray(d).shape[1] for d, n in zip(descriptors, counts) if n)
        matrix = np.concatenate([np.asarray(d, np.float32).reshape(-1, dim) for d in descriptors])
        ann = DescriptorIndex.build(matrix, kind=kind, n_cells=n_cells, nprobe=nprobe, seed=seed, refine=refine,
                                    pq_m=pq_m)
        return cls(ann, image_of_row, all_locations, len(descriptors), names)

    @classmethod
    def from_store(cls, store, names: Optional[Sequence[str]] = None, descriptor_key: str = "descriptors",
                   location_key: str = "locations", **build_kwargs) -> "LocalIndex":
        """Indexes the local features of a :class:`~geocli.retrieval.store.FeatureStore`."""
        names = store.names() if names is None else list(names)
        arrays = [store.read(name, [descriptor_key, location_key]) for name in names]
        return cls.build([a[descriptor_key] for a in arrays], [a[location_key] for a in arrays],
                         names=names, **build_kwargs)

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, folder: Union[str, Path]) -> Path:
        folder = Path(folder)
        self.ann.save(folder)
        np.save(folder / _LOCATIONS, self.locations)
        np.save(folder / _IMAGES, self.image_of_row)
        names = self.names if self.names is not None else [str(i) for i in range(self.n_images)]
        (folder / _NAMES).write_text(json.dumps(names) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "LocalIndex":
        folder = Path(folder)
        if not (folder / _NAMES).is_file():
            raise DataError(f"{folder}: not a local-feature index (no {_NAMES}); build one with `index`")
        ann = DescriptorIndex.load(folder)
        names = json.loads((folder / _NAMES).read_text(encoding="utf-8"))
        return cls(ann, np.load(folder / _IMAGES, allow_pickle=False),
                   np.load(folder / _LOCATIONS, allow_pickle=False), len(names), names)

    # ---- query ---------------------------------------------------------------------------------
    def query(self, locations: np.ndarray, descriptors: np.ndarray, k: int = DEFAULT_K,
              nprobe: Optional[int] = None, max_distance: float = np.inf, verify: Optional[int] = 100,
              min_matches: int = DEFAULT_MIN_MATCHES,
              residual_threshold: float = DEFAULT_RESIDUAL_THRESHOLD,
              refine: Optional[float] = None) -> LocalQueryResult:
        """Retrieves and verifies database images for one query image's local features.

        ``verify`` is the short-list length (``None``: every image with ``min_matches`` pairs).
        Images with fewer than ``min_matches`` putative correspondences are never verified.
        """
        locations = np.asarray(locations, dtype=np.float32).reshape(-1, 2)
        if len(locations) != len(descriptors):
            raise ValueError(f"{len(locations)} query locations but {len(descriptors)} descriptors")
        votes = np.zeros(self.n_images, dtype=np.int64)
        empty = LocalQueryResult(np.empty(0, np.int64), np.empty(0, np.int64), votes)
        if len(descriptors) == 0:
            return empty
        _, rows = self.ann.search(descriptors, k=k, nprobe=nprobe, max_distance=max_distance, refine=refine)
        query_feature = np.repeat(np.arange(len(descriptors)), rows.shape[1])
        rows = rows.ravel()
        found = rows >= 0
        query_feature, rows = query_feature[found], rows[found]
        images = self.image_of_row[rows].astype(np.int64)
        votes += np.bincount(images, minlength=self.n_images)

        candidates = np.flatnonzero(votes >= max(int(min_matches), 1))
        candidates = candidates[np.lexsort((candidates, -votes[candidates]))]
        if verify is not None:
            candidates = candidates[: max(int(verify), 0)]
        if candidates.size == 0:
            return empty
        # group only the short list's pairs (a few thousand of the ~60,000), in their original order
        short_listed = np.zeros(self.n_images, dtype=bool)
        short_listed[candidates] = True
        kept = np.flatnonzero(short_listed[images])
        by_image = kept[np.argsort(images[kept], kind="stable")]
        bounds = np.searchsorted(images[by_image], np.stack([candidates, candidates + 1]))
        inliers = np.zeros(len(candidates), dtype=np.int64)
        for c, (lo, hi) in enumerate(bounds.T):
            pairs = by_image[lo:hi]
            inliers[c] = count_inliers(locations[query_feature[pairs]], self.locations[rows[pairs]],
                                       residual_threshold=residual_threshold)
        order = np.lexsort((candidates, -votes[candidates], -inliers))
        return LocalQueryResult(candidates[order], inliers[order], votes)
