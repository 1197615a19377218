"""Oxford AP and revisited mAP / mP@k on hand-computed rankings."""

import subprocess
import sys

import numpy as np
import pytest

from geocli.metrics.retrieval import oxford_ap, revisited_gnd, revisited_map


# ---- oxford_ap (compute_ap.cpp) -----------------------------------------------------------------

def test_oxford_ap_perfect_ranking_is_one():
    assert oxford_ap(["a", "b", "x"], good=["a"], ok=["b"], junk=[]) == pytest.approx(1.0)


def test_oxford_ap_junk_before_positive_does_not_advance_rank():
    # j skipped; x at rank 0 (precision 0); a at rank 1: recall 1, precision 1/2 -> (0 + 1/2) / 2.
    assert oxford_ap(["j", "x", "a"], good=["a"], ok=[], junk=["j"]) == pytest.approx(0.25)
    # Had junk counted as a negative, a would sit at rank 2: (0 + 1/3) / 2.
    assert oxford_ap(["j", "x", "a"], good=["a"], ok=[], junk=[]) == pytest.approx(1 / 6)


def test_oxford_ap_duplicate_in_good_counts_once():
    # positives {a, b}: a -> 0.5 * (1 + 1) / 2; x -> 0; b at rank 2 -> 0.5 * (1/2 + 2/3) / 2.
    expected = 0.5 + 0.5 * (0.5 + 2 / 3) / 2
    assert oxford_ap(["a", "x", "b"], good=["a", "a", "b"], ok=[], junk=[]) == pytest.approx(expected)


def test_oxford_ap_missing_positives_contribute_nothing():
    assert oxford_ap(["a", "x"], good=["a", "b"], ok=[], junk=[]) == pytest.approx(0.5)
    assert oxford_ap(["x", "y"], good=["a", "b"], ok=[], junk=[]) == 0.0


def test_oxford_ap_junk_wins_over_positive_and_empty_positives_is_nan():
    # a is skipped as junk but still counts in n_pos = 2 (as in the C++): b at rank 0 -> recall 1/2.
    assert oxford_ap(["a", "b"], good=["a", "b"], ok=[], junk=["a"]) == pytest.approx(0.5)
    assert np.isnan(oxford_ap(["a"], good=[], ok=[], junk=["a"]))


# ---- revisited_map (revisitop compute_map) ------------------------------------------------------

def _ranks(*columns):
    return np.array(columns, dtype=np.int64).T  # (n_db, n_query)


def test_revisited_map_hand_computed():
    ranks = _ranks([3, 0, 5, 1, 2, 4],   # ok at positions 1, 4; junk 3 at 0 -> adjusted 0, 3
                   [0, 1, 2, 3, 4, 5],   # empty ok -> NaN, excluded
                   [0, 1, 2, 3, 4, 5])   # ok 0 retrieved, 9 missing -> AP (1 + 1) / (2 * 2)
    gnd = [{"ok": [0, 2], "junk": [3]}, {"ok": [], "junk": [1]}, {"ok": [0, 9]}]
    mean_ap, aps, mp_at_k, p_at_k = revisited_map(ranks, gnd, kappas=(1, 5, 10))
    # query 0: j=0 at 0 -> 1 + 1; j=1 at 3 -> 1/3 + 2/4; sum / (2 * 2)
    ap0 = (2 + 1 / 3 + 0.5) / 4
    assert aps[0] == pytest.approx(ap0)
    assert np.isnan(aps[1]) and np.isnan(p_at_k[1]).all()
    assert aps[2] == pytest.approx(0.5)
    assert mean_ap == pytest.approx((ap0 + 0.5) / 2)
    # query 0: 1-based positions [1, 4]; k=1 -> 1/1; k=5 and 10 -> k'=4 -> 2/4
    np.testing.assert_allclose(p_at_k[0], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(p_at_k[2], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(mp_at_k, [1.0, 0.75, 0.75])


def test_revisited_map_all_positives_missing_is_zero_not_a_crash():
    mean_ap, aps, mp_at_k, _ = revisited_map(_ranks([0, 1, 2]), [{"ok": [7, 8], "junk": []}])
    assert mean_ap == 0.0 and aps[0] == 0.0
    np.testing.assert_array_equal(mp_at_k, [0.0, 0.0, 0.0])


def test_revisited_map_duplicate_ok_counts_once_and_all_empty_is_nan():
    mean_ap, *_ = revisited_map(_ranks([0, 1]), [{"ok": [0, 0]}])
    assert mean_ap == pytest.approx(1.0)
    mean_ap, aps, mp_at_k, _ = revisited_map(_ranks([0, 1]), [{"ok": []}])
    assert np.isnan(mean_ap) and np.isnan(mp_at_k).all()


def _reference_loop(column, ok, junk):
    """compute_map's junk shift written as the reference's explicit loop, as an oracle."""
    pos = [p for p, idx in enumerate(column) if idx in ok]
    junk_pos = [p for p, idx in enumerate(column) if idx in junk]
    shifted, k, ij = [], 0, 0
    for p in pos:
        while ij < len(junk_pos) and p > junk_pos[ij]:
            k, ij = k + 1, ij + 1
        shifted.append(p - k)
    ap = 0.0
    for j, rank in enumerate(shifted):
        p0 = 1.0 if rank == 0 else j / rank
        ap += (p0 + (j + 1) / (rank + 1)) / (2 * len(ok))
    return ap


def test_revisited_map_matches_reference_loop_on_random_rankings():
    rng = np.random.default_rng(0)
    for _ in range(20):
        column = rng.permutation(40)
        picked = rng.choice(40, size=12, replace=False)
        ok, junk = set(picked[:7].tolist()), set(picked[7:].tolist())
        _, aps, _, _ = revisited_map(column[:, None], [{"ok": sorted(ok), "junk": sorted(junk)}])
        assert aps[0] == pytest.approx(_reference_loop(column.tolist(), ok, junk))


def test_revisited_gnd_settings():
    gnd = [{"easy": [1, 2], "hard": [3], "junk": [4], "bbx": [0, 0, 1, 1]}]
    easy, medium, hard = (revisited_gnd(gnd, s)[0] for s in ("easy", "medium", "hard"))
    assert easy["ok"].tolist() == [1, 2] and easy["junk"].tolist() == [4, 3]
    assert medium["ok"].tolist() == [1, 2, 3] and medium["junk"].tolist() == [4]
    assert hard["ok"].tolist() == [3] and hard["junk"].tolist() == [4, 1, 2]
    with pytest.raises(ValueError, match="easy, medium, hard"):
        revisited_gnd(gnd, "extreme")


def test_revisited_map_rejects_transposed_ranks():
    with pytest.raises(ValueError, match="n_db, n_query"):
        revisited_map(np.zeros((2, 5), dtype=int), [{"ok": [0]}, {"ok": [1]}])


def test_metrics_and_retrieval_never_import_mindspore():
    code = ("import sys, geocli.metrics, geocli.metrics.oxford, geocli.retrieval; "
            "sys.exit('mindspore' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
