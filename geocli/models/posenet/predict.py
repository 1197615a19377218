"""Inference, evaluation and result files of PoseNet (NumPy in, NumPy out; no training here).

Evaluation follows the port's ``eval.py``: the main regressor's outputs, the predicted quaternion
normalised, translation error = Euclidean distance in metres, rotation error = ``2 acos |<q1, q2>|`` in
degrees, medians reported (``geocli.metrics.pose``). It adds the means, the share of frames under
(0.25 m, 2 deg), (0.5 m, 5 deg), (5 m, 10 deg), and the errors of always predicting the mean training
pose, the baseline a model has to beat.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from geocli.metrics.pose import pose_errors, pose_summary

POSE_COLUMNS = ("x", "y", "z", "w", "p", "q", "r")


def predict(network, batches: Iterable[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(n, 3) positions and (n, 4) unit quaternions of the main regressor for NCHW float32 batches.

    ``network`` is a MindSpore cell (inference or training network: the last two outputs are the main
    regressor's) or a runner of ``geocli.runtime.engine`` (a function over NumPy batches)."""
    run = network if not hasattr(network, "set_train") else _cell_runner(network)
    xyz, wpqr = [], []
    for batch in batches:
        outputs = run(batch)
        xyz.append(outputs[-2])
        wpqr.append(outputs[-1])
    q = np.concatenate(wpqr).astype(np.float64)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return np.concatenate(xyz).astype(np.float64), q


def _cell_runner(network):
    from geocli.runtime.engine import cell_runner

    return cell_runner(network)


def mean_pose(poses: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean position and the average rotation (principal eigenvector of sum q q^T, sign-free)."""
    q = poses[:, 3:].astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(q.T @ q)
    mean_q = vectors[:, -1]
    return poses[:, :3].astype(np.float64).mean(axis=0), mean_q if mean_q[0] >= 0 else -mean_q


def metrics(xyz: np.ndarray, q: np.ndarray, truth: np.ndarray,
            train_poses: Optional[np.ndarray] = None) -> Tuple[Dict[str, float], np.ndarray, np.ndarray]:
    """Summary (plus ``baseline_*`` of the mean training pose when given) and the per-frame errors."""
    t_err, r_err = pose_errors(xyz, q, truth[:, :3], truth[:, 3:])
    summary: Dict[str, float] = pose_summary(t_err, r_err)
    if train_poses is not None and len(train_poses):
        m_xyz, m_q = mean_pose(train_poses)
        n = len(truth)
        bt, br = pose_errors(np.tile(m_xyz, (n, 1)), np.tile(m_q, (n, 1)), truth[:, :3], truth[:, 3:])
        summary["baseline_median_t_m"] = float(np.median(bt))
        summary["baseline_median_r_deg"] = float(np.median(br))
        summary["median_t_ratio_to_baseline"] = summary["median_t_m"] / max(summary["baseline_median_t_m"], 1e-12)
    return summary, t_err, r_err


def write_per_frame(path: Path, names: List[str], xyz: np.ndarray, q: np.ndarray, truth: np.ndarray,
                    t_err: np.ndarray, r_err: np.ndarray) -> Path:
    header = ["image", *[f"pred_{c}" for c in POSE_COLUMNS], *[f"true_{c}" for c in POSE_COLUMNS],
              "t_err_m", "r_err_deg"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i, name in enumerate(names):
            writer.writerow([name, *_fmt(xyz[i]), *_fmt(q[i]), *_fmt(truth[i]), f"{t_err[i]:.4f}", f"{r_err[i]:.4f}"])
    return path


def write_predictions(out_dir: Path, names: List[str], xyz: np.ndarray, q: np.ndarray) -> List[Dict[str, Any]]:
    """``poses.csv`` and ``poses.json`` (image, x y z w p q r); returns the rows."""
    rows = [{"image": name, **{c: float(v) for c, v in zip(POSE_COLUMNS, [*xyz[i], *q[i]])}}
            for i, name in enumerate(names)]
    with open(Path(out_dir) / "poses.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", *POSE_COLUMNS])
        for row in rows:
            writer.writerow([row["image"], *_fmt([row[c] for c in POSE_COLUMNS])])
    (Path(out_dir) / "poses.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


def _fmt(values) -> List[str]:
    return [f"{float(v):.6f}" for v in values]
