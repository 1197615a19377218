"""GoogLeNet (Inception v1) with BatchNorm, as in the MindSpore ModelZoo GoogLeNet and PoseNet ports.

Two details follow the ports rather than the 2014 paper, so their ImageNet checkpoints fit:

* every convolution is conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, and there is no LRN;
* the "5x5" branch of each Inception block uses a 3x3 kernel.

Max-pools use TensorFlow-style "same" padding (extra padding at the bottom/right) through MindSpore's
own ``pad_mode="same"``. It exports to ONNX (``auto_pad=SAME_UPPER``) and runs bit-exactly in
onnxruntime; only ``pad_mode="pad"`` does not export. An earlier explicit zero pad + 'valid' pool gave
the same numbers but cost a third of the network's inference time in the extra Pad copies
(docs/performance.md).

The backbone returns the three feature maps PoseNet's regressors read: after inception 4a (512
channels), 4d (528) and 5b (1024); its stages are also callable one by one (``to_4a``, ``to_4d``,
``to_5b``) so an inference graph that needs only the last map computes nothing else.
"""

from __future__ import annotations

from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal

from geocli.nets.pooling import MaxPool2d

#: (in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection) of each Inception block.
INCEPTION_WIDTHS = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


class ConvBN(nn.Cell):
    """conv (no bias, 'same' padding, TruncatedNormal(0.02)) -> BatchNorm(eps=1e-3) -> ReLU."""

    batchnorm_pairs = (("conv", "bn"),)  # geocli.nets.fold folds them for inference

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, pad_mode="same",
                              weight_init=TruncatedNormal(0.02))
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(self.bn(self.conv(x)))


class ReduceConv(nn.Cell):
    """A 1x1 reduction followed by a 3x3 convolution (Inception branches 2 and 3)."""

    def __init__(self, cin: int, mid: int, cout: int):
        super().__init__()
        self.reduce = ConvBN(cin, mid, 1)
        self.conv = ConvBN(mid, cout, 3)

    def construct(self, x):
        return self.conv(self.reduce(x))


class Inception(nn.Cell):
    """Four parallel branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool->1x1."""

    def __init__(self, cin, n1, n3r, n3, n5r, n5, npool):
        super().__init__()
        self.branch1 = ConvBN(cin, n1, 1)
        self.branch2 = ReduceConv(cin, n3r, n3)
        self.branch3 = ReduceConv(cin, n5r, n5)
        self.pool = MaxPool2d(3, 1, "same")
        self.branch4 = ConvBN(cin, npool, 1)

    def construct(self, x):
        return ops.cat((self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(self.pool(x))), axis=1)


class GoogLeNetBN(nn.Cell):
    """The convolutional trunk; ``construct`` returns the (4a, 4d, 5b) feature maps."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBN(3, 64, 7, stride=2)
        self.pool1 = MaxPool2d(3, 2, "same")
        self.conv2 = ConvBN(64, 64, 1)
        self.conv3 = ConvBN(64, 192, 3)
        self.pool2 = MaxPool2d(3, 2, "same")
        self.inception3a = Inception(*INCEPTION_WIDTHS["3a"])
        self.inception3b = Inception(*INCEPTION_WIDTHS["3b"])
        self.pool3 = MaxPool2d(3, 2, "same")
        self.inception4a = Inception(*INCEPTION_WIDTHS["4a"])
        self.inception4b = Inception(*INCEPTION_WIDTHS["4b"])
        self.inception4c = Inception(*INCEPTION_WIDTHS["4c"])
        self.inception4d = Inception(*INCEPTION_WIDTHS["4d"])
        self.inception4e = Inception(*INCEPTION_WIDTHS["4e"])
        self.pool4 = MaxPool2d(2, 2, "same")
        self.inception5a = Inception(*INCEPTION_WIDTHS["5a"])
        self.inception5b = Inception(*INCEPTION_WIDTHS["5b"])

    def to_4a(self, x):
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv3(self.conv2(x)))
        return self.inception4a(self.pool3(self.inception3b(self.inception3a(x))))

    def to_4d(self, a):
        return self.inception4d(self.inception4c(self.inception4b(a)))

    def to_5b(self, d):
        return self.inception5b(self.inception5a(self.pool4(self.inception4e(d))))

    def construct(self, x):
        a = self.to_4a(x)
        d = self.to_4d(a)
        return a, d, self.to_5b(d)
