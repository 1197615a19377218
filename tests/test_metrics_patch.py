"""FPR at recall and match accuracy on hand-computed pair lists."""

import numpy as np
import pytest

from geocli.metrics.patch import fpr_at_recall, match_accuracy

DISTANCES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
LABELS = np.array([1, 0, 1, 0, 1, 0])


def test_fpr_at_recall_hand_computed():
    # 95 %: 2.85 positives -> the third positive at index 4; negatives before it: 2 of 3.
    assert fpr_at_recall(DISTANCES, LABELS) == pytest.approx(2 / 3)
    # 50 %: 1.5 -> the second positive at index 2; one negative before it.
    assert fpr_at_recall(DISTANCES, LABELS, recall=0.5) == pytest.approx(1 / 3)


def test_fpr_at_recall_is_order_independent_except_for_ties():
    order = np.array([5, 3, 0, 4, 1, 2])
    assert fpr_at_recall(DISTANCES[order], LABELS[order]) == pytest.approx(2 / 3)
    # A tie at 0.2 keeps input order (stable): the negative stays before the positive.
    assert fpr_at_recall([0.1, 0.2, 0.2, 0.3], [1, 0, 1, 0], recall=1.0) == pytest.approx(0.5)
    assert fpr_at_recall([0.1, 0.2, 0.2, 0.3], [1, 1, 0, 0], recall=1.0) == pytest.approx(0.0)


def test_fpr_at_recall_needs_both_classes():
    with pytest.raises(ValueError, match="positives and negatives"):
        fpr_at_recall([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="positives and negatives"):
        fpr_at_recall([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        fpr_at_recall([0.1, 0.2], [1, 2])


def test_match_accuracy_hand_computed():
    # 3 closest predicted matches: labels 1, 0, 1 (2 right); the rest 0, 1, 0 (2 right).
    assert match_accuracy(DISTANCES, LABELS) == pytest.approx(4 / 6)
    assert match_accuracy([0.1, 0.2, 0.9], [1, 1, 0]) == 1.0
    assert match_accuracy([0.1, 0.2], [0, 0]) == 1.0
    with pytest.raises(ValueError, match="zero pairs"):
        match_accuracy([], [])
