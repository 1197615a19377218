"""Learnability: after the demo's training (geoloc demo vigor's preset and synthetic cities), R@1 on the
unseen test panoramas is several times chance and the offset head lowers the median metre error.

The overall median error is dominated by wrong top-1 tiles (another block or city), which no offset can
repair; the offset head's effect is measured where the top-1 tile is the positive, and both are printed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_training_learns_retrieval_and_offset(tmp_path):
    from geocli import registry
    from geocli.runtime import context

    ctx = context.setup(tmp_path / "run", mode="graph", seed=0, distributed=False)
    backend = registry.load_backend("vigor")
    figures = backend.demo(tmp_path / "data", tmp_path / "out", ctx)
    print(f"\nR@1 {figures['r@1']:.1f} % (chance {figures['random_r@1']:.2f} %), hit rate {figures['hit_rate']:.1f} %; "
          f"median error {figures['median_m']:.1f} m -> {figures['offset_median_m']:.1f} m with the offset head; "
          f"where the top-1 tile is the positive ({figures['positive_top1']} queries): "
          f"{figures['median_m_positive_top1']:.2f} m -> {figures['offset_median_m_positive_top1']:.2f} m")
    assert figures["r@1"] >= 4 * figures["random_r@1"]
    assert figures["positive_top1"] >= 10 and not math.isnan(figures["offset_median_m_positive_top1"])
    assert figures["offset_median_m_positive_top1"] < figures["median_m_positive_top1"]
    assert Path(figures["plot"]).stat().st_size > 1000
