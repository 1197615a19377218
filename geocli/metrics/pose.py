"""Camera-pose metrics: per-frame translation / rotation errors and their summary (PoseNet evaluation).

Quaternions are ``(w, x, y, z)`` as in the Cambridge Landmarks files. ``q`` and ``-q`` are the same
rotation, hence the absolute value of the dot product in the angle.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

#: (metres, degrees) thresholds reported by :func:`pose_summary`; a frame counts when under both.
POSE_THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


def _unit_quaternions(q: np.ndarray, label: str) -> np.ndarray:
    q = np.atleast_2d(np.asarray(q, dtype=np.float64))
    if q.shape[-1] != 4:
        raise ValueError(f"{label} must have 4 components (w, x, y, z), got shape {q.shape}")
    norms = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(norms > 0):
        raise ValueError(f"{label} has a zero quaternion; it describes no rotation")
    return q / norms


def pose_errors(t_pred: np.ndarray, q_pred: np.ndarray, t_true: np.ndarray,
                q_true: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-sample translation error (metres, Euclidean) and rotation error (degrees).

    Both quaternions are normalised first (network outputs are not unit length); the angle is
    ``2 * arccos(|<q1, q2>|)`` with the dot product clipped to 1, so identical rotations give exactly
    0 instead of NaN from rounding, and ``q`` vs ``-q`` give 0. Inputs are ``(n, 3)`` and ``(n, 4)``
    (a single sample may be 1-D); outputs are ``(n,)``. A zero quaternion raises ValueError.
    """
    t_pred = np.atleast_2d(np.asarray(t_pred, dtype=np.float64))
    t_true = np.atleast_2d(np.asarray(t_true, dtype=np.float64))
    if t_pred.shape != t_true.shape:
        raise ValueError(f"translation shapes differ: {t_pred.shape} vs {t_true.shape}")
    q1, q2 = _unit_quaternions(q_pred, "q_pred"), _unit_quaternions(q_true, "q_true")
    if q1.shape != q2.shape or q1.shape[0] != t_pred.shape[0]:
        raise ValueError(f"quaternion shapes {q1.shape}, {q2.shape} do not fit {t_pred.shape[0]} samples")
    t_err = np.linalg.norm(t_pred - t_true, axis=-1)
    dot = np.clip(np.abs(np.sum(q1 * q2, axis=-1)), 0.0, 1.0)
    r_err = np.degrees(2.0 * np.arccos(dot))
    return t_err, r_err


def pose_summary(t_err: np.ndarray, r_err: np.ndarray) -> Dict[str, float]:
    """Median and mean errors plus the percentage of frames under each (metres, degrees) pair.

    Keys: ``median_t_m``, ``median_r_deg``, ``mean_t_m``, ``mean_r_deg``, and for each threshold in
    :data:`POSE_THRESHOLDS` ``pct_<m>m_<deg>deg`` (e.g. ``pct_0.25m_2deg``): the percentage (0-100) of
    frames with ``t_err < m`` AND ``r_err < deg`` (strict, as in hloc's evaluation); ``n_frames``.
    The PoseNet paper reports the medians. An empty input raises ValueError.
    """
    t_err, r_err = np.asarray(t_err, dtype=np.float64).ravel(), np.asarray(r_err, dtype=np.float64).ravel()
    if t_err.size == 0 or t_err.size != r_err.size:
        raise ValueError(f"need equally many, non-zero errors; got {t_err.size} and {r_err.size}")
    summary = {
        "n_frames": int(t_err.size),
        "median_t_m": float(np.median(t_err)),
        "median_r_deg": float(np.median(r_err)),
        "mean_t_m": float(np.mean(t_err)),
        "mean_r_deg": float(np.mean(r_err)),
    }
    for metres, degrees in POSE_THRESHOLDS:
        key = f"pct_{metres:g}m_{degrees:g}deg"
        summary[key] = 100.0 * float(np.mean((t_err < metres) & (r_err < degrees)))
    return summary
