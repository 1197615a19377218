"""VIGOR's network: two non-shared VGG16 trunks, an extra 2x2 max-pool, SAFA descriptors, offset head.

Reference (Jeff-Zilence/VIGOR models.py; ../shared/reference/vigor.md §3):

* ground and satellite branches are separate VGG16s to conv5_3, followed by a 2x2/2 max-pool (total
  stride 32): a 320x640 panorama gives 10x20 = 200 positions, a 320x320 tile 10x10 = 100;
* SAFA (spatial-aware feature aggregation) with 8 maps per branch: ``v = max over channels`` (B, HW),
  ``v2 = v W1 + b1`` (W1: HW x HW/2 x 8), ``v3[:, :, d] = v2[:, :, d] W2[:, :, d] + b2`` (W2: HW/2 x HW x 8),
  no activation anywhere, then ``desc[b, d, c] = sum_i feat[b, i, c] v3[b, i, d]``, flattened d-major
  (index d * C + c) into 8 * 512 = 4096 values and L2-normalised. W ~ truncated normal(0.005), b = 0.1;
* offset head FC 8192 -> 512 (ReLU) -> 2 on the concatenation [satellite, ground] of the
  UN-normalised descriptors (models.py:147-150), predicting the positive's offset / 320.

``model.layout: c-major`` (index c * 8 + d) and ``model.offset_input: normalised`` reproduce the
MindSpore port, whose head reads L2-normalised descriptors (port src/model/__init__.py:49-55).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, TruncatedNormal, initializer

from geocli.nets.pooling import MaxPool2d
from geocli.nets.vgg import VGG16Features

STRIDE = 32
LAYOUTS = ("d-major", "c-major")
OFFSET_INPUTS = ("raw", "normalised")


def positions(hw) -> int:
    h, w = int(hw[0]), int(hw[1])
    if h % STRIDE or w % STRIDE:
        raise ValueError(f"image size {h}x{w} must be a multiple of {STRIDE} (VGG16 + the extra pool)")
    return (h // STRIDE) * (w // STRIDE)


def l2_normalise(x):
    """``tf.nn.l2_normalize`` along the last axis: x / sqrt(max(sum x^2, 1e-12))."""
    return x / ops.sqrt(ops.maximum(ops.sum(x * x, -1, keepdim=True), 1e-12))  # (no Rsqrt in ONNX export)


class SAFA(nn.Cell):
    """Spatial-aware aggregation of a (B, C, h, w) map into a (B, maps * C) descriptor (not normalised).

    Parameters keep the reference's shapes (W1 HW x HW/2 x d, b1 1 x HW/2 x d, W2 HW/2 x HW x d,
    b2 1 x HW x d) so TF weights transfer one to one."""

    def __init__(self, hw: int, maps: int = 8, layout: str = "d-major"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"model.layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
        if hw < 2:
            raise ValueError(f"SAFA needs at least 2 spatial positions, the image gives {hw}")
        half = hw // 2
        self.hw, self.half, self.maps, self.d_major = hw, half, maps, layout == "d-major"
        self.w1 = Parameter(initializer(TruncatedNormal(0.005), (hw, half, maps)), name="w1")
        self.b1 = Parameter(initializer(0.1, (1, half, maps)), name="b1")
        self.w2 = Parameter(initializer(TruncatedNormal(0.005), (half, hw, maps)), name="w2")
        self.b2 = Parameter(initializer(0.1, (1, hw, maps)), name="b2")
        self.bmm = ops.BatchMatMul()

    def weights(self, v):
        """(B, HW) -> (B, maps, HW): the maps' spatial weights v3, transposed."""
        b = v.shape[0]
        v2 = ops.matmul(v, self.w1.reshape(self.hw, self.half * self.maps)).reshape(b, self.half, self.maps)
        v2 = v2 + self.b1
        v2 = ops.transpose(v2, (2, 0, 1))  # (d, B, HW/2)
        v3 = self.bmm(v2, ops.transpose(self.w2, (2, 0, 1))) + ops.transpose(self.b2, (2, 0, 1))  # (d, B, HW)
        return ops.transpose(v3, (1, 0, 2))

    def construct(self, feat):
        b, c = feat.shape[0], feat.shape[1]
        f = feat.reshape(b, c, -1)  # (B, C, HW)
        v3 = self.weights(ops.max(f, 1)[0])  # (B, d, HW)
        desc = self.bmm(v3, ops.transpose(f, (0, 2, 1)))  # (B, d, C)
        if not self.d_major:
            desc = ops.transpose(desc, (0, 2, 1))
        return desc.reshape(b, -1)


class Branch(nn.Cell):
    """VGG16 trunk -> extra 2x2 max-pool -> SAFA: image -> (L2-normalised, raw) descriptors."""

    def __init__(self, hw, batch_norm: bool, width: float, maps: int, layout: str):
        super().__init__()
        self.vgg = VGG16Features(batch_norm=batch_norm, width=width)
        self.pool = MaxPool2d(2, 2, "valid")  # argmax backward in training (geocli.nets.pooling)
        self.safa = SAFA(positions(hw), maps, layout)
        self.dim = maps * self.vgg.out_channels

    def construct(self, x):
        raw = self.safa(self.pool(self.vgg(x)))
        return l2_normalise(raw), raw


class OffsetHead(nn.Cell):
    """FC (2 x dim) -> 512 (ReLU) -> 2 on [satellite, ground]: the positive's offset / 320."""

    def __init__(self, dim: int, init: str = "reference"):
        super().__init__()
        if init == "reference":  # fc_layer of models.py: truncated normal 0.005, bias 0.1
            w, b = TruncatedNormal(0.005), 0.1
        else:  # the port: Normal(0.01), bias 0
            w, b = Normal(0.01), 0.0
        self.fc1 = nn.Dense(2 * dim, 512, weight_init=w, bias_init=b)
        self.fc2 = nn.Dense(512, 2, weight_init=w, bias_init=b)
        self.relu = nn.ReLU()

    def construct(self, sat, grd):
        return self.fc2(self.relu(self.fc1(ops.concat((sat, grd), 1))))


class VigorNet(nn.Cell):
    """``construct(panorama, tile) -> (ground descriptor, satellite descriptor, offset)``."""

    def __init__(self, pano_hw, sat_hw, batch_norm: bool = False, width: float = 1.0, maps: int = 8,
                 layout: str = "d-major", offset_input: str = "raw", head_init: str = "reference"):
        super().__init__()
        if offset_input not in OFFSET_INPUTS:
            raise ValueError(f"model.offset_input {offset_input!r}: choose one of {', '.join(OFFSET_INPUTS)}")
        self.grd = Branch(pano_hw, batch_norm, width, maps, layout)
        self.sat = Branch(sat_hw, batch_norm, width, maps, layout)
        self.head = OffsetHead(self.grd.dim, head_init)
        self.raw_offset = offset_input == "raw"
        self.dim = self.grd.dim

    def offset(self, sat, sat_raw, grd, grd_raw):
        if self.raw_offset:
            return self.head(sat_raw, grd_raw)
        return self.head(sat, grd)

    def construct(self, panorama, tile):
        g, g_raw = self.grd(panorama)
        s, s_raw = self.sat(tile)
        return g, s, self.offset(s, s_raw, g, g_raw)


def build(cfg: Dict[str, Any]) -> VigorNet:
    m, d = cfg["model"], cfg["data"]
    if m["backbone"] not in ("vgg16", "vgg16_bn"):
        raise ValueError(f"model.backbone {m['backbone']!r}: choose vgg16 (reference) or vgg16_bn (port)")
    return VigorNet(d["pano_hw"], d["sat_hw"], batch_norm=m["backbone"] == "vgg16_bn", width=m["width"],
                    maps=m["safa_maps"], layout=m["layout"], offset_input=m["offset_input"],
                    head_init=m["head_init"])


# ---- the deployable parts (export graphs, eval/retrieve inference) ------------------------------------
# Views of one VigorNet's sub-cells; ``auto_prefix=False`` so wrapping them does not rename the network's
# parameters (MindSpore re-prefixes the parameters of a cell assigned as an attribute).

class BranchGraph(nn.Cell):
    """Image (B, 3, H, W) -> (descriptor, raw descriptor) of one branch."""

    def __init__(self, branch: Branch):
        super().__init__(auto_prefix=False)  # keep the network's parameter names (checkpoints)
        self.branch = branch

    def construct(self, x):
        return self.branch(x)


def GroundGraph(net: VigorNet) -> BranchGraph:  # noqa: N802 - reads like the cell it returns
    """Panorama -> (descriptor, raw descriptor)."""
    return BranchGraph(net.grd)


def SatelliteGraph(net: VigorNet) -> BranchGraph:  # noqa: N802
    """Tile -> (descriptor, raw descriptor)."""
    return BranchGraph(net.sat)


class OffsetGraph(nn.Cell):
    """(satellite descriptor, ground descriptor) -> offset / 320; raw or normalised inputs as
    ``model.offset_input`` says (the raw ones in the reference)."""

    def __init__(self, net: VigorNet):
        super().__init__(auto_prefix=False)  # keep the network's parameter names (checkpoints)
        self.head = net.head

    def construct(self, sat, grd):
        return self.head(sat, grd)


def example_inputs(cfg: Dict[str, Any], batch: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ph, pw = cfg["data"]["pano_hw"]
    sh, sw = cfg["data"]["sat_hw"]
    return (rng.standard_normal((batch, 3, ph, pw)).astype(np.float32),
            rng.standard_normal((batch, 3, sh, sw)).astype(np.float32))


__all__ = ["SAFA", "Branch", "OffsetHead", "VigorNet", "build", "BranchGraph", "GroundGraph", "SatelliteGraph", "OffsetGraph",
           "example_inputs", "l2_normalise"]
