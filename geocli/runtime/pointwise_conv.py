"""1x1 stride-1 convolutions whose input gradient is one GEMM over the whole batch (part of ``--conv auto``).

Why: MindSpore 2.10's CPU ``Conv2DBackpropInput`` runs a 1x1 convolution's data gradient as oneDNN's
``gemm:jit`` on the plain NCHW layout: one small GEMM per image, ``dx[n] = W^T dy[n]``, each repacking the
whole weight matrix. Where the input has many channels and the feature map is small, the repacking
dominates. ``ONEDNN_VERBOSE`` on a Centroids-ReID training step (ResNet50 with last stride 1, batch 16,
256 x 128 px) put those layers at 2.3x PyTorch's time (1024->2048 at 16 x 8: 115 against 50 ms; five
1024->256 layers: 72 against 29 ms), while their forward pass and weight gradient matched PyTorch's.
Here the gradient is one GEMM, ``W^T`` times ``dy`` laid out as (out channels, batch x positions), with the
two transposes that layout needs: 57 against 142 ms for the 1024->2048 layer alone, and the whole
Centroids-ReID step 3,300 -> 3,160 ms (docs/performance.md, "1x1 data gradients").

A bias's gradient is a product with a vector of ones (``BiasAddGrad`` took 1.5-2.5x as long at DELF's
shapes; DELF's Keras-style convolutions all have biases): DELF's training step 3,386 -> 3,291 ms.

The forward pass and the weight gradient are MindSpore's own primitives (the ones ``nn.Conv2d`` and its
gradient use), so outputs and weight gradients are unchanged, and the choice between the GEMM and
MindSpore's kernel is made per layer when the graph is compiled, from the shapes it sees
(:func:`gemm_data_gradient`).

The cell replaces the ``nn.Conv2d`` in place with its Parameters (``geocli.runtime.blocked_conv.apply``),
keeps the original as ``plain`` so that an export puts it back, and is used only where ``--conv`` is not
``mindspore``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: the GEMM pays from this many input channels ... (ResNet50's 1x1 layers with 512-2048 input channels)
MIN_CHANNELS = 512
#: ... on feature maps of at most this many positions (gains measured at 16 x 8 and 21 x 21; at 41 x 41 a
#: 512->128 layer's gradient took 31 ms as a GEMM with its transposes against 12 ms on MindSpore's kernel)
MAX_POSITIONS = 512


def gemm_data_gradient(in_channels: int, positions: int) -> bool:
    """Whether a layer's input gradient runs as one GEMM (True) or on MindSpore's kernel.

    Measured inside Centroids-ReID's training step (``ONEDNN_VERBOSE``, docs/performance.md): MindSpore's
    kernel took 1.4-2.5x PyTorch's time on every 1x1 layer with 512 or more input channels (maps of 16 x 8
    and 32 x 16), and at most 1.3x on those with fewer, where the transposes would cost more than they save.
    On large maps the per-image GEMMs are efficient and the transposes are not free (see MAX_POSITIONS)."""
    return in_channels >= MIN_CHANNELS and positions <= MAX_POSITIONS


def takes(conv) -> bool:
    """Whether ``conv`` is a float32 NCHW 1x1 stride-1 ``nn.Conv2d`` with one group and no padding."""
    import mindspore as ms
    from mindspore import nn

    if type(conv) is not nn.Conv2d or conv.weight.dtype != ms.float32:
        return False
    stride = (conv.stride,) * 2 if isinstance(conv.stride, int) else tuple(conv.stride)
    padded = conv.pad_mode == "pad" and bool(np.any(conv.padding))
    return (tuple(conv.kernel_size) == (1, 1) and tuple(stride) == (1, 1) and conv.group == 1
            and conv.data_format == "NCHW" and not padded)


@lru_cache(maxsize=None)
def _cell_class():
    """The Cell class (built on first use, so that importing this module does not import MindSpore)."""
    import mindspore as ms
    from mindspore import nn, ops
    from mindspore.ops.operations import _grad_ops  # the weight gradient nn.Conv2d's own bprop uses

    class PointwiseKernel(nn.Cell):
        """``y = conv(x, w) (+ b)`` with the input gradient as one GEMM where :func:`gemm_data_gradient` says
        so, and the bias gradient as a matrix-vector product."""

        def __init__(self, out_channels: int, has_bias: bool):
            super().__init__()
            self.has_bias = has_bias
            self.forward = ops.Conv2D(out_channel=out_channels, kernel_size=1)
            self.bias_add = ops.BiasAdd()
            self.input_gradient = ops.Conv2DBackpropInput(out_channel=out_channels, kernel_size=1)
            self.weight_gradient = _grad_ops.Conv2DBackpropFilter(out_channel=out_channels, kernel_size=1)
            self.transposed_matmul = ops.MatMul(transpose_a=True)
            self.matmul = ops.MatMul()

        def construct(self, x, w, b):
            y = self.forward(x, w)
            if self.has_bias:
                y = self.bias_add(y, b)
            return y

        def bprop(self, x, w, b, out, dout):
            n, out_channels, h, width = dout.shape
            in_channels = x.shape[1]
            positions = h * width
            if gemm_data_gradient(in_channels, positions):  # shapes are constants: decided at compile time
                dy = dout.reshape(n, out_channels, positions).transpose(1, 0, 2).reshape(out_channels, n * positions)
                dx = self.transposed_matmul(w.reshape(out_channels, in_channels), dy)
                dx = dx.reshape(in_channels, n, positions).transpose(1, 0, 2).reshape(x.shape)
            else:
                dx = self.input_gradient(dout, w, x.shape)
            db = ops.zeros_like(b)
            if self.has_bias:  # BiasAddGrad took 1.5-2.5x as long as this product with a vector of ones
                per_image = self.matmul(dout.reshape(n * out_channels, positions), ops.ones((positions, 1), dout.dtype))
                db = per_image.reshape(n, out_channels).sum(axis=0)
            return dx, self.weight_gradient(dout, x, w.shape), db

    class PointwiseConv(nn.Cell):
        """``conv`` (a 1x1 stride-1 ``nn.Conv2d``) with its own Parameters and faster gradients."""

        def __init__(self, conv):
            super().__init__()
            object.__setattr__(self, "plain", conv)  # for blocked_conv.plain_convs(), outside the cell tree
            self.weight = conv.weight
            self.bias = conv.bias if conv.bias is not None else ms.Tensor(np.zeros(1, np.float32))
            self.kernel = PointwiseKernel(conv.out_channels, conv.bias is not None)

        def construct(self, x):
            return self.kernel(x, self.weight, self.bias)

    return PointwiseConv


def replacement(cell):
    """The :class:`PointwiseConv` for ``cell`` when :func:`takes` it, else None."""
    return _cell_class()(cell) if takes(cell) else None


__all__ = ["MIN_CHANNELS", "MAX_POSITIONS", "gemm_data_gradient", "takes", "replacement"]
