"""BatchNorm folding for inference: conv -> BatchNorm (moving statistics) becomes one conv with a bias.

Why: MindSpore's CPU graph does not fuse an eval-mode BatchNorm into the convolution before it, so every
BatchNorm is one more pass over a whole activation. Measured on this project's 2-core machine
(``benchmarks/profile_ops.py sdnet --part infer``, batch 64): BatchNorm took 21 of the 119 ms of SDNet's
descriptor graph. Folding is exact algebra, ``w' = w * g / sqrt(v + eps)`` and
``b' = (b - m) * g / sqrt(v + eps) + beta``; only float rounding differs (1e-5 relative).

The fold changes the cells it is given, so :func:`folded_copy` folds a fresh network that holds a copy
of the weights: the caller's network (a training run's, or one about to be exported or saved, whose
checkpoint names must not change) is never touched.
"""

from __future__ import annotations

from typing import Callable, List

import numpy as np
import mindspore as ms
from mindspore import nn

from geocli.nets.random_state import random_state_kept

#: A cell may list further (conv attribute, BatchNorm attribute) pairs of its own under this name, for
#: pairs that are attributes rather than neighbours in a ``SequentialCell`` (GoogLeNet's ``ConvBN``).
PAIRS_ATTRIBUTE = "batchnorm_pairs"


def folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` with a bias computing ``bn(conv(x))`` with ``bn``'s moving statistics."""
    scale = bn.gamma.asnumpy() / np.sqrt(bn.moving_variance.asnumpy() + bn.eps)
    bias = conv.bias.asnumpy() if conv.has_bias else np.zeros(conv.out_channels, np.float32)
    weight = conv.weight.asnumpy() * scale.reshape(-1, *([1] * (conv.weight.ndim - 1)))
    bias = (bias - bn.moving_mean.asnumpy()) * scale + bn.beta.asnumpy()
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    pad_mode=conv.pad_mode, padding=conv.padding, dilation=conv.dilation, group=conv.group,
                    has_bias=True, data_format=conv.data_format)
    new.weight.set_data(ms.Tensor(weight.astype(np.float32)))
    new.bias.set_data(ms.Tensor(bias.astype(np.float32)))
    return new


def _foldable(conv, bn) -> bool:
    return isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.gamma.shape[0] == conv.out_channels


def fold_batchnorm(root: nn.Cell) -> int:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d in a ``SequentialCell`` and every
    pair a cell lists in ``batchnorm_pairs``; the BatchNorm becomes ``nn.Identity``. Returns the number of
    folds. For eval-mode use only: the folded network no longer trains or loads checkpoints."""
    edits: List[Callable[[], None]] = []
    for _, cell in root.cells_and_names():
        if isinstance(cell, nn.SequentialCell):
            for i in range(len(cell) - 1):
                if _foldable(cell[i], cell[i + 1]):
                    edits.append(lambda c=cell, i=i: _fold_sequential(c, i))
        for conv_name, bn_name in getattr(cell, PAIRS_ATTRIBUTE, ()):  # absent ones are skipped (optional branches)
            if _foldable(getattr(cell, conv_name, None), getattr(cell, bn_name, None)):
                edits.append(lambda c=cell, a=conv_name, b=bn_name: _fold_attributes(c, a, b))
    with random_state_kept():  # each new Conv2d draws initial weights it overwrites at once
        for edit in edits:
            edit()
    return len(edits)


def _fold_sequential(cell: nn.SequentialCell, i: int) -> None:
    conv = folded_conv(cell[i], cell[i + 1])
    cell[i] = conv
    cell[i + 1] = nn.Identity()


def _fold_attributes(cell: nn.Cell, conv_name: str, bn_name: str) -> None:
    conv = folded_conv(getattr(cell, conv_name), getattr(cell, bn_name))
    setattr(cell, conv_name, conv)
    setattr(cell, bn_name, nn.Identity())


def folded_copy(build: Callable[[], nn.Cell], network: nn.Cell) -> nn.Cell:
    """``build()`` (a network of the same architecture as ``network``) with ``network``'s current weights
    and statistics copied in, then folded, in eval mode. ``network`` itself is left as it was, and so are
    the process's random streams (:mod:`geocli.nets.random_state`).

    Parameters are paired in order, not by name: wrapping a network in an export graph prefixes its
    parameter names in MindSpore, so the names of ``network`` may no longer be ``build()``'s."""
    with random_state_kept():  # the fresh weights are overwritten at once; later draws must not move
        fresh = build()
    own, theirs = list(fresh.get_parameters()), list(network.get_parameters())
    if len(own) != len(theirs) or any(a.shape != b.shape for a, b in zip(own, theirs)):
        raise ValueError(f"folded_copy: the rebuilt network ({len(own)} parameters) is not the architecture of "
                         f"the given one ({len(theirs)})")
    for target, source in zip(own, theirs):
        target.set_data(ms.Tensor(source.asnumpy()))
    fold_batchnorm(fresh)
    fresh.set_train(False)
    return fresh
