"""SDNet's training loss, term by term as the port's ``Losses.py`` (itself HardNet's ``loss_HardNet``).

total = HardNet(opt_e, sar_e) + w_rec * (MSE(opt) + MSE(sar)) + w_kl * sum of six rank-distillation KLs.
Each term is returned already weighted, so the total is their plain sum and the trainer logs each one.
"""

from __future__ import annotations

from typing import Sequence, Tuple

from mindspore import nn, ops

#: Names of the weighted terms, in the order :class:`SDNetLoss` returns them after the total.
TERMS = ("hardnet", "recon_opt", "recon_sar",
         "kl_optlow_opt", "kl_sarlow_sar", "kl_sarlow_opt", "kl_optlow_sar", "kl_opt_sar", "kl_optlow_sarlow")


def distance_matrix(a, p):
    """D[i, j] = sqrt(|a_i|^2 + |p_j|^2 - 2 a_i.p_j + 1e-6) + 1e-8 (HardNet's distance_matrix_vector + eps)."""
    a2 = (a * a).sum(axis=1, keepdims=True)
    p2 = (p * p).sum(axis=1, keepdims=True)
    return ops.sqrt(a2 + p2.T - 2.0 * ops.matmul(a, p.T) + 1e-6) + 1e-8


def hardnet_loss(anchor, positive, margin: float = 1.0, anchor_swap: bool = True):
    """Triplet margin loss with the hardest in-batch negative (rows: optical anchors, columns: SAR).

    Distances below 0.008 off the diagonal (near-duplicates) are pushed out of the minimum, as HardNet."""
    d = distance_matrix(anchor, positive)
    n = d.shape[0]
    pos = d.diagonal()
    eye = ops.eye(n, n, d.dtype)
    off = d + 10.0 * eye
    off = off + 10.0 * (off < 0.008).astype(d.dtype)
    min_neg = off.min(axis=1)
    if anchor_swap:
        min_neg = ops.minimum(min_neg, off.min(axis=0))
    return ops.relu(margin + pos - min_neg).mean()


def recon_loss(x, x_hat):
    """Mean squared error over every element (the target is the loader's [-1, 1] patch)."""
    return ((x - x_hat) ** 2).mean()


def rank_kl(student, teacher, temperature: float):
    """The port's ``element_neig_rank_loss(F=student, E=teacher, t)``.

    S = 0.5 (1 + X X^T) for L2-normalised rows; P = row-softmax(S / t), diagonal included; the loss is
    the MEAN over all B x B entries of P_t (log P_t - log P_s), i.e. sum of row KLs / B^2, no detach."""
    s_low = 0.5 * (1.0 + ops.matmul(student, student.T))
    s_high = 0.5 * (1.0 + ops.matmul(teacher, teacher.T))
    log_low = ops.log_softmax(s_low / temperature, axis=1)
    log_high = ops.log_softmax(s_high / temperature, axis=1)
    return (ops.exp(log_high) * (log_high - log_low)).mean()


class SDNetLoss(nn.Cell):
    """(network outputs, optical, SAR) -> (total, *TERMS), every term already weighted."""

    def __init__(self, margin: float = 1.0, anchor_swap: bool = True, recon_weight: float = 0.001,
                 kl_weight: float = 10.0, temperature: float = 0.1):
        super().__init__()
        self.margin, self.anchor_swap = float(margin), bool(anchor_swap)
        self.recon_weight, self.kl_weight, self.temperature = float(recon_weight), float(kl_weight), float(temperature)

    def construct(self, outputs: Sequence, opt, sar) -> Tuple:
        opt_e, sar_e, opt_low, sar_low, opt_rec, sar_rec = outputs
        match = hardnet_loss(opt_e, sar_e, self.margin, self.anchor_swap)
        rec_o = self.recon_weight * recon_loss(opt, opt_rec)
        rec_s = self.recon_weight * recon_loss(sar, sar_rec)
        t, w = self.temperature, self.kl_weight
        k1 = w * rank_kl(opt_low, opt_e, t)
        k2 = w * rank_kl(sar_low, sar_e, t)
        k3 = w * rank_kl(sar_low, opt_e, t)
        k4 = w * rank_kl(opt_low, sar_e, t)
        k5 = w * rank_kl(opt_e, sar_e, t)
        k6 = w * rank_kl(opt_low, sar_low, t)
        total = match + rec_o + rec_s + k1 + k2 + k3 + k4 + k5 + k6
        return total, match, rec_o, rec_s, k1, k2, k3, k4, k5, k6
