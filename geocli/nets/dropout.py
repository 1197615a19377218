"""Dropout whose masks are a pure function of (seed, stream, draw number): the same run twice gives the
same network, and ``--resume`` continues the mask sequence exactly.

Why not ``mindspore.nn.Dropout``: on MindSpore 2.10's CPU backend its masks are not reproducible, even
after ``mindspore.set_seed``. Measured on this project's machine: one jitted ``value_and_grad`` of
conv -> Dropout(0.3) run 10 times gave a different loss in each of four processes, and two 60-step SDNet
trainings with the same seed ended 50 apart in a BatchNorm statistic (identical with dropout off). That
made training results, the demo's figures and a registration test vary from run to run.

How: each call draws one 32-bit key from its draw counter, then hashes ``element index + key`` with a
bijective 32-bit integer mixer (Wellons' ``lowbias32``: xor-shift / multiply rounds, uint32 arithmetic
wrapping as in C); the hash compared with ``keep * 2**32`` gives a Bernoulli(keep) mask, kept
elements scaled by ``1 / keep`` (inverted dropout, as ``nn.Dropout`` and PyTorch). The counter is a
non-trainable parameter (``...dropout_draws``) advanced inside the graph, so it is saved in checkpoints;
checkpoints without it (older ones, converted weights) load with the counter at 0. In evaluation mode the
cell is the identity and draws nothing, so exported graphs are unchanged.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

#: Name suffix of the draw counters; :func:`is_draw_counter` tells them apart from weights.
DRAWS = "dropout_draws"

_U32 = ms.uint32
_GOLDEN = 0x9E3779B9  # spreads consecutive draw numbers over the 32-bit key space


def is_draw_counter(name: str) -> bool:
    """True for a dropout draw counter: state that may be absent from a checkpoint (it starts at 0)."""
    return name == DRAWS or name.endswith("." + DRAWS)


def _xorshift(x, k: int):
    # x >> k written as x // 2**k: the same bits, and MindSpore 2.10's CPU FloorDiv ran 1.45x faster than
    # its RightShift here (whole mixer over 524k elements: 7.8 against 11.3 ms)
    return ops.bitwise_xor(x, ops.floor_divide(x, Tensor(1 << k, _U32)))


def mix32(x):
    """Wellons' lowbias32 on a uint32 tensor: a bijection whose output bits look independent."""
    x = _xorshift(x, 16) * Tensor(0x7FEB352D, _U32)
    x = _xorshift(x, 15) * Tensor(0x846CA68B, _U32)
    return _xorshift(x, 16)


def mix32_numpy(x: np.ndarray) -> np.ndarray:
    """:func:`mix32` in NumPy (the tests check the graph against it)."""
    x = np.asarray(x, np.uint32)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint32(16))) * np.uint32(0x7FEB352D)
        x = (x ^ (x >> np.uint32(15))) * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


class Dropout(nn.Cell):
    """Inverted dropout with probability ``p``, reproducible in ``seed`` (None: MindSpore's global seed at
    construction, which ``geoloc train --seed`` sets) and ``stream`` (tells the dropouts of one network
    apart)."""

    def __init__(self, p: float, seed: Optional[int] = None, stream: int = 0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p}: must be in [0, 1)")
        self.p = float(p)
        self.keep = 1.0 - self.p
        if seed is None:
            seed = ms.get_seed() or 0
        salt = mix32_numpy(np.uint32((int(seed) * 0x85EBCA6B + int(stream) * 0xC2B2AE35) & 0xFFFFFFFF))
        self.salt = Tensor(np.asarray(salt, np.uint32), _U32)
        self.threshold = min(int(round(self.keep * 2.0 ** 32)), 0xFFFFFFFF)
        self._threshold = Tensor(self.threshold, _U32)
        self.dropout_draws = Parameter(Tensor(0, ms.int32), name=DRAWS, requires_grad=False)

    def construct(self, x):
        if not self.training or self.p == 0.0:
            return x
        draw = self.dropout_draws + 0  # the number of this draw, read before the counter moves on
        ops.assign_add(self.dropout_draws, Tensor(1, ms.int32))
        key = mix32(draw.astype(_U32) * Tensor(_GOLDEN, _U32) + self.salt)
        index = ops.arange(0, x.size, dtype=ms.int32).astype(_U32).reshape(x.shape)
        mask = ops.stop_gradient((mix32(index + key) < self._threshold).astype(x.dtype))
        return x * mask * (1.0 / self.keep)

    def extend_repr(self):
        return f"p={self.p}"
