"""An inference network holding a training network's weights, built without side effects.

The demos and the training-time evaluation hooks evaluate what they train through an eval-mode copy:
the training network may hold more than inference needs (Centroids-ReID's classifier and class
centres) and stays in training mode. The copy is built with the process's random streams kept
(:mod:`geocli.nets.random_state`), so evaluating mid-run never changes what is drawn after it.
"""

from __future__ import annotations

from typing import Callable

from mindspore import nn

from geocli.nets.random_state import random_state_kept


def inference_copy(build: Callable[[], nn.Cell], trained: nn.Cell) -> nn.Cell:
    """``build()`` in eval mode, holding ``trained``'s parameters of the same names (every one of its
    own must be there; ``trained``'s extra parameters are ignored)."""
    import mindspore as ms

    with random_state_kept():
        net = build()
    own = {p.name for p in net.get_parameters()}
    ms.load_param_into_net(net, {k: v for k, v in trained.parameters_dict().items() if k in own}, strict_load=True)
    net.set_train(False)
    return net
