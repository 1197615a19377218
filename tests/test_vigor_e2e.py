"""Learnability: after the demo's training (geoloc demo vigor's preset and synthetic cities), R@1 on the
864 unseen test panoramas is several times chance, and the offset head lowers the median metre error.

Measured (this machine, 2026-11-23; `geoloc demo vigor` settings, seeds 0 / 1 / 2):
R@1 6.37 % / 4.98 % / 5.67 % against a chance of 0.69 % (9.2x / 7.2x / 8.2x). The assertion (6x at
seed 0) keeps a 1.5x margin below the measured 9.2x.

Offset head, run on the positive tile for all 864 test queries (the steady figure): median 11.67 m at
the tile centre -> 8.76 / 8.82 / 8.57 m (seeds 0 / 1 / 2), after the demo's head fit on frozen
descriptors (train.head_fit_steps, docs/vigor.md "Offset head"). The test asserts at most 0.85x (measured
0.73-0.76x). Where the top-1 tile is the positive (43-55 queries, noisy) it moved 8.46 -> 6.88,
12.95 -> 8.25 and 12.27 -> 10.00 m; printed, not asserted. The overall median error is dominated by
wrong top-1 tiles, which no offset can repair.
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
    ratio = figures["r@1"] / figures["random_r@1"]
    print(f"\nR@1 {figures['r@1']:.2f} % (chance {figures['random_r@1']:.2f} %, {ratio:.1f}x), hit rate "
          f"{figures['hit_rate']:.1f} %; median error {figures['median_m']:.1f} m -> {figures['offset_median_m']:.1f} m "
          f"with the offset head; head on the positive tile (all queries): {figures['median_m_positive']:.2f} m -> "
          f"{figures['offset_median_m_positive']:.2f} m; where the top-1 tile is the positive "
          f"({figures['positive_top1']} queries): {figures['median_m_positive_top1']:.2f} m -> "
          f"{figures['offset_median_m_positive_top1']:.2f} m")
    assert ratio >= 6.0  # measured 9.2x at seed 0 (7.2x, 8.2x at seeds 1, 2)
    assert figures["positive_top1"] >= 30 and not math.isnan(figures["offset_median_m_positive_top1"])
    assert figures["offset_median_m_positive"] <= 0.85 * figures["median_m_positive"]  # measured 8.76 vs 11.67
    assert Path(figures["plot"]).stat().st_size > 1000
