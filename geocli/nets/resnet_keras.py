"""ResNet50 in the Keras style, as the DELF port builds it (research/cv/delf src/delf_model.py).

What makes it "Keras-style" rather than torchvision-style, and why it matters for ImageNet weights:

* every convolution has a bias (Keras ``Conv2D`` default), followed by BatchNorm with eps 1e-3 and
  momentum 0.99 in MindSpore's convention (``moving = 0.99 * moving + 0.01 * batch``);
* the stride of a down-sampling bottleneck sits on its FIRST 1x1 convolution and on the 1x1 shortcut
  (torchvision puts it on the 3x3);
* the stem is a 7x7/2 convolution with TensorFlow 'same' padding (2 rows/columns before, 3 after at
  even sizes) and a 3x3/2 'valid' max-pool, as in the port and TF DELF's resnet50.py.
  (keras-applications pads 3/3 explicitly instead; the weights are the same.)

Parameter names follow the Keras layer names: ``conv1``, ``bn_conv1``, then one cell per block named
like Keras (``res2a`` .. ``res5c``) holding ``branch2a``, ``bn_branch2a`` ... ``branch1``,
``bn_branch1``, with MindSpore leaves (``weight``, ``bias``, ``gamma``, ``beta``, ``moving_mean``,
``moving_variance``). :func:`module_of` maps a Keras layer to its cell (``bn4b_branch2a`` ->
``res4b.bn_branch2a``), which is all an h5 file or the port's checkpoint needs
(:mod:`geocli.models.delf.weights`). (The port renames parameters with ``update_parameters_name``;
MindSpore 2.x recomputes names from the cell tree whenever a parent is renamed, so here the tree itself
carries the names.)

The trunk is callable in two halves: :meth:`ResNet50Keras.to_conv4` (stem .. conv4_x, 1024 channels,
stride 16) and :meth:`ResNet50Keras.conv5` (conv5_x, 2048 channels). ``conv5_stride=1`` is DELF's
layout, where a 1x1/2 max-pool between the halves does the down-sampling instead (see delf/net.py);
``with_conv5=False`` builds no conv5 parameters at all (DELF's extraction network needs none).
``width`` multiplies every channel count (1.0 is ResNet50; tests use 0.25 to fit their CPU budget).

Parameter count of the full trunk: 23,587,712 (Keras ``ResNet50(include_top=False)`` reports the
same), of which 23,534,592 are trainable; the 53,120 others are BatchNorm moving means and variances,
which MindSpore also keeps as non-trainable parameters.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

from mindspore import nn

from geocli.nets.pooling import MaxPool2d

BN_EPS = 1e-3
BN_MOMENTUM = 0.99

#: (stage, number of blocks, bottleneck width, output channels, stride of the first block)
STAGES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (2, 3, 64, 256, 1),
    (3, 4, 128, 512, 2),
    (4, 6, 256, 1024, 2),
    (5, 3, 512, 2048, 2),
)


def block_names(n_blocks: int) -> List[str]:
    """Keras block letters of a stage: 'a', 'b', ..."""
    return [chr(ord("a") + i) for i in range(n_blocks)]


def keras_layers() -> List[str]:
    """Every Keras layer name that holds weights, in network order (conv before its BatchNorm)."""
    names = ["conv1", "bn_conv1"]
    for stage, n, _, _, _ in STAGES:
        for letter in block_names(n):
            base = f"{stage}{letter}_branch"
            for branch in ("2a", "2b", "2c") + (("1",) if letter == "a" else ()):
                names += [f"res{base}{branch}", f"bn{base}{branch}"]
    return names


def module_of(keras_layer: str) -> str:
    """Keras layer name -> the cell path here: ``res4b_branch2a`` -> ``res4b.branch2a``,
    ``bn4b_branch2a`` -> ``res4b.bn_branch2a``; ``conv1`` and ``bn_conv1`` keep their names."""
    if keras_layer in ("conv1", "bn_conv1"):
        return keras_layer
    m = re.fullmatch(r"(res|bn)(\d[a-z])_branch(2[abc]|1)", keras_layer)
    if m is None:
        raise KeyError(keras_layer)
    kind, block, branch = m.groups()
    return f"res{block}.branch{branch}" if kind == "res" else f"res{block}.bn_branch{branch}"


def scaled(channels: int, width: float) -> int:
    """Channels of a layer at width multiplier ``width`` (1.0: ResNet50 itself)."""
    return max(int(round(channels * width)), 1)


def parameter_shapes(with_conv5: bool = True) -> Dict[str, Tuple[int, ...]]:
    """Every parameter of :class:`ResNet50Keras` (cell path + leaf) and its shape, from the layer table
    alone (checked against the built network in tests/test_delf_weights.py)."""
    shapes: Dict[str, Tuple[int, ...]] = {}

    def conv_bn(conv_name: str, bn_name: str, cin: int, cout: int, kernel: int) -> None:
        shapes[f"{conv_name}.weight"], shapes[f"{conv_name}.bias"] = (cout, cin, kernel, kernel), (cout,)
        for leaf in ("moving_mean", "moving_variance", "gamma", "beta"):
            shapes[f"{bn_name}.{leaf}"] = (cout,)

    conv_bn("conv1", "bn_conv1", 3, 64, 7)
    cin = 64
    for stage, n, width, cout, _ in STAGES if with_conv5 else STAGES[:3]:
        for i, letter in enumerate(block_names(n)):
            block = f"res{stage}{letter}"
            conv_bn(f"{block}.branch2a", f"{block}.bn_branch2a", cin, width, 1)
            conv_bn(f"{block}.branch2b", f"{block}.bn_branch2b", width, width, 3)
            conv_bn(f"{block}.branch2c", f"{block}.bn_branch2c", width, cout, 1)
            if i == 0:
                conv_bn(f"{block}.branch1", f"{block}.bn_branch1", cin, cout, 1)
            cin = cout
    return shapes


def conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
    """A biased convolution; 1x1 kernels are 'valid', others TensorFlow 'same'."""
    pad = "valid" if kernel == 1 else "same"
    return nn.Conv2d(cin, cout, kernel, stride=stride, pad_mode=pad, has_bias=True)


def batchnorm(channels: int, momentum: float = BN_MOMENTUM) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=momentum)


class Bottleneck(nn.Cell):
    """1x1 (stride) -> 3x3 -> 1x1 with BN and ReLU, plus an identity or projection (1x1, stride) shortcut.

    Attribute names are the Keras ones without the block prefix (``branch2a``, ``bn_branch2a``, ...)."""

    #: conv -> BatchNorm pairs folded for inference (geocli.nets.fold); ``branch1`` exists on projections only
    batchnorm_pairs = (("branch2a", "bn_branch2a"), ("branch2b", "bn_branch2b"), ("branch2c", "bn_branch2c"),
                       ("branch1", "bn_branch1"))

    def __init__(self, cin: int, width: int, cout: int, stride: int, project: bool,
                 bn_momentum: float = BN_MOMENTUM):
        super().__init__()
        self.branch2a = conv(cin, width, 1, stride)
        self.bn_branch2a = batchnorm(width, bn_momentum)
        self.branch2b = conv(width, width, 3, 1)
        self.bn_branch2b = batchnorm(width, bn_momentum)
        self.branch2c = conv(width, cout, 1, 1)
        self.bn_branch2c = batchnorm(cout, bn_momentum)
        self.project = project
        if project:
            self.branch1 = conv(cin, cout, 1, stride)
            self.bn_branch1 = batchnorm(cout, bn_momentum)
        self.relu = nn.ReLU()

    def construct(self, x):
        y = self.relu(self.bn_branch2a(self.branch2a(x)))
        y = self.relu(self.bn_branch2b(self.branch2b(y)))
        y = self.bn_branch2c(self.branch2c(y))
        if self.project:
            x = self.bn_branch1(self.branch1(x))
        return self.relu(y + x)


class ResNet50Keras(nn.Cell):
    """The ResNet50 trunk without its classifier; ``construct`` returns the conv5_x map (or conv4_x
    when built ``with_conv5=False``). Blocks are attributes named like Keras (``res2a`` .. ``res5c``)
    and called one by one, which keeps every parameter name equal to its Keras layer's."""

    batchnorm_pairs = (("conv1", "bn_conv1"),)  # the stem, folded for inference (geocli.nets.fold)

    def __init__(self, conv5_stride: int = 2, with_conv5: bool = True, bn_momentum: float = BN_MOMENTUM,
                 width: float = 1.0):
        super().__init__()
        stem = scaled(64, width)
        self.conv1 = conv(3, stem, 7, 2)
        self.bn_conv1 = batchnorm(stem, bn_momentum)
        self.relu = nn.ReLU()
        self.max_pool = MaxPool2d(3, 2, "valid")  # fast backward in training (geocli.nets.pooling)
        self.with_conv5 = with_conv5
        cin = stem
        for stage, n, mid, cout, stride in STAGES if with_conv5 else STAGES[:3]:
            mid, cout = scaled(mid, width), scaled(cout, width)
            if stage == 5:
                stride = conv5_stride
            for i, letter in enumerate(block_names(n)):
                block = Bottleneck(cin, mid, cout, stride if i == 0 else 1, project=i == 0, bn_momentum=bn_momentum)
                setattr(self, f"res{stage}{letter}", block)
                cin = cout

    def to_conv4(self, x):
        """Stem .. conv4_x: 1024 channels at stride 16."""
        x = self.max_pool(self.relu(self.bn_conv1(self.conv1(x))))
        x = self.res2c(self.res2b(self.res2a(x)))
        x = self.res3d(self.res3c(self.res3b(self.res3a(x))))
        return self.res4f(self.res4e(self.res4d(self.res4c(self.res4b(self.res4a(x))))))

    def conv5(self, x):
        return self.res5c(self.res5b(self.res5a(x)))

    def construct(self, x):
        x = self.to_conv4(x)
        if self.with_conv5:
            x = self.conv5(x)
        return x


def feature_sizes(size: int) -> Tuple[int, int]:
    """(conv4_x, conv5_x) spatial size for an input side of ``size`` px with DELF's layout (conv5
    after the 1x1/2 subsampling): 321 px -> (20, 10)."""
    s = -(-size // 2)  # 7x7/2 'same'
    s = (s - 3) // 2 + 1  # 3x3/2 'valid' max-pool
    s = -(-s // 2)  # conv3_x first 1x1, stride 2, 'valid'
    s = -(-s // 2)  # conv4_x
    return s, -(-s // 2)


def count_parameters(cell, trainable_only: bool = False) -> int:
    params = cell.trainable_params() if trainable_only else cell.get_parameters()
    total = 0
    for p in params:
        n = 1
        for d in p.shape:
            n *= int(d)
        total += n
    return total
