"""Centroids-ReID's four losses, as the reference computes them (``train_ctl_model.py:55-152``).

* label-smoothed cross-entropy (epsilon 0.1) on the classifier's logits of the POST-BN feature
  (``losses/triplet_loss.py:187-205``): targets (1 - eps) * one-hot + eps / N, summed over classes,
  averaged over the batch;
* batch-hard triplet loss (margin 0.5) on the PRE-BN feature: true Euclidean distances
  ``sqrt(max(d^2, 1e-12))``, no normalisation; per anchor the farthest positive (itself included, as
  in the reference) and the nearest negative; ``mean(max(0, d_ap - d_an + margin))``;
* centre loss on the pre-BN feature: ``sum_i ||x_i - c_{y_i}||^2 / B`` with no 1/2 factor, each term
  clamped to [1e-12, 1e12] (``losses/center_loss.py:35-46``); weighted 5e-4 in the total. The
  reference multiplies the centres' gradients by 1/5e-4 before its centre SGD steps
  (``train_ctl_model.py:157-159``), i.e. the centres move by the UNweighted loss's gradient while the
  features get the weighted one. :func:`weighted_center_loss` builds exactly those two gradients in one
  backward pass (see there), so the centres' optimizer needs no gradient scaling;
* centroid triplet loss: for each rotation r = 0..K-1 of a batch laid out as P blocks of K, the r-th
  image of every identity is a query and the mean of that identity's OTHER K-1 images its centroid
  (leave-one-out, not detached); the same batch-hard triplet loss then runs over the 2P vectors
  {queries, centroids} with the labels duplicated, so centroids are anchors too and queries can be
  each other's negatives; the loss is the mean over the K rotations.

The batch comes from the P x K sampler, so every sample is real: the reference's ``isReal`` masks for
zero "mock" images are not needed (docs/creid.md). ``k`` is static, so the rotation loop unrolls
into the compiled graph.
"""

from __future__ import annotations

from mindspore import nn, ops


def pairwise_distances(x):
    """Euclidean distances between the rows of ``x``: sqrt(clamp(|a|^2 + |b|^2 - 2 a.b, 1e-12))."""
    sq = ops.sum(x * x, dim=1, keepdim=True)
    d2 = sq + sq.T - 2.0 * ops.matmul(x, x.T)
    return ops.sqrt(ops.clamp(d2, min=1e-12))


def batch_hard_triplet(x, labels, margin: float):
    """Mean over anchors of max(0, hardest positive - hardest negative + margin)."""
    dist = pairwise_distances(x)
    same = ops.equal(labels.reshape(-1, 1), labels.reshape(1, -1))
    big = ops.max(dist)[0] + 1.0
    hardest_pos = ops.max(ops.where(same, dist, ops.zeros_like(dist)), axis=1)[0]
    hardest_neg = ops.min(ops.where(same, ops.ones_like(dist) * big, dist), axis=1)[0]
    return ops.mean(ops.relu(hardest_pos - hardest_neg + margin))


def label_smoothed_ce(logits, labels, epsilon: float):
    n_classes = logits.shape[1]
    log_probs = ops.log_softmax(logits, axis=1)
    onehot = ops.one_hot(labels, n_classes, ops.ones((), logits.dtype), ops.zeros((), logits.dtype))
    targets = (1.0 - epsilon) * onehot + epsilon / n_classes
    return ops.mean(ops.sum(-targets * log_probs, dim=1))


def center_loss(x, labels, centers):
    diff = x - ops.gather(centers, labels, 0)
    per_sample = ops.clamp(ops.sum(diff * diff, dim=1), 1e-12, 1e12)
    return ops.sum(per_sample) / x.shape[0]


def weighted_center_loss(x, labels, centers, weight: float):
    """``weight * center_loss`` in value; gradient ``weight * dL/dx`` for the features and ``dL/dc`` (not
    scaled by ``weight``) for the centres, as the reference's gradient rescaling does:
    ``weight * L(x, sg(c)) + L(sg(x), c) - sg(L(sg(x), c))``, where sg stops gradients; the last two
    terms cancel in value."""
    sg = ops.stop_gradient
    for_features = center_loss(x, labels, sg(centers)) * weight
    for_centres = center_loss(sg(x), labels, centers)
    return for_features + (for_centres - sg(for_centres))  # the bracket is exactly 0 in value


def centroid_triplet(x, labels, k: int, margin: float):
    """The centroid triplet loss of a batch of P contiguous blocks of ``k`` images (see module doc)."""
    p = x.shape[0] // k
    blocks = x.reshape(p, k, -1)
    ids = labels.reshape(p, k)[:, 0]
    both = ops.concat((ids, ids))
    total = ops.sum(blocks, dim=1)
    loss = 0.0
    for r in range(k):
        query = blocks[:, r, :]
        centroid = (total - query) / (k - 1)
        loss = loss + batch_hard_triplet(ops.concat((query, centroid), 0), both, margin)
    return loss / k


class CReIDLoss(nn.Cell):
    """All terms of one batch: ``(total, xent, triplet, center, centroid)``.

    ``center`` is already weighted (as the reference logs it). The coupled weight decay is not a loss
    term: the optimizer adds it (``OptimizerSpec.decay_all``), as ``torch.optim.Adam(weight_decay=...)``
    does in the reference, whose logged loss does not include it either."""

    def __init__(self, network, k: int, *, margin: float = 0.5, epsilon: float = 0.1,
                 center_weight: float = 5e-4, xent_weight: float = 1.0, triplet_weight: float = 1.0,
                 centroid_weight: float = 1.0):
        super().__init__(auto_prefix=False)
        self.network = network
        self.k, self.margin, self.epsilon = int(k), float(margin), float(epsilon)
        self.center_weight, self.xent_weight = float(center_weight), float(xent_weight)
        self.triplet_weight, self.centroid_weight = float(triplet_weight), float(centroid_weight)

    def construct(self, images, labels):
        feat, bn, logits = self.network(images)
        xent = label_smoothed_ce(logits, labels, self.epsilon) * self.xent_weight
        triplet = batch_hard_triplet(feat, labels, self.margin) * self.triplet_weight
        center = weighted_center_loss(feat, labels, self.network.centers, self.center_weight)
        centroid = centroid_triplet(feat, labels, self.k, self.margin) * self.centroid_weight
        return xent + triplet + center + centroid, xent, triplet, center, centroid
