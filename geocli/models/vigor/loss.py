"""VIGOR's three losses (Jeff-Zilence/VIGOR train_overall.py; ../shared/reference/vigor.md §5).

* Weighted soft-margin triplet, both directions, on ``dist = 2 - 2 sat . grd``:
  ``sum_ij log(1 + exp(alpha (d_jj - d_ij))) / (N (N - 1))`` (ground -> satellite) and the same with
  ``d_ii`` (satellite -> ground), averaged; alpha = 10. The reference sums over the whole N x N matrix,
  diagonal included (N log 2, a constant without gradient); ``diagonal=False`` is the port's
  ``SoftTripletBiLoss`` (alpha 20 on cosine = 10 on 2 - 2 cos, off-diagonal mean).
* IoU loss ``mean((s_semi / s_pos - IoU_semi / IoU_pos)^2) / 10`` with ``s`` the cosine similarity of
  the panorama to its positive / chosen semi-positive tile; the IoU ratio comes with the batch.
* Offset loss ``mean over the batch of sum over both coordinates of (pred - delta / 320)^2, / 100``.
  The port returns it per sample without the batch mean (port src/loss/offset.py:24-26), which, with
  MindSpore's sens = ones, sums it over the batch; that artefact is not reproduced.
"""

from __future__ import annotations

from mindspore import ops


def soft_margin_triplet(sat, grd, alpha: float = 10.0, diagonal: bool = True):
    n = sat.shape[0]
    dist = 2.0 - 2.0 * ops.matmul(sat, grd.T)  # dist[i, j]: tile i, panorama j
    pos = ops.diagonal(dist)
    g2s = ops.softplus(alpha * (pos.reshape(1, -1) - dist))
    s2g = ops.softplus(alpha * (pos.reshape(-1, 1) - dist))
    if not diagonal:
        off = 1.0 - ops.eye(n, n, dist.dtype)
        g2s, s2g = g2s * off, s2g * off
    denom = float(n * (n - 1))
    return (ops.reduce_sum(g2s) / denom + ops.reduce_sum(s2g) / denom) / 2.0


def iou_loss(sat_pos, sat_semi, grd, iou_ratio):
    s_pos = ops.reduce_sum(sat_pos * grd, 1)
    s_semi = ops.reduce_sum(sat_semi * grd, 1)
    diff = s_semi / s_pos - iou_ratio
    return ops.reduce_mean(diff * diff) / 10.0


def offset_loss(pred, target):
    diff = pred - target
    return ops.reduce_mean(ops.reduce_sum(diff * diff, 1)) / 100.0
