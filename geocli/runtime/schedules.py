"""Learning-rate schedules as per-step arrays (the optimizers index them by their own global step).

Precomputing the whole schedule keeps the jitted train step free of Python control flow, and because
the step counter lives in the optimizer's state, ``--resume`` continues the schedule exactly.
"""

from __future__ import annotations

import math

import numpy as np

from geocli.errors import ConfigError
from geocli.runtime.plan import Schedule

NAMES = ("constant", "linear", "poly", "step", "cosine")


def lr_values(base_lr: float, schedule: Schedule, total_steps: int) -> np.ndarray:
    """float32 array of ``total_steps`` learning rates."""
    if schedule.name not in NAMES:
        raise ConfigError(f"unknown lr schedule {schedule.name!r}; choose one of {', '.join(NAMES)}")
    steps = np.arange(total_steps, dtype=np.float64)
    warm = max(int(schedule.warmup_steps), 0)
    span = max(total_steps - warm, 1)
    t = np.clip((steps - warm) / span, 0.0, 1.0)  # progress after warm-up, 0..1
    end = schedule.end_factor
    if schedule.name == "constant":
        factor = np.ones_like(t)
    elif schedule.name == "linear":
        factor = 1.0 - (1.0 - end) * t
    elif schedule.name == "poly":
        factor = end + (1.0 - end) * (1.0 - t) ** schedule.power
    elif schedule.name == "cosine":
        factor = end + (1.0 - end) * 0.5 * (1.0 + np.cos(math.pi * t))
    else:  # step
        factor = np.ones_like(t)
        for milestone in schedule.milestones:
            factor = np.where(steps >= milestone, factor * schedule.gamma, factor)
    if warm:
        ramp = schedule.warmup_factor + (1.0 - schedule.warmup_factor) * (steps + 1) / warm
        factor = np.where(steps < warm, np.minimum(ramp, 1.0) * factor, factor)
    return (base_lr * factor).astype(np.float32)
