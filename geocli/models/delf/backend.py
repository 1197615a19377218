"""The DELF backend: the network and two-stage training (part 1); inference tasks live in tasks.py.

``build_network(cfg)`` is the extraction network (mode ``test``): NCHW float32 images normalised as
``(x - 128) / 128``, any height and width, returning ``(prob [N,1,h,w], block3 [N,1024,h,w])``. Its
parameter names are those of the training networks, so a checkpoint of ``geoloc train delf --stage
attn`` loads into it strictly (the classifiers and conv5 it does not use are left over).
"""

from __future__ import annotations

from typing import Any, Dict

from geocli.errors import ConfigError
from geocli.models.base import Backend
from geocli.models.delf.tasks import DelfTasks


def network(cfg: Dict[str, Any], mode: str, num_classes: int = 1):
    """A DelfNet in ``mode`` (tuning, attn, test) for this config."""
    from geocli.models.delf.net import DelfNet

    try:
        return DelfNet(num_classes=num_classes, mode=mode, global_pool=cfg["model"]["global_pool"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class DelfBackend(DelfTasks, Backend):
    def build_network(self, cfg, *, training=False):
        """The extraction network (``test`` mode); ``training`` only switches BatchNorm to batch statistics."""
        net = network(cfg, "test")
        net.set_train(training)
        return net


__all__ = ["DelfBackend", "network"]
