"""Patch-matching metrics: FPR at 95 % recall (UBC Phototour / HardNet protocol) and match accuracy.

Both take one distance per patch pair (smaller = more alike) and a 0/1 label (1 = same 3-D point).
Sorting is stable, so pairs with equal distances keep their input order and results are reproducible.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def _sorted_labels(distances: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, int, int]:
    """Labels in ascending order of distance (stable), with the positive and negative counts."""
    distances = np.asarray(distances, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if distances.size != labels.size:
        raise ValueError(f"{distances.size} distances but {labels.size} labels")
    if np.isnan(distances).any():
        raise ValueError("distances contain NaN; a NaN pair has no place in the ranking")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (different) or 1 (same point)")
    sorted_labels = labels[np.argsort(distances, kind="stable")].astype(bool)
    n_pos = int(sorted_labels.sum())
    return sorted_labels, n_pos, sorted_labels.size - n_pos


def fpr_at_recall(distances: np.ndarray, labels: np.ndarray, recall: float = 0.95) -> float:
    """False-positive rate (fraction in [0, 1]) at the threshold that first reaches ``recall``.

    As in HardNet's ``ErrorRateAt95Recall``: sort pairs by ascending distance; the threshold index is
    the first index where the cumulative number of positives is ``>= recall * n_pos``; the FPR is the
    number of negatives *before* that index divided by all negatives. Ties in distance are broken by
    input order (stable sort), not averaged.

    Raises ValueError when there is no positive (recall is undefined) or no negative (FPR is 0/0),
    or when ``recall`` is outside (0, 1].
    """
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    sorted_labels, n_pos, n_neg = _sorted_labels(distances, labels)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"FPR at recall needs positives and negatives; got {n_pos} and {n_neg}")
    threshold_index = int(np.argmax(np.cumsum(sorted_labels) >= recall * n_pos))
    false_positives = threshold_index - int(sorted_labels[:threshold_index].sum())
    return false_positives / n_neg


def match_accuracy(distances: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy (fraction in [0, 1]) when the ``n_pos`` closest pairs are predicted as matches.

    The decision threshold is set from the data so that exactly as many pairs are called matches as
    there are true matches; every pair (positive and negative) then counts towards the accuracy.
    With no positives every pair is predicted a non-match (accuracy 1); equal distances at the cut are
    split by input order. Raises ValueError on an empty input.
    """
    sorted_labels, n_pos, _ = _sorted_labels(distances, labels)
    if sorted_labels.size == 0:
        raise ValueError("match accuracy of zero pairs is undefined")
    correct = int(sorted_labels[:n_pos].sum()) + int((~sorted_labels[n_pos:]).sum())
    return correct / sorted_labels.size
