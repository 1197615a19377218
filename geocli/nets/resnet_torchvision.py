"""ResNet50 in torchvision's v1.5 layout, so ``resnet50-19c8e357.pth`` loads into it name for name.

Layout (torchvision ``models/resnet.py``): conv1 7x7/2 -> bn1 -> [ReLU] -> max-pool 3x3/2 -> layer1..4 of
Bottlenecks (1x1 -> 3x3 -> 1x1, expansion 4) whose stride sits on the 3x3 convolution (v1.5; Caffe's
v1 put it on the first 1x1) and whose shortcut is ``downsample = (1x1 conv, BatchNorm)``. Parameter
names follow torchvision's module names (``layer1.0.conv2.weight``, ``layer2.0.downsample.1.gamma``),
only the BatchNorm leaves carry MindSpore's names (gamma, beta, moving_mean, moving_variance).

Two options serve re-identification (reid-strong-baseline, Centroids-ReID):

* ``last_stride=1`` keeps layer4 at 1/16 resolution (a 16x8 map at 256x128 instead of 8x4);
* ``stem_relu=False`` drops the ReLU after ``bn1``: the Centroids-ReID backbone comments it out
  (``modelling/backbones/resnet.py:97,125``) and its published weights and numbers come from that
  network, so a faithful port omits it.

``width`` scales every layer's channels (64 is ResNet50; the feature has ``32 * width`` channels), for
demos that must learn on two CPU cores; anything but 64 no longer loads ImageNet weights.

The max-pool has padding 1 in torchvision (padding counts as -inf). Without the stem ReLU its input
can be negative, so zero padding would change border values; the pad is therefore done explicitly
with a very negative constant, which also keeps the graph ONNX-exportable (MindSpore's exporter
cannot express a padded max-pool).
"""

from __future__ import annotations

from mindspore import nn, ops
from mindspore.common.initializer import HeNormal

from geocli.nets.pooling import MaxPool2d

#: Bottlenecks per stage of ResNet50.
RESNET50_BLOCKS = (3, 4, 6, 3)
EXPANSION = 4


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """torchvision's conv: no bias, symmetric zero padding kernel // 2, He-normal (fan_out) init."""
    pad = kernel // 2
    return nn.Conv2d(cin, cout, kernel, stride=stride, pad_mode="pad" if pad else "valid", padding=pad,
                     has_bias=False, weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))


def _bn(channels: int) -> nn.BatchNorm2d:
    """PyTorch defaults: eps 1e-5, momentum 0.1 (MindSpore's momentum is 1 - PyTorch's)."""
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9)


class Bottleneck(nn.Cell):
    batchnorm_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))  # folded for inference (geocli.nets.fold)

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: bool = False):
        super().__init__()
        self.conv1 = _conv(cin, planes, 1)
        self.bn1 = _bn(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = _bn(planes)
        self.conv3 = _conv(planes, planes * EXPANSION, 1)
        self.bn3 = _bn(planes * EXPANSION)
        self.relu = nn.ReLU()
        self.has_downsample = downsample
        if downsample:
            self.downsample = nn.SequentialCell([_conv(cin, planes * EXPANSION, 1, stride),
                                                 _bn(planes * EXPANSION)])

    def construct(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.has_downsample else x
        return self.relu(out + identity)


class PaddedMaxPool(nn.Cell):
    """3x3/2 max-pool with padding 1 where the padding never wins (see the module docstring)."""

    #: Far below any activation; finite so that nothing computes inf - inf.
    FILL = -3.0e38

    def __init__(self):
        super().__init__()
        self.pool = MaxPool2d(3, 2, "valid")  # argmax backward in training (geocli.nets.pooling)

    def construct(self, x):
        fill = ops.zeros_like(x[:, :, :1, :]) + self.FILL
        x = ops.concat((fill, x, fill), 2)
        fill = ops.zeros_like(x[:, :, :, :1]) + self.FILL
        x = ops.concat((fill, x, fill), 3)
        return self.pool(x)


class ResNet50(nn.Cell):
    """Returns the layer4 feature map (N, 32 * width, H/16 or H/32, W/16 or W/32)."""

    batchnorm_pairs = (("conv1", "bn1"),)  # the stem; the downsample pairs fold as a SequentialCell

    def __init__(self, last_stride: int = 2, stem_relu: bool = True, width: int = 64,
                 blocks=RESNET50_BLOCKS):
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, not {last_stride}")
        if width < 1:
            raise ValueError(f"width must be positive, not {width}")
        self.stem_relu = stem_relu
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, pad_mode="pad", padding=3, has_bias=False,
                               weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))
        self.bn1 = _bn(width)
        self.relu = nn.ReLU()
        self.maxpool = PaddedMaxPool()
        cin = width
        strides = (1, 2, 2, last_stride)
        for index, (n_blocks, stride) in enumerate(zip(blocks, strides)):
            planes = width * 2 ** index
            layer = []
            for b in range(n_blocks):
                s = stride if b == 0 else 1
                layer.append(Bottleneck(cin, planes, s, downsample=b == 0 and (s != 1 or cin != planes * EXPANSION)))
                cin = planes * EXPANSION
            setattr(self, f"layer{index + 1}", nn.SequentialCell(layer))
        self.out_channels = cin

    def construct(self, x):
        x = self.bn1(self.conv1(x))
        if self.stem_relu:
            x = self.relu(x)
        x = self.maxpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def feature_size(height: int, width: int, last_stride: int = 2):
    """Spatial size of the layer4 map for an input of ``height`` x ``width``."""
    h, w = height, width
    h, w = (h + 6 - 7) // 2 + 1, (w + 6 - 7) // 2 + 1  # conv1
    h, w = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1  # max-pool
    for s in (2, 2, last_stride):
        h, w = (h + 2 - 3) // s + 1, (w + 2 - 3) // s + 1
    return h, w


#: torchvision BatchNorm leaf -> MindSpore leaf.
BN_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def torchvision_name(torch_name: str) -> str | None:
    """The MindSpore name (inside this ResNet) of a torchvision ResNet parameter, or None when it has no
    counterpart here (``fc.*``, ``num_batches_tracked``). Convolution weights keep their name; a
    BatchNorm's are recognised by their module name (``bn*`` or ``downsample.1``)."""
    if torch_name.startswith("fc.") or torch_name.endswith("num_batches_tracked"):
        return None
    module, _, leaf = torch_name.rpartition(".")
    last = module.rpartition(".")[2]
    is_bn = last.startswith("bn") or module.endswith("downsample.1")
    if is_bn:
        return f"{module}.{BN_LEAVES[leaf]}" if leaf in BN_LEAVES else None
    return torch_name


def parameter_count(width: int = 64) -> int:
    """Parameters of the backbone (without fc) at ``width``; 23,508,032 at 64 (torchvision minus fc)."""
    total, cin = 3 * width * 49 + 2 * width, width
    for index, n_blocks in enumerate(RESNET50_BLOCKS):
        planes = width * 2 ** index
        for b in range(n_blocks):
            total += cin * planes + 9 * planes * planes + planes * planes * EXPANSION
            total += 2 * (2 * planes + planes * EXPANSION)
            if b == 0:
                total += cin * planes * EXPANSION + 2 * planes * EXPANSION
            cin = planes * EXPANSION
    return total


__all__ = ["ResNet50", "Bottleneck", "PaddedMaxPool", "torchvision_name", "feature_size", "parameter_count",
           "BN_LEAVES"]
