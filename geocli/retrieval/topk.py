"""Selecting the k best of scattered candidates per group: the last step of every search here.

Both the exact global search and the IVF index end up with candidate triples (group = query, value,
index) from several chunks or cells. One sort by (group, value, index) ranks every group's
candidates, with ties going to the lower index, so results never depend on chunking.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def smallest_k_per_group(group: np.ndarray, value: np.ndarray, index: np.ndarray, n_groups: int,
                         k: int, fill_index: int = -1) -> Tuple[np.ndarray, np.ndarray]:
    """``(values, indices)``, each ``(n_groups, k)``: per group the k smallest values, ties by index.

    Groups with fewer than k candidates are padded with ``inf`` and ``fill_index``.
    """
    values = np.full((n_groups, k), np.inf, dtype=value.dtype if value.size else np.float32)
    indices = np.full((n_groups, k), fill_index, dtype=np.int64)
    order = np.lexsort((index, value, group))
    group, value, index = group[order], value[order], index[order]
    rank = np.arange(group.size) - np.searchsorted(group, group, side="left")
    keep = rank < k
    values[group[keep], rank[keep]] = value[keep]
    indices[group[keep], rank[keep]] = index[keep]
    return values, indices
