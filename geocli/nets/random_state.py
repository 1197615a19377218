"""Build a network without moving the process's random streams.

Why: MindSpore's weight initializers draw from NumPy's global generator (``np.random.randint`` seeds
each one; ``mindspore.common.initializer``), and a random op's graph seed advances a per-kernel counter
(``mindspore.common.seed``). A network built only to receive copied weights (an inference copy, a
folded copy) would otherwise change every draw after it: the initial weights of a network trained later
in the same process, and so its results. The Centroids-ReID demo showed how much that matters: folding
the untrained network's evaluation, which ran before training, changed the trained network's
initialisation and its demo rank-1 from 33 % to 12.5 %.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import numpy as np


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Inside the block, draw as you like; on leaving, NumPy's global generator and MindSpore's op-seed
    counters are back where they were."""
    numpy_state = np.random.get_state()
    seeds = getattr(sys.modules.get("mindspore.common.seed"), "_KERNEL_SEED", None)
    kernel_seeds = dict(seeds) if isinstance(seeds, dict) else None
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        if kernel_seeds is not None:
            seeds.clear()
            seeds.update(kernel_seeds)
