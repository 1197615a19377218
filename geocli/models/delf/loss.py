"""DELF's training objective per stage, as the port's ``LossFunc`` (train.py l.42-62).

* ``tuning``: softmax cross-entropy (sparse labels, batch mean) of the descriptor classifier.
* ``attn``: ``attention_loss_weight`` x cross-entropy of the attention classifier ONLY; the descriptor
  logits are computed (the port prints their accuracy every 1,000 steps) but do not enter the loss.

Cross-entropy is computed as ``-mean(log_softmax(logits)[label])``. MindSpore's fused sparse
``SoftmaxCrossEntropyWithLogits`` (the ``reduction="mean"`` path on CPU) returned +inf for single batches
once attention logits spread by more than about 100 (the softmax underflows before the log), which the
attention branch reaches: its pooled feature scales with the attention scores, in the hundreds.

Both return ``(total, *accuracies)``: the top-1 accuracy of each classifier on the batch rides along as
a logged term (the trainer differentiates only ``total``). The port clips labels to [0, 81313], a
workaround for corrupted labels copied from TF; labels here are relabelled 0..N-1 at conversion, so
there is nothing to clip.
"""

from __future__ import annotations

from mindspore import nn, ops

STAGES = ("tuning", "attn")


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy over the batch, stable for any spread of the logits."""
    picked = ops.gather_elements(ops.log_softmax(logits, axis=1), 1, ops.expand_dims(labels, 1))
    return -ops.mean(picked)


def top1(logits, labels):
    return ops.mean(ops.cast(ops.equal(ops.argmax(logits, dim=1), labels), logits.dtype))


class DelfLoss(nn.Cell):
    def __init__(self, stage: str, attention_loss_weight: float = 1.0):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"train.stage must be one of {STAGES}, not {stage!r}")
        self.stage = stage
        self.weight = float(attention_loss_weight)

    def construct(self, outputs, labels):
        if self.stage == "tuning":
            return cross_entropy(outputs, labels), top1(outputs, labels)
        attn_logits, desc_logits = outputs
        return self.weight * cross_entropy(attn_logits, labels), top1(attn_logits, labels), top1(desc_logits, labels)


def loss_names(stage: str):
    """Names of the terms after ``total`` (the trainer logs them)."""
    return ["desc_acc"] if stage == "tuning" else ["attn_acc", "desc_acc"]
