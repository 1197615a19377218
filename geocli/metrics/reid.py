"""Person re-identification metrics: CMC and mAP under the Market-1501 protocol.

The protocol (``eval_market1501`` in torchreid / fast-reid, used by Centroids-ReID): for each query,
rank the gallery by ascending distance, drop gallery images of the same identity seen by the same
camera (they are trivially easy), and score what is left.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np


def cmc_map(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
            g_camids: np.ndarray, max_rank: int = 50,
            same_camera: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float]:
    """CMC curve (length ``max_rank``) and mAP, both as fractions in [0, 1].

    ``distmat`` is ``(n_query, n_gallery)``, smaller is more similar. Per query:

    - the gallery is sorted by ascending distance with a *stable* sort, so equal distances keep gallery
      order and results do not depend on the sort implementation;
    - gallery items with the same pid AND the same camera id as the query are removed (same pid from
      another camera stays a positive; another pid from the same camera stays a negative);
    - a query with no positive left is skipped (not counted as a miss), as in the reference;
    - CMC at rank r is 1 once any positive appears at or before r (cumulative matches clipped at 1);
    - AP is the mean, over the positives, of the precision at each positive's position.

    ``same_camera`` (optional, ``(n_query, n_gallery)`` bool) replaces the camera test for galleries whose
    items were seen by several cameras: Centroids-ReID's centroids carry the set of cameras they
    average, and a same-pid centroid is removed when the query's camera is in that set
    (:func:`camera_sets_contain` builds the matrix; ``g_camids`` is then ignored).

    ``max_rank`` larger than the gallery is clipped to the gallery size (the reference prints a note).
    When fewer than ``max_rank`` items remain for a query after removal, its CMC is extended with its
    last value (1, since the query has a positive) instead of failing on ragged arrays.
    Raises ValueError when no query has a positive in the gallery, or when shapes disagree.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids).ravel(), np.asarray(g_pids).ravel()
    q_camids, g_camids = np.asarray(q_camids).ravel(), np.asarray(g_camids).ravel()
    n_query, n_gallery = distmat.shape
    if same_camera is not None:
        same_camera = np.asarray(same_camera, dtype=bool)
        if same_camera.shape != distmat.shape:
            raise ValueError(f"same_camera is {same_camera.shape}, distmat {distmat.shape}")
        g_camids = np.zeros(n_gallery, np.int64)
    if (q_pids.size, q_camids.size) != (n_query, n_query) or (g_pids.size, g_camids.size) != (
            n_gallery, n_gallery):
        raise ValueError(f"distmat is {distmat.shape} but got {q_pids.size} query pids, "
                         f"{q_camids.size} query camids, {g_pids.size} gallery pids, "
                         f"{g_camids.size} gallery camids")
    max_rank = min(int(max_rank), n_gallery)
    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    aps = []
    for q in range(n_query):
        order = np.argsort(distmat[q], kind="stable")
        same_pid = g_pids[order] == q_pids[q]
        cam = same_camera[q, order] if same_camera is not None else g_camids[order] == q_camids[q]
        keep = ~(same_pid & cam)
        hits = same_pid[keep]
        if not hits.any():
            continue
        first_hit = int(np.argmax(hits))
        if first_hit < max_rank:
            cmc_sum[first_hit:] += 1.0
        hit_positions = np.flatnonzero(hits)
        precision_at_hits = np.arange(1, hit_positions.size + 1) / (hit_positions + 1.0)
        aps.append(float(precision_at_hits.mean()))
    if not aps:
        raise ValueError("no query has a gallery image of the same identity from another camera; "
                         "check that query and gallery pids and camera ids come from the same split")
    return cmc_sum / len(aps), float(np.mean(aps))


def camera_sets_contain(q_camids: np.ndarray, g_camsets: Sequence[Sequence[int]]) -> np.ndarray:
    """``(n_query, n_gallery)`` bool: is query i's camera among the cameras of gallery item j?

    For galleries of averaged items (centroids) that stand for images of several cameras; pass the
    result as ``same_camera`` to :func:`cmc_map`."""
    q_camids = np.asarray(q_camids).ravel()
    cams = np.unique(np.concatenate([q_camids] + [np.asarray(list(s), dtype=q_camids.dtype) for s in g_camsets]))
    column = {int(c): i for i, c in enumerate(cams)}
    member = np.zeros((len(g_camsets), len(cams)), dtype=bool)
    for j, camset in enumerate(g_camsets):
        for c in camset:
            member[j, column[int(c)]] = True
    return member[:, [column[int(c)] for c in q_camids]].T
