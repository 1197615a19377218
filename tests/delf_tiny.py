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


def use_tiny_delf(monkeypatch, checkpoint_path, stride: int = 8):
    """Make ``DelfBackend.build_network`` build the tiny network (in this process) and write a geoloc
    checkpoint of it, so CLI commands run every real code path except the ResNet50 itself."""
    from geocli import config
    from geocli.models.delf.backend import DelfBackend
    from geocli.runtime import checkpoint as ckpt

    monkeypatch.setattr(DelfBackend, "build_network", lambda self, cfg, training=False: tiny_delf(stride=stride))
    cfg = config.resolve("delf", "default", None, [])
    return ckpt.save(checkpoint_path, tiny_delf(stride=stride),
                     meta={"model": "delf", "preset": "default", "config": cfg})


#: ``--set`` options that fit the tiny network (16 channels, stride 8) and small images.
TINY_SETS = ["--set", "extract.scales=[1.0]", "--set", "extract.stride=8", "--set", "extract.pca_dim=8"]
