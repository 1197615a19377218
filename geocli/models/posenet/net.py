"""PoseNet: GoogLeNet-BN with three pose regressors, laid out as in the MindSpore port.

Regressors (each predicts xyz in metres and a quaternion wpqr):

* two auxiliary ones, after inception 4a and 4d: 5x5/3 average pool -> 1x1 conv to 128 -> flatten
  (4x4x128 = 2048 at 224 px) -> FC 1024 -> ReLU -> dropout 0.3 -> {FC 512 -> FC 3 | FC 4}. As in the
  port, the two auxiliary regressors have their own 1x1 convolutions but SHARE all their FC layers,
  and there is no ReLU between FC 512 and FC 3;
* the main one, after 5b: dropout 0.5 -> 7x7 average pool -> FC 2048 -> ReLU -> dropout 0.5 ->
  {FC 3 | FC 4}.

``heads="global"`` replaces the fixed 5x5/3 and 7x7 pools with global average pooling, so the network
runs at any input size (the demo trains at 64 px, where a 5x5/3 pool would leave 128 features, not
2048); the auxiliary FC then takes 128 inputs. At 224 px the main regressor is identical either way.

``xyz_norm`` adds two frozen per-axis parameters (``xyz_mean``, ``xyz_std``): the regressors then
predict normalised positions and the network outputs ``mean + std * prediction`` in metres, so
checkpoints and exported graphs always speak metres whatever the training recipe did.

In inference (``all_heads=False``) only the main regressor runs and the outputs are ``(xyz, wpqr)``;
in training all six come back: ``(xyz1, q1, xyz2, q2, xyz3, q3)``. Parameter names do not depend on
either flag.
"""

from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from geocli.nets.dropout import Dropout, is_draw_counter
from geocli.nets.googlenet import ConvBN, GoogLeNetBN

HEAD_MODES = ("port", "global")


class GlobalAvgPool(nn.Cell):
    def construct(self, x):
        return ops.mean(x, axis=(2, 3), keep_dims=True)


class PoseNet(nn.Cell):
    def __init__(self, heads: str = "port", xyz_norm: bool = False, all_heads: bool = False,
                 aux_dropout: float = 0.3, main_dropout: float = 0.5):
        super().__init__()
        if heads not in HEAD_MODES:
            raise ValueError(f"heads must be one of {HEAD_MODES}, not {heads!r}")
        self.all_heads = all_heads
        self.xyz_norm = xyz_norm
        self.backbone = GoogLeNetBN()
        glob = heads == "global"
        self.aux_pool = GlobalAvgPool() if glob else nn.AvgPool2d(kernel_size=5, stride=3, pad_mode="valid")
        self.main_pool = GlobalAvgPool() if glob else nn.AvgPool2d(kernel_size=7, stride=1, pad_mode="valid")
        self.aux1_proj = ConvBN(512, 128, 1)
        self.aux2_proj = ConvBN(528, 128, 1)
        self.aux_fc = nn.Dense(128 if glob else 2048, 1024)
        self.aux_xyz_hidden = nn.Dense(1024, 512)
        self.aux_xyz = nn.Dense(512, 3)
        self.aux_wpqr = nn.Dense(1024, 4)
        self.aux_drop = Dropout(aux_dropout, stream=1)  # reproducible: geocli.nets.dropout
        self.main_fc = nn.Dense(1024, 2048)
        self.main_xyz = nn.Dense(2048, 3)
        self.main_wpqr = nn.Dense(2048, 4)
        self.main_drop = Dropout(main_dropout, stream=2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        if xyz_norm:
            self.xyz_mean = Parameter(Tensor(np.zeros((1, 3), np.float32)), name="xyz_mean", requires_grad=False)
            self.xyz_std = Parameter(Tensor(np.ones((1, 3), np.float32)), name="xyz_std", requires_grad=False)

    def set_xyz_normalisation(self, mean, std) -> None:
        """Store the training positions' per-axis mean and std (only with ``xyz_norm``)."""
        self.xyz_mean.set_data(Tensor(np.asarray(mean, np.float32).reshape(1, 3)))
        self.xyz_std.set_data(Tensor(np.asarray(std, np.float32).reshape(1, 3)))

    def _metres(self, xyz):
        if self.xyz_norm:
            return xyz * self.xyz_std + self.xyz_mean
        return xyz

    def _aux(self, x, proj):
        x = self.flatten(proj(self.aux_pool(x)))  # proj ends in a ReLU (the port applies a second, idle one)
        x = self.aux_drop(self.relu(self.aux_fc(x)))
        return self._metres(self.aux_xyz(self.aux_xyz_hidden(x))), self.aux_wpqr(x)

    def _main(self, x):
        x = self.flatten(self.main_pool(self.main_drop(x)))
        x = self.main_drop(self.relu(self.main_fc(x)))
        return self._metres(self.main_xyz(x)), self.main_wpqr(x)

    def construct(self, images):
        a = self.backbone.to_4a(images)
        d = self.backbone.to_4d(a)
        xyz3, q3 = self._main(self.backbone.to_5b(d))
        if not self.all_heads:
            return xyz3, q3
        xyz1, q1 = self._aux(a, self.aux1_proj)
        xyz2, q2 = self._aux(d, self.aux2_proj)
        return xyz1, q1, xyz2, q2, xyz3, q3


def count_parameters(network, trainable_only: bool = True) -> int:
    """Weights (and with ``trainable_only=False`` BatchNorm statistics too); dropout draw counters are
    random-number state, not part of the architecture, and are not counted."""
    params = network.trainable_params() if trainable_only else network.get_parameters()
    return int(sum(int(np.prod(p.shape)) for p in params if not is_draw_counter(p.name)))
