"""Max-pooling whose backward pass reads the argmax its forward pass recorded.

Why: MindSpore 2.10's CPU ``MaxPoolGrad`` recomputes the pooling windows and was measured at 42 % of a
whole PoseNet training step (1,609 of 3,846 ms of kernel time at batch 16, 224 px, 2 threads), where
PyTorch's ``max_pool2d_with_indices_backward`` took 24 ms for the same pools
(``benchmarks/profile_ops.py posenet``, docs/performance.md). Here the forward pass in training mode runs
``MaxPoolWithArgmax`` (or ``MaxPoolWithArgmaxV2``, see ``_ArgmaxPool``), which returns each window's
argmax alongside the maximum, and MindSpore's own gradient of that operator (``MaxPoolGradWithArgmax``)
routes every output gradient to its argmax. A custom ``bprop`` with one ``TensorScatterElements`` did the
same until 2026-11-24 and was 3.5-7.6x slower than that kernel (GoogLeNet's 3x3 pools, batch 16).
Outputs and gradients are identical to MindSpore's own pool (both route a window's gradient to its first
maximum; tests/test_nets_pooling.py checks every size GoogLeNet and VGG use).

In eval mode the cell runs the plain ``nn.MaxPool2d``, so inference and ONNX export are unchanged.

TensorFlow 'same' padding adds the odd pixel at the bottom/right; where ``MaxPoolWithArgmaxV2`` is used
(see ``_ArgmaxPool``) it pads symmetrically, so that extra pixel is expressed with ``ceil_mode`` (a last,
partial window) instead of a padded copy of the input.
"""

from __future__ import annotations

from typing import Tuple

from mindspore import nn, ops


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow 'same' padding (before, after) of one axis: output ceil(size / stride)."""
    out = (size + stride - 1) // stride
    total = (out - 1) * stride + kernel - size
    if total < 0:  # no builtin max(): this also runs inside the compiled backward graph
        total = 0
    return total // 2, total - total // 2


class _ArgmaxPool(nn.Cell):
    """(x) -> (max, argmax); MindSpore differentiates it with the argmax (no window recomputation).

    Two MindSpore kernels return the argmax: ``MaxPoolWithArgmax`` (v1: 'same'/'valid' like the plain
    pool, argmax flat over a sample's (C, H, W)) was 2-2.5x faster here than ``MaxPoolWithArgmaxV2`` (v2:
    symmetric padding + ceil mode, argmax flat over an (H, W) plane), but its 'same' windows differ from
    TensorFlow's when stride 2 meets padding on both sides (e.g. a 3x3 / 2 pool of a 7x7 map), where v2
    is used instead. The choice is static: it depends only on the input size."""

    def __init__(self, kernel: int, stride: int, pad_mode: str):
        super().__init__()
        self.kernel, self.stride, self.pad_mode = kernel, stride, pad_mode
        self.v1 = ops.MaxPoolWithArgmax(kernel_size=kernel, strides=stride, pad_mode=pad_mode)

    def _choice(self, height: int, width: int):
        """(fast path exists, use v1, v2's symmetric padding, v2's ceil mode) for this input size: always
        a tuple of the same types, as graph mode needs. v1 is exact for 'valid', for stride 1 and where
        'same' pads nothing before the input on either axis; v2 needs the same padding on both axes.
        Any other 'same' input (e.g. 7x8 at stride 2) has no exact fast form and keeps the plain pool."""
        if self.pad_mode == "valid":
            return True, True, 0, False
        top, bottom = same_padding(height, self.kernel, self.stride)
        left, right = same_padding(width, self.kernel, self.stride)
        if self.stride == 1 or (top == 0 and left == 0):
            return True, True, 0, False
        symmetric = top == left and bottom == right and bottom - top < 2
        return symmetric, False, top, bottom > top

    def fast(self, height: int, width: int) -> bool:
        """Whether an input of this size has an exact argmax form (else the caller keeps the plain pool)."""
        return self._choice(height, width)[0]

    def construct(self, x):
        _, use_v1, pad, ceil = self._choice(x.shape[2], x.shape[3])
        if use_v1:
            return self.v1(x)
        return ops.max_pool2d(x, self.kernel, self.stride, pad, 1, True, ceil)


class MaxPool2d(nn.Cell):
    """Max-pool, ``pad_mode`` 'same' (TensorFlow) or 'valid'; fast backward in training mode wherever the
    input size has an exact argmax form (every size the networks here train at)."""

    def __init__(self, kernel: int, stride: int, pad_mode: str = "valid"):
        super().__init__()
        if pad_mode not in ("same", "valid"):
            raise ValueError(f"pad_mode {pad_mode!r}: 'same' or 'valid'")
        self.pool = nn.MaxPool2d(kernel_size=kernel, stride=stride, pad_mode=pad_mode)
        self.argmax_pool = _ArgmaxPool(kernel, stride, pad_mode)

    def construct(self, x):
        if self.training and self.argmax_pool.fast(x.shape[2], x.shape[3]):
            return self.argmax_pool(x)[0]
        return self.pool(x)
