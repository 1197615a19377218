"""Cross-view geo-localization metrics: VIGOR recall@k / hit rate, and great-circle distance.

:func:`vigor_recall` follows ``validate_top`` of the VIGOR code (Zhu et al., CVPR 2021): every ground
query has one positive aerial image and three semi-positives (aerial tiles that also contain the query
location). Recall counts only the positive; the hit rate also forgives the semi-positives.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

#: Earth radius used by VIGOR's metre-level evaluation (mean radius, metres).
EARTH_RADIUS_M = 6371004.0

#: Queries per block in :func:`vigor_recall`: bounds the temporary boolean matrix to ~64 MB at 64k refs.
_QUERY_BLOCK = 1024


def vigor_recall(distances: np.ndarray, positive: np.ndarray, semi_positives: np.ndarray,
                 ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """Recall@k, recall@1% and hit rate, in percent, from a query x reference distance matrix.

    ``distances`` is ``(n_query, n_ref)``, smaller is closer (VIGOR uses ``2 - 2 * cos``);
    ``positive`` is ``(n_query,)`` reference indices; ``semi_positives`` is ``(n_query, 3)``.

    - rank = number of references *strictly* closer than the positive, so ties go in the query's
      favour (as in the reference code, ``np.sum(dist < gt_dist)``);
    - ``r@k`` counts rank < k for each k in ``ks``; ``r@1%`` counts rank < ``int(0.01 * n_ref) + 1``;
    - ``hit_rate`` counts queries where no reference other than the three semi-positives is strictly
      closer than the positive (a semi-positive ranked first is still a hit).

    Keys: ``r@<k>`` for each k, ``r@1%``, ``hit_rate``. Distances may contain +inf (never closer);
    NaN raises ValueError, since ``<`` with NaN silently counts as "not closer"; so do indices outside
    ``[0, n_ref)`` (a -1 placeholder would otherwise wrap around to the last reference).
    """
    distances = np.asarray(distances)
    positive = np.asarray(positive, dtype=np.int64).ravel()
    semi = np.asarray(semi_positives, dtype=np.int64).reshape(len(positive), -1)
    n_query, n_ref = distances.shape
    if positive.size != n_query:
        raise ValueError(f"distances has {n_query} queries but positive has {positive.size}")
    for label, index in (("positive", positive), ("semi_positives", semi)):
        if index.size and (index.min() < 0 or index.max() >= n_ref):
            raise ValueError(f"{label} indices must be in [0, {n_ref}), got {index.min()}..{index.max()}")
    if np.isnan(distances).any():
        raise ValueError("distances contain NaN; recall would silently treat them as far away")
    ranks = np.empty(n_query, dtype=np.int64)
    ranks_without_semi = np.empty(n_query, dtype=np.int64)
    for start in range(0, n_query, _QUERY_BLOCK):
        rows = np.arange(start, min(start + _QUERY_BLOCK, n_query))
        closer = distances[rows] < distances[rows, positive[rows]][:, None]
        ranks[rows] = closer.sum(axis=1)
        closer[np.arange(rows.size)[:, None], semi[rows]] = False
        ranks_without_semi[rows] = closer.sum(axis=1)
    result = {f"r@{int(k)}": 100.0 * float(np.mean(ranks < int(k))) for k in ks}
    result["r@1%"] = 100.0 * float(np.mean(ranks < int(0.01 * n_ref) + 1))
    result["hit_rate"] = 100.0 * float(np.mean(ranks_without_semi < 1))
    return result


def great_circle_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in metres between points given in degrees, on a sphere of 6,371,004 m.

    Uses the haversine form, which stays accurate for nearby points (the arccos of the spherical law of
    cosines loses metres to rounding and can leave [-1, 1] for identical points); the haversine term is
    clipped to [0, 1] so identical and antipodal points give exactly 0 and half the circumference.
    Arguments broadcast like NumPy arrays; scalars give a 0-d array.
    """
    phi1, phi2 = np.radians(np.asarray(lat1, dtype=np.float64)), np.radians(
        np.asarray(lat2, dtype=np.float64))
    d_phi = phi2 - phi1
    d_lambda = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin(d_phi / 2.0) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(d_lambda / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
