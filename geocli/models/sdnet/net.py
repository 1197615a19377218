"""SDNet's network (Xiang et al., IEEE TGRS 2022), layer for layer as the MindSpore ModelZoo port.

Two modality-specific stems (optical, SAR) end pre-ReLU at 32x32; one shared HardNet trunk maps them to
128-d L2-normalised descriptors. A ``Lower`` branch per modality squeezes the same pre-ReLU stem output
to 2x8x8 (its L2-normalised 128-d vector feeds the rank-distillation loss) and one shared decoder
reconstructs the 64x64 patch from it. Every BatchNorm is ``affine=False`` (nothing to learn), every
``Conv2d`` is bias-free and orthogonal-initialised with gain 0.6, while the decoder's transposed
convolutions keep bias and MindSpore's default initialiser (the port's isinstance check misses them).
See ``../shared/reference/sdnet.md`` (and docs/sdnet.md) for the line-by-line sources.
"""

from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from geocli.nets.dropout import Dropout

#: Side of the square patches the network reads.
PATCH = 64
#: Descriptor length.
DIM = 128


def input_norm(x):
    """Per-patch standardisation over all pixels: (x - mean) / (population std + 1e-7), as the port."""
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(axis=1, keep_dims=True)
    std = ops.sqrt(((flat - mean) ** 2).mean(axis=1, keep_dims=True))
    return ((flat - mean) / (std + 1e-7)).reshape(x.shape)


def l2_normalise(x):
    """x / sqrt(sum x^2 + 1e-10) per row (the eps inside the root, as the port's ``L2Norm``)."""
    return x / ops.sqrt((x * x).sum(axis=1, keepdims=True) + 1e-10)


def _conv(cin, cout, k=3, stride=1, pad=1):
    return nn.Conv2d(cin, cout, k, stride=stride, pad_mode="pad", padding=pad, has_bias=False)


def _bn(c):
    return nn.BatchNorm2d(c, affine=False, momentum=0.9, eps=1e-5)


def stem():
    """conv3x3 1->32, BN, ReLU, conv3x3/2 32->32, BN: 32x32x32, pre-ReLU (the port's features_opt/sar)."""
    return nn.SequentialCell([_conv(1, 32), _bn(32), nn.ReLU(), _conv(32, 32, stride=2), _bn(32)])


def trunk(dropout: float, seed: int):
    """The shared HardNet mapping from the pre-ReLU stem output to a 128x1x1 map. Its dropout is
    :class:`geocli.nets.dropout.Dropout` (reproducible in ``seed``), not ``nn.Dropout``, whose masks
    MindSpore's CPU backend does not reproduce."""
    return nn.SequentialCell([
        nn.ReLU(),
        _conv(32, 64, stride=2), _bn(64), nn.ReLU(),
        _conv(64, 64), _bn(64), nn.ReLU(),
        _conv(64, 128, stride=2), _bn(128), nn.ReLU(),
        _conv(128, 128), _bn(128), nn.ReLU(),
        Dropout(dropout, seed=seed, stream=1),
        _conv(128, DIM, k=8, pad=0), _bn(DIM),
    ])


class Lower(nn.Cell):
    """conv3x3/2 32->2, BN, AvgPool 2: the 2x8x8 code of one modality, and its L2-normalised 128-d vector."""

    def __init__(self):
        super().__init__()
        self.conv = _conv(32, 2, stride=2)
        self.bn = _bn(2)
        self.pool = nn.AvgPool2d(2, 2)

    def construct(self, feature):
        code = self.pool(self.bn(self.conv(feature)))
        return l2_normalise(code.reshape(code.shape[0], -1)), code


def _up(cin, cout):
    return nn.Conv2dTranspose(cin, cout, 2, stride=2, pad_mode="valid", has_bias=True)


class Decoder(nn.Cell):
    """Shared decoder: three (transposed conv k2/2 with bias, conv3x3, BN) blocks, 2x8x8 -> 1x64x64, tanh."""

    def __init__(self):
        super().__init__()
        self.body = nn.SequentialCell([
            _up(2, 16), _conv(16, 16), _bn(16), nn.ReLU(),
            _up(16, 16), _conv(16, 16), _bn(16), nn.ReLU(),
            _up(16, 1), _conv(1, 1), _bn(1), nn.Tanh(),
        ])

    def construct(self, code):
        return self.body(code)


class SDNet(nn.Cell):
    """(optical, SAR) patches (B,1,64,64) in [-1, 1] -> (opt_e, sar_e, opt_lower, sar_lower, opt_rec, sar_rec).

    The parts are attributes so the trainer can give each its own optimizer, as the port does:
    ``focal`` (stems + trunk), ``lower`` and ``decoder``."""

    def __init__(self, dropout: float = 0.3, init_gain: float = 0.6, seed: int = 0):
        super().__init__()
        self.features_opt = stem()
        self.features_sar = stem()
        self.embedding = trunk(dropout, seed)
        self.lower_opt = Lower()
        self.lower_sar = Lower()
        self.decoder = Decoder()
        orthogonal_init(self, init_gain, seed)

    def describe_opt(self, x):
        feature = self.features_opt(input_norm(x))
        return self._embed(feature), feature

    def describe_sar(self, x):
        feature = self.features_sar(input_norm(x))
        return self._embed(feature), feature

    def _embed(self, feature):
        e = self.embedding(feature)
        return l2_normalise(e.reshape(e.shape[0], -1))

    def construct(self, opt, sar):
        opt_e, opt_f = self.describe_opt(opt)
        sar_e, sar_f = self.describe_sar(sar)
        opt_low, opt_code = self.lower_opt(opt_f)
        sar_low, sar_code = self.lower_sar(sar_f)
        return opt_e, sar_e, opt_low, sar_low, self.decoder(opt_code), self.decoder(sar_code)

    # ---- the port's three optimizer groups ------------------------------------------------------
    def parameter_groups(self):
        """{"focal": stems + trunk, "lower": both Lower branches, "decoder": the decoder} (trainable)."""
        focal = (list(self.features_opt.trainable_params()) + list(self.features_sar.trainable_params())
                 + list(self.embedding.trainable_params()))
        lower = list(self.lower_opt.trainable_params()) + list(self.lower_sar.trainable_params())
        return {"focal": focal, "lower": lower, "decoder": list(self.decoder.trainable_params())}


class Descriptors(nn.Cell):
    """Export/inference graph: (optical, SAR) -> (opt_e, sar_e), the port's two 1x1x64x64 inputs."""

    def __init__(self, net: SDNet):
        super().__init__()
        self.net = net

    def construct(self, opt, sar):
        return self.net.describe_opt(opt)[0], self.net.describe_sar(sar)[0]


class Branch(nn.Cell):
    """Export/inference graph of one modality: patches -> 128-d descriptors."""

    def __init__(self, net: SDNet, modality: str):
        super().__init__()
        if modality not in ("optical", "sar"):
            raise ValueError(f"modality {modality!r}: choose optical or sar")
        self.net, self.optical = net, modality == "optical"

    def construct(self, x):
        if self.optical:
            return self.net.describe_opt(x)[0]
        return self.net.describe_sar(x)[0]


def orthogonal_matrix(shape, gain: float, rng: np.random.Generator) -> np.ndarray:
    """An orthogonal (out, in*kh*kw) matrix from the SVD of a Gaussian one, times ``gain`` (HardNet's
    ``orthogonal``), reshaped to ``shape``."""
    rows = shape[0]
    cols = int(np.prod(shape[1:]))
    a = rng.standard_normal((rows, cols))
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    q = u if u.shape == (rows, cols) else vt
    return (gain * q).reshape(shape).astype(np.float32)


def orthogonal_init(net: nn.Cell, gain: float, seed: int) -> None:
    """Every ``nn.Conv2d`` weight orthogonal with ``gain`` (deterministic in ``seed``); transposed convs
    are not ``nn.Conv2d`` and keep their default initialiser, exactly as in the port."""
    rng = np.random.default_rng(seed)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            cell.weight.set_data(ms.Tensor(orthogonal_matrix(cell.weight.shape, gain, rng)))
