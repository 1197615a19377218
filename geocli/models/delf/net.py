"""The DELF network (Noh et al., ICCV 2017) laid out as the MindSpore port's ``src/delf_model.py``.

    image -> ResNet50 (Keras-style) stem .. conv4_x (1024 ch, stride 16)
          -> 1x1/2 max-pool ("block3": the local-feature map, stride 32)
             |-> conv5_x (first block stride 1) -> global pool -> FC "desc" (descriptor classifier)
             '-> attention: conv1x1 1024->512, BN, ReLU, conv1x1 512->1, softplus = "prob"
                 pooled = mean over positions of (L2-normalised block3 x prob) -> FC "attn"

Modes (the port's ``state``), one network per mode with the same parameter names:

* ``tuning``: backbone + descriptor classifier; returns ``desc_logits``. No attention branch at all,
  as in the port, so a tuning checkpoint cannot be mistaken for a trained extractor.
* ``attn``: everything; returns ``(attn_logits, desc_logits)``. The attention branch reads block3
  through ``stop_gradient`` (the backbone is frozen in this stage anyway; the port freezes it by
  ``requires_grad=False``, which leaves its BatchNorm in training mode: batch statistics are used and
  moving statistics keep updating, and the same happens here).
* ``test``: backbone up to block3 + attention; returns ``(prob [N,1,h,w], block3 [N,1024,h,w])``,
  the extraction network (no conv5, no classifiers: nothing unused is computed or exported).

Global pool: ``mean`` (default, TF DELF) averages all conv5 positions; ``port`` reproduces the port's
``AvgPool2d(7, stride 7, 'valid')`` followed by a mean, which at 321 px (conv5 10x10) averages only the
top-left 7x7 window.

``bn_momentum`` is the port's 0.99 (MindSpore convention); short runs (the demo) lower it so the moving
statistics that evaluation uses catch up with the weights within a few hundred steps. ``width`` scales
every channel count (1.0: DELF; the tests train at 0.25 to fit their CPU budget).

Attention initialisers are the port's (MindSpore ``Normal(sigma, mean)``): conv1 W ~ N(0, 0.05^2),
b ~ N(-1, 1.5^2); conv2 W ~ N(1, 0.5^2), b = -0.6666; BN beta ~ N(-0.15, 0.17^2). The positive mean of
conv2's weights puts initial softplus scores in the hundreds, which extraction's fixed threshold of 100
relies on. L2 normalisation uses MindSpore's ``L2Normalize`` (``x / sqrt(max(sum x^2, 1e-4))``).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal, initializer

from geocli.nets.pooling import MaxPool2d
from geocli.nets.resnet_keras import ResNet50Keras, feature_sizes, scaled

MODES = ("tuning", "attn", "test")
GLOBAL_POOLS = ("mean", "port")
FEATURE_DIM = 1024
DESCRIPTOR_DIM = 2048


class Attention(nn.Cell):
    """Score each block3 position; pool the L2-normalised features weighted by the scores."""

    batchnorm_pairs = (("conv1", "bn"),)  # folded for inference (geocli.nets.fold; eval mode only)

    def __init__(self, channels: int = FEATURE_DIM, hidden: int = 512, bn_momentum: float = 0.99):
        super().__init__()
        f32 = ms.float32
        self.conv1 = nn.Conv2d(channels, hidden, 1, pad_mode="valid", has_bias=True,
                               weight_init=initializer(Normal(0.05, 0.0), [hidden, channels, 1, 1], f32),
                               bias_init=initializer(Normal(1.5, -1.0), [hidden], f32))
        self.bn = nn.BatchNorm2d(hidden, eps=1e-3, momentum=bn_momentum,
                                 beta_init=initializer(Normal(0.17, -0.15), [hidden], f32))
        self.conv2 = nn.Conv2d(hidden, 1, 1, pad_mode="valid", has_bias=True,
                               weight_init=initializer(Normal(0.5, 1.0), [1, hidden, 1, 1], f32),
                               bias_init=initializer(-0.6666, [1], f32))
        self.relu = nn.ReLU()
        self.softplus = ops.Softplus()
        self.l2norm = ops.L2Normalize(axis=1, epsilon=1e-4)

    def scores(self, x):
        """Softplus attention scores ("prob") [N, 1, h, w]."""
        return self.softplus(self.conv2(self.relu(self.bn(self.conv1(x)))))

    def construct(self, x):
        prob = self.scores(x)
        pooled = ops.mean(self.l2norm(x) * prob, axis=(2, 3))
        return pooled, prob


class PortGlobalPool(nn.Cell):
    """The port's AvgPool2d(7, stride 7, 'valid') then mean over the remaining positions."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(kernel_size=7, stride=7, pad_mode="valid")

    def construct(self, x):
        return ops.mean(self.pool(x), axis=(2, 3))


class MeanGlobalPool(nn.Cell):
    def construct(self, x):
        return ops.mean(x, axis=(2, 3))


class DelfNet(nn.Cell):
    def __init__(self, num_classes: int = 81313, mode: str = "test", global_pool: str = "mean",
                 bn_momentum: float = 0.99, width: float = 1.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"model.global_pool must be one of {GLOBAL_POOLS}, not {global_pool!r}")
        self.mode = mode
        self.backbone = ResNet50Keras(conv5_stride=1, with_conv5=mode != "test", bn_momentum=bn_momentum, width=width)
        features, descriptor = scaled(FEATURE_DIM, width), scaled(DESCRIPTOR_DIM, width)
        self.subsample = MaxPool2d(1, 2, "valid")  # a strided pick; argmax backward (geocli.nets.pooling)
        if mode != "test":
            self.global_pool = PortGlobalPool() if global_pool == "port" else MeanGlobalPool()
            self.desc = nn.Dense(descriptor, num_classes, weight_init="XavierUniform", bias_init="zeros")
        if mode != "tuning":
            self.attention = Attention(features, scaled(512, width), bn_momentum=bn_momentum)
        if mode == "attn":
            self.attn = nn.Dense(features, num_classes, weight_init="XavierUniform", bias_init="zeros")

    def block3(self, images):
        """The subsampled conv4_x map: DELF's local features before PCA, [N, 1024, h, w] at stride 32."""
        return self.subsample(self.backbone.to_conv4(images))

    def desc_logits(self, block3):
        return self.desc(self.global_pool(self.backbone.conv5(block3)))

    def construct(self, images):
        block3 = self.block3(images)
        if self.mode == "tuning":
            return self.desc_logits(block3)
        if self.mode == "attn":
            pooled, _ = self.attention(ops.stop_gradient(block3))
            return self.attn(pooled), self.desc_logits(block3)
        return self.attention.scores(block3), block3


def min_port_pool_size() -> int:
    """The smallest input side whose conv5 map fills the port's 7x7 pool window (197 px)."""
    size = 1
    while feature_sizes(size)[1] < 7:
        size += 1
    return size


def check_input_size(size: int, global_pool: str) -> None:
    """Raise ValueError when ``global_pool: port`` cannot run at ``size`` px."""
    conv5 = feature_sizes(size)[1]
    if global_pool == "port" and conv5 < 7:
        raise ValueError(f"model.global_pool: port needs images of at least {min_port_pool_size()} px (conv5 is "
                         f"{conv5}x{conv5} at {size} px, smaller than its 7x7 window); use model.global_pool: mean")
