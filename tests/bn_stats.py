"""Test helper: give a network non-trivial BatchNorm statistics, so an inference path that mishandles
BatchNorm (a wrong fold, an export in training mode) shows in its outputs."""

import numpy as np


def with_statistics(network, seed=0):
    """Non-trivial moving statistics and affine parameters, so a wrong fold shows."""
    import mindspore as ms

    rng = np.random.default_rng(seed)
    for p in network.get_parameters():
        if p.name.endswith("moving_mean"):
            p.set_data(ms.Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))
        elif p.name.endswith("moving_variance"):
            p.set_data(ms.Tensor(rng.uniform(0.3, 3.0, p.shape).astype(np.float32)))
        elif p.name.endswith(".gamma") and p.requires_grad:
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    network.set_train(False)
    return network
