"""VIGOR recall / hit rate and great-circle distance on hand-computed cases."""

import numpy as np
import pytest

from geocli.metrics.geo import EARTH_RADIUS_M, great_circle_m, vigor_recall


def test_vigor_recall_ranks_ties_and_hit_rate():
    distances = np.array([
        [0.1, 0.5, 0.6, 0.7, 0.8, 0.9],   # positive 0: rank 0
        [0.3, 0.5, 0.1, 0.2, 0.9, 0.5],   # positive 1: 0, 2, 3 closer; tie at 5 not -> rank 3
        [0.1, 0.2, 0.3, 0.05, 0.0, 0.9],  # positive 2: 0, 1, 3, 4 closer -> rank 4
    ])
    positive = np.array([0, 1, 2])
    semi = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3]])  # q1: only semis closer -> hit; q2: 4 is not
    result = vigor_recall(distances, positive, semi, ks=(1, 4, 5))
    assert set(result) == {"r@1", "r@4", "r@5", "r@1%", "hit_rate"}
    assert result["r@1"] == pytest.approx(100 / 3)
    assert result["r@4"] == pytest.approx(200 / 3)
    assert result["r@5"] == pytest.approx(100.0)
    assert result["r@1%"] == pytest.approx(100 / 3)  # int(0.06) + 1 = 1, same as r@1
    assert result["hit_rate"] == pytest.approx(200 / 3)


def test_vigor_recall_one_percent_threshold():
    n_ref = 250  # int(2.5) + 1 = 3: ranks 0..2 count
    distances = np.ones((2, n_ref))
    distances[0, :3] = [0.1, 0.2, 0.5]   # positive 2 -> rank 2 -> counted
    distances[1, :4] = [0.1, 0.2, 0.3, 0.5]  # positive 3 -> rank 3 -> not counted
    result = vigor_recall(distances, [2, 3], [[10, 11, 12], [10, 11, 12]])
    assert result["r@1%"] == pytest.approx(50.0)
    assert result["r@1"] == 0.0 and result["hit_rate"] == 0.0


def test_vigor_recall_rejects_nan_and_out_of_range_indices():
    with pytest.raises(ValueError, match="NaN"):
        vigor_recall(np.array([[np.nan, 0.1]]), [0], [[1, 1, 1]])
    with pytest.raises(ValueError, match="semi_positives"):
        vigor_recall(np.array([[0.2, 0.1]]), [0], [[1, 1, -1]])


def test_great_circle_known_distances():
    one_degree = EARTH_RADIUS_M * np.pi / 180
    assert great_circle_m(0, 0, 0, 1) == pytest.approx(one_degree)
    assert great_circle_m(0, 0, 0, 90) == pytest.approx(EARTH_RADIUS_M * np.pi / 2)
    assert great_circle_m(10, 20, -10, -160) == pytest.approx(EARTH_RADIUS_M * np.pi)  # antipodal


def test_great_circle_identical_points_and_vectorised():
    lat = np.array([47.6062, 40.7128, -33.8688])
    lon = np.array([-122.3321, -74.0060, 151.2093])
    same = great_circle_m(lat, lon, lat, lon)
    assert same.shape == (3,) and np.all(same == 0.0)
    # one micro-degree of latitude is ~0.11 m; arccos-based formulas return 0 or NaN here
    assert great_circle_m(47.6062, -122.3321, 47.606201, -122.3321) == pytest.approx(0.1112, rel=1e-3)
    grid = great_circle_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    assert grid.shape == (3, 3) and np.allclose(grid, grid.T) and np.all(np.diag(grid) == 0)
