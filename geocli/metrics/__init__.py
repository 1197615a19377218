"""Evaluation metrics as pure NumPy functions that follow each published protocol exactly.

Nothing here imports MindSpore: metrics take arrays (or name lists) and return numbers, so they can be
checked against hand-computed cases and reused by any backend. One module per family:

- :mod:`~geocli.metrics.retrieval`: Oxford Buildings AP, revisited Oxford/Paris mAP and mP@k (DELF)
- :mod:`~geocli.metrics.reid`: Market-1501 CMC and mAP (Centroids-ReID)
- :mod:`~geocli.metrics.geo`: VIGOR recall@k / hit rate, great-circle distance (VIGOR)
- :mod:`~geocli.metrics.patch`: FPR at 95 % recall and match accuracy (SDNet)
- :mod:`~geocli.metrics.pose`: translation / rotation errors and their summary (PoseNet)
- :mod:`~geocli.metrics.oxford`: the Oxford5k ground-truth file parser (pure Python)
"""

from geocli.metrics.geo import great_circle_m, vigor_recall
from geocli.metrics.patch import fpr_at_recall, match_accuracy
from geocli.metrics.pose import pose_errors, pose_summary
from geocli.metrics.reid import cmc_map
from geocli.metrics.retrieval import oxford_ap, revisited_gnd, revisited_map

__all__ = [
    "cmc_map",
    "fpr_at_recall",
    "great_circle_m",
    "match_accuracy",
    "oxford_ap",
    "pose_errors",
    "pose_summary",
    "revisited_gnd",
    "revisited_map",
    "vigor_recall",
]
