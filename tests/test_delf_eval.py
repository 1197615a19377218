"""DELF evaluation: the port's metrics and mAP.txt, the protocols' ground truth, and `geoloc eval delf`
on stand-in images named as the real Oxford5k (all 55 queries, both protocols)."""

from pathlib import Path

import numpy as np
import pytest

from geocli.metrics.retrieval import format_port_metrics, port_metrics

SHARED_GT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "oxford5k_gt"


def test_port_metrics_by_hand():
    # 2 queries over 12 images; query 0: positives 0, 3 with junk 1 ranked before 3
    ranks = np.array([[0, 1, 2, 3] + list(range(4, 12)), [5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 10, 11]])
    gnd = [{"ok": np.array([0, 3]), "junk": np.array([1])}, {"ok": np.array([0]), "junk": np.array([], int)},
           {"ok": np.array([], int), "junk": np.array([], int)}]
    ranks = np.vstack([ranks, ranks[:1]])
    r = port_metrics(ranks, gnd, pr_ranks=(1, 10))
    # query 0: adjusted positions 0, 2 -> AP = ((1 + 1) + (1/2 + 2/3)) / 2 / 2 = 0.7917
    assert r["ap"][0] == pytest.approx((2 + 0.5 + 2 / 3) / 4)
    # query 1: position 5 -> AP = (0 + 1/6) / 2
    assert r["ap"][1] == pytest.approx(1 / 12)
    assert np.isnan(r["ap"][2]) and r["map"] == pytest.approx((r["ap"][0] + r["ap"][1]) / 2)
    # P@k uses min(last positive's 1-based position, k): q0 k=10 -> 2/3, q1 k=10 -> 1/6; R@1: 0.5, 0
    np.testing.assert_allclose(r["precisions"][:2, 1], [2 / 3, 1 / 6])
    np.testing.assert_allclose(r["recalls"][:2, 0], [0.5, 0.0])
    with pytest.raises(ValueError, match="at least that many"):
        port_metrics(ranks, gnd, pr_ranks=(100,))


def test_map_txt_has_the_port_format():
    values = {"hard": {"map": 0.7048, "mp": np.full(9, 0.5), "mr": np.linspace(0.1, 0.9, 9)},
              "easy": {"map": 0.91851, "mp": np.full(9, 0.9), "mr": np.full(9, 0.25)},
              "medium": {"map": 0.8209, "mp": np.full(9, 1.0), "mr": np.full(9, 0.123456)}}
    text = format_port_metrics(values)
    lines = text.splitlines()
    assert len(lines) == 12 and lines[0::4] == ["easy", "hard", "medium"]
    assert lines[1] == "  mAP=91.85"
    assert lines[2] == "  mP@k[10 20 30 40 50 60 70 80 90] [90. 90. 90. 90. 90. 90. 90. 90. 90.]"
    assert lines[3] == "  mR@k[10 20 30 40 50 60 70 80 90] [25. 25. 25. 25. 25. 25. 25. 25. 25.]"
    assert lines[5] == "  mAP=70.48"
    assert lines[11] == "  mR@k[10 20 30 40 50 60 70 80 90] [12.35 12.35 12.35 12.35 12.35 12.35 12.35 12.35 12.35]"
    # the port's reader: 4 lines per protocol, mAP after '=', scores inside the second brackets
    for i in range(0, 12, 4):
        assert float(lines[i + 1].split("=")[1]) > 0
        assert len(lines[i + 2].split("[")[2].split("]")[0].split()) == 9
