"""PoseNet's loss: weighted distances of the three regressors' positions and quaternions to the label.

    L = 3 D(x1) + 150 D(q1) + 3 D(x2) + 150 D(q2) + 10 D(x3) + 500 D(q3)      (the port's weights)

``reduction="batch"`` is the port's ``EuclideanDistance``: it squares the (batch, k) difference, sums
over the batch, takes the root, squares again, sums over the k components and takes the root, which is
``sqrt(sum over batch and components of diff**2)``: ONE Euclidean norm over the whole batch, not a mean
of per-frame norms. The loss therefore grows like sqrt(batch size). ``reduction="mean"`` is the paper's
per-frame ``||x - x_hat||_2`` averaged over the batch (batch-size independent, and the same under
data-parallel training as in one process).

As in the port, the label quaternion is used as stored (Cambridge quaternions are unit length) and
the predicted one is not normalised during training.

``xyz_scale`` divides position differences per axis (the train positions' std when the network
predicts normalised positions, see ``net.PoseNet``): the position terms are then measured in
normalised units while the network's outputs stay in metres.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from mindspore import Tensor, ops

REDUCTIONS = ("batch", "mean")


def distance(diff, reduction: str):
    if reduction == "batch":
        return ops.sqrt(ops.reduce_sum(diff * diff))
    return ops.reduce_mean(ops.sqrt(ops.reduce_sum(diff * diff, axis=1) + 1e-12))


class PoseLoss:
    """Callable ``(outputs, poses) -> (total, xyz part, wpqr part)`` for the trainer's forward."""

    def __init__(self, xyz_weights: Sequence[float] = (3.0, 3.0, 10.0),
                 wpqr_weights: Sequence[float] = (150.0, 150.0, 500.0), reduction: str = "batch",
                 xyz_scale: Optional[Sequence[float]] = None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
        if len(xyz_weights) != 3 or len(wpqr_weights) != 3:
            raise ValueError("need one position and one rotation weight per regressor (3 each)")
        self.xyz_weights = [float(w) for w in xyz_weights]
        self.wpqr_weights = [float(w) for w in wpqr_weights]
        self.reduction = reduction
        scale = np.ones(3, np.float32) if xyz_scale is None else np.asarray(xyz_scale, np.float32)
        self.inv_scale = Tensor((1.0 / scale).reshape(1, 3))

    def __call__(self, outputs, poses):
        xyz_true, q_true = poses[:, :3], poses[:, 3:]
        xyz_part = 0.0
        wpqr_part = 0.0
        for head in range(3):
            xyz, q = outputs[2 * head], outputs[2 * head + 1]
            xyz_part += self.xyz_weights[head] * distance((xyz - xyz_true) * self.inv_scale, self.reduction)
            wpqr_part += self.wpqr_weights[head] * distance(q - q_true, self.reduction)
        return xyz_part + wpqr_part, xyz_part, wpqr_part

