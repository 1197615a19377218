"""VGG16 convolutional trunk (Simonyan & Zisserman 2015), with or without BatchNorm, up to conv5_3.

VIGOR's reference code (backbone/VGG.py) uses the plain VGG16 (3x3 'same' convs with bias + ReLU,
2x2 max-pools) and stops at conv5_3 without pool5; the MindSpore port uses VGG16-BN (conv without
bias -> BatchNorm -> ReLU). Layers are named ``conv<block>_<i>`` like the Caffe/Keras VGG16, so one
name map converts ImageNet checkpoints (``weights.py``). ``width`` scales every layer's channels
(1.0 is VGG16; the CPU demo uses a quarter) and is the only departure from the published trunk.
Pools are 'valid' 2x2 max-pools: exact for even sizes and exportable to ONNX; in training their backward
pass is a scatter to the argmax (:mod:`geocli.nets.pooling`, MindSpore's MaxPoolGrad is slow on CPU).
"""

from __future__ import annotations

from typing import List, Tuple

from mindspore import nn
from mindspore.common.initializer import HeNormal

from geocli.nets.pooling import MaxPool2d

#: (block, convs, channels) of VGG16.
VGG16_BLOCKS: Tuple[Tuple[int, int, int], ...] = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def conv_names() -> List[str]:
    return [f"conv{b}_{i + 1}" for b, n, _ in VGG16_BLOCKS for i in range(n)]


def scaled(channels: int, width: float) -> int:
    return max(int(round(channels * width)), 4)


class ConvUnit(nn.Cell):
    """3x3 'same' conv (+ BatchNorm) + ReLU."""

    def __init__(self, cin: int, cout: int, batch_norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, pad_mode="same", has_bias=not batch_norm,
                              weight_init=HeNormal(mode="fan_out", nonlinearity="relu"), bias_init="zeros")
        self.bn = nn.BatchNorm2d(cout, momentum=0.9, eps=1e-5) if batch_norm else None
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)


class VGG16Features(nn.Cell):
    """Image (B, 3, H, W) -> conv5_3 features (B, 512 * width, H / 16, W / 16); no pool5."""

    def __init__(self, batch_norm: bool = False, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.out_channels = scaled(512, width)
        cin = in_channels
        for block, n, channels in VGG16_BLOCKS:
            cout = scaled(channels, width)
            for i in range(n):
                setattr(self, f"conv{block}_{i + 1}", ConvUnit(cin, cout, batch_norm))
                cin = cout
        self.pool = MaxPool2d(2, 2, "valid")

    def construct(self, x):
        x = self.pool(self.conv1_2(self.conv1_1(x)))
        x = self.pool(self.conv2_2(self.conv2_1(x)))
        x = self.pool(self.conv3_3(self.conv3_2(self.conv3_1(x))))
        x = self.pool(self.conv4_3(self.conv4_2(self.conv4_1(x))))
        return self.conv5_3(self.conv5_2(self.conv5_1(x)))
