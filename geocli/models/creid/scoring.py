"""Centroids-ReID's evaluation figures from features (pure NumPy): full gallery and centroids.

Features are the post-BN embeddings; each set is L2-normalised (``TEST.FEAT_NORM``) and compared by
squared Euclidean distance (``get_euclidean``, no square root; on unit vectors it ranks as cosine).
Centroids are averaged from un-normalised features and normalised afterwards (``bases.py:232-233``).
CMC and mAP follow the Market protocol in :mod:`geocli.metrics.reid`. Figures are percentages.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from geocli.metrics.reid import camera_sets_contain, cmc_map
from geocli.models.creid import centroids as cent

RANKS = (1, 5, 10)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def squared_euclidean(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    d = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * q @ g.T
    return np.maximum(d, 0.0)


def _figures(cmc: np.ndarray, mean_ap: float, prefix: str) -> Dict[str, float]:
    out = {f"{prefix}rank{r}": float(100.0 * cmc[min(r, len(cmc)) - 1]) for r in RANKS}
    out[f"{prefix}mAP"] = float(100.0 * mean_ap)
    return out


def score(q_feats, q_pids, q_cams, g_feats, g_pids, g_cams, *, protocol: str = "fixed", centroids: bool = True,
          max_rank: int = 50) -> Dict[str, float]:
    """rank-1/5/10 and mAP (percent) against the full gallery and, with ``centroids``, against the
    centroids built under ``protocol`` (``centroids_*``), with the gallery and centroid counts."""
    q = l2_normalise(q_feats)
    g = l2_normalise(g_feats)
    cmc, mean_ap = cmc_map(squared_euclidean(q, g), q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
    out = _figures(cmc, mean_ap, "")
    out["gallery_size"] = int(len(g_pids))
    if centroids:
        c = cent.build(np.asarray(g_feats, np.float32), g_pids, g_cams, q_pids, q_cams, protocol)
        same_cam = camera_sets_contain(q_cams, c.camsets)
        cmc_c, map_c = cmc_map(squared_euclidean(q, l2_normalise(c.features)), q_pids, c.pids, q_cams,
                               np.zeros(len(c)), max_rank=max_rank, same_camera=same_cam)
        out.update(_figures(cmc_c, map_c, "centroids_"))
        out["centroids"] = int(len(c))
    return out
