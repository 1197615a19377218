"""Max-pooling whose backward pass is a scatter of the gradient to the recorded argmax positions.

Why: MindSpore 2.10's CPU ``MaxPoolGrad`` recomputes the pooling windows and was measured at 42 % of a
whole PoseNet training step (1,609 of 3,846 ms of kernel time at batch 16, 224 px, 2 threads), where
PyTorch's ``max_pool2d_with_indices_backward`` took 24 ms for the same pools
(``benchmarks/profile_ops.py posenet``, docs/performance.md). Here the forward pass in training mode runs
``MaxPoolWithArgmaxV2``, which returns each window's argmax alongside the maximum, and the custom
``bprop`` adds every output gradient at its argmax with one ``UnsortedSegmentSum`` over the input plane.
Outputs and gradients are identical to MindSpore's own pool (both route a window's gradient to its first
maximum; tests/test_nets_pooling.py checks every size GoogLeNet and VGG use).

In eval mode the cell runs the plain ``nn.MaxPool2d``, so inference and ONNX export are unchanged.

TensorFlow 'same' padding adds the odd pixel at the bottom/right; ``MaxPoolWithArgmaxV2`` pads
symmetrically, so that extra pixel is expressed with ``ceil_mode`` (a last, partial window) instead of
a padded copy of the input.
"""

from __future__ import annotations

from typing import Tuple

import mindspore as ms
from mindspore import nn, ops


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow 'same' padding (before, after) of one axis: output ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _ArgmaxPool(nn.Cell):
    """(x) -> (max, flat argmax within each (n, c) plane); its gradient is a scatter-add to the argmax."""

    def __init__(self, kernel: int, stride: int, pad_mode: str):
        super().__init__()
        self.kernel, self.stride, self.pad_mode = kernel, stride, pad_mode

    def _options(self, height: int, width: int):
        if self.pad_mode == "valid":
            return 0, False
        (top, bottom), (left, right) = (same_padding(height, self.kernel, self.stride),
                                        same_padding(width, self.kernel, self.stride))
        if top != left or bottom != right or bottom - top not in (0, 1):
            raise ValueError(f"no symmetric + ceil-mode form of 'same' padding for a {height}x{width} input")
        return top, bottom > top

    def construct(self, x):
        pad, ceil = self._options(x.shape[2], x.shape[3])
        return ops.max_pool2d(x, self.kernel, self.stride, pad, 1, True, ceil)

    def bprop(self, x, out, dout):
        n, c, h, w = x.shape
        argmax = out[1].astype(ms.int32).reshape(n, c, -1)
        dx = ops.tensor_scatter_elements(ops.zeros((n, c, h * w), x.dtype), argmax, dout[0].reshape(n, c, -1),
                                         axis=2, reduction="add")
        return (dx.reshape(n, c, h, w),)


class MaxPool2d(nn.Cell):
    """Square max-pool, ``pad_mode`` 'same' (TensorFlow) or 'valid'; fast backward in training mode."""

    def __init__(self, kernel: int, stride: int, pad_mode: str = "valid"):
        super().__init__()
        if pad_mode not in ("same", "valid"):
            raise ValueError(f"pad_mode {pad_mode!r}: 'same' or 'valid'")
        self.pool = nn.MaxPool2d(kernel_size=kernel, stride=stride, pad_mode=pad_mode)
        self.argmax_pool = _ArgmaxPool(kernel, stride, pad_mode)

    def construct(self, x):
        if self.training:
            return self.argmax_pool(x)[0]
        return self.pool(x)
