"""DELF's training objective per stage, as the port's ``LossFunc`` (train.py l.42-62).

* ``tuning``: softmax cross-entropy (sparse labels, batch mean) of the descriptor classifier.
* ``attn``: ``attention_loss_weight`` x cross-entropy of the attention classifier ONLY; the descriptor
  logits are computed (the port prints their accuracy every 1,000 steps) but do not enter the loss.

Both return ``(total, *accuracies)``: the top-1 accuracy of each classifier on the batch rides along as
a logged term (the trainer differentiates only ``total``). The port clips labels to [0, 81313], a
workaround for corrupted labels copied from TF; labels here are relabelled 0..N-1 at conversion, so
there is nothing to clip.
"""

from __future__ import annotations

from mindspore import nn, ops

STAGES = ("tuning", "attn")


def top1(logits, labels):
    return ops.mean(ops.cast(ops.equal(ops.argmax(logits, dim=1), labels), logits.dtype))


class DelfLoss(nn.Cell):
    def __init__(self, stage: str, attention_loss_weight: float = 1.0):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"train.stage must be one of {STAGES}, not {stage!r}")
        self.stage = stage
        self.weight = float(attention_loss_weight)
        self.ce = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def construct(self, outputs, labels):
        if self.stage == "tuning":
            return self.ce(outputs, labels), top1(outputs, labels)
        attn_logits, desc_logits = outputs
        return self.weight * self.ce(attn_logits, labels), top1(attn_logits, labels), top1(desc_logits, labels)


def loss_names(stage: str):
    """Names of the terms after ``total`` (the trainer logs them)."""
    return ["desc_acc"] if stage == "tuning" else ["attn_acc", "desc_acc"]
