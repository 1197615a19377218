"""A tiny stand-in of DELF's extraction network for fast tests: the same interface as
``DelfBackend.build_network(cfg)`` in eval mode (NCHW (x-128)/128 in; prob [N,1,h,w] softplus scores and
features [N,C,h,w] on a stride-``stride`` grid out), a few hundred parameters, deterministic weights."""

import numpy as np


def tiny_delf(stride: int = 8, channels: int = 16, seed: int = 0, score_scale: float = 300.0):
    import mindspore as ms
    from mindspore import nn, ops

    class TinyDelf(nn.Cell):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(seed)
            self.conv = nn.Conv2d(3, channels, stride, stride=stride, pad_mode="valid", has_bias=True,
                                  weight_init=ms.Tensor(rng.normal(0, 0.05, (channels, 3, stride, stride)),
                                                        ms.float32))
            self.score = nn.Conv2d(channels, 1, 1, has_bias=True,
                                   weight_init=ms.Tensor(rng.normal(0, 1.0, (1, channels, 1, 1)), ms.float32))
            self.softplus = ops.Softplus()
            self.scale = score_scale

        def construct(self, x):
            feats = ops.relu(self.conv(x))
            return self.softplus(self.score(feats)) * self.scale, feats

    net = TinyDelf()
    net.set_train(False)
    return net
