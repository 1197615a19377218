"""The Centroids-ReID network: ResNet50 (last stride 1, no stem ReLU) -> global average pooling -> BNNeck.

As the reference (``modelling/baseline.py``, ``modelling/bases.py:72-87``):

* backbone: torchvision-layout ResNet50 with ``last_stride=1`` (a 2048x16x8 map at 256x128) and
  without the ReLU after the stem's BatchNorm (the reference comments it out; its weights and figures
  come from that network);
* ``bnneck``: BatchNorm1d(2048), weight 1, bias 0, eps 1e-5, PyTorch momentum 0.1, with its bias
  (``beta``) FROZEN: it is not trainable, so it is in no optimizer and gets no weight decay;
* ``classifier``: Dense(2048, n_classes) without bias, initialised N(0, 0.001^2), on the post-BN
  feature (training only);
* ``centers``: the centre loss's class centres (n_classes x 2048, initialised from randn), trained by
  their own SGD (training only).

Inference (and the exported graph) returns the post-BN feature, un-normalised: evaluation L2-normalises
it, and centroids are means of un-normalised features (``bases.py:232-233``). In training the network
returns ``(pre-BN feature, post-BN feature, logits)``. Parameter names do not depend on the mode, so a
training checkpoint loads into the inference network (classifier and centres are then unused).
"""

from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal

from geocli.nets.resnet_torchvision import ResNet50


class CentroidsReID(nn.Cell):
    def __init__(self, n_classes: int = 0, *, width: int = 64, last_stride: int = 1, stem_relu: bool = False,
                 training: bool = False, seed: int = 0):
        super().__init__()
        if training and n_classes < 2:
            raise ValueError(f"training needs at least 2 identities, got {n_classes}")
        self.training_outputs = training
        self.backbone = ResNet50(last_stride=last_stride, stem_relu=stem_relu, width=width)
        self.dim = self.backbone.out_channels
        self.bnneck = nn.BatchNorm1d(self.dim, eps=1e-5, momentum=0.9)
        self.bnneck.beta.requires_grad = False
        if training:
            self.classifier = nn.Dense(self.dim, n_classes, has_bias=False, weight_init=Normal(0.001))
            centres = np.random.default_rng(seed).standard_normal((n_classes, self.dim)).astype(np.float32)
            self.centers = Parameter(Tensor(centres), name="centers")

    def construct(self, images):
        feat = ops.mean(self.backbone(images), axis=(2, 3))
        bn = self.bnneck(feat)
        if self.training_outputs:
            return feat, bn, self.classifier(bn)
        return bn
