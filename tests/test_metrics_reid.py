"""Market-1501 CMC / mAP on a hand-built gallery."""

import numpy as np
import pytest

from geocli.metrics.reid import cmc_map

#            idx: 0  1  2  3  4
G_PIDS = np.array([1, 1, 3, 1, 2])
G_CAMS = np.array([0, 1, 1, 1, 0])


def test_cmc_map_same_camera_exclusion_ties_and_skipped_query():
    distmat = np.array([
        # q0 (pid 1, cam 0): idx 0 is the same pid AND camera -> removed although it is closest.
        # remaining order 2, 4, 1, 3 -> hits at 0-based positions 2 and 3.
        [0.1, 0.5, 0.2, 0.5, 0.3],
        # q1 (pid 3, cam 0): idx 1, 2, 4 tie at 0.2; the stable sort keeps 1 before the hit 2.
        [0.4, 0.2, 0.2, 0.9, 0.2],
        # q2 (pid 2, cam 0): its only gallery image (idx 4) is same-camera -> skipped.
        [0.3, 0.3, 0.3, 0.3, 0.3],
    ])
    cmc, mean_ap = cmc_map(distmat, [1, 3, 2], G_PIDS, [0, 0, 0], G_CAMS, max_rank=4)
    # q0 CMC [0, 0, 1, 1]; q1 CMC [0, 1, 1, 1]; q2 not counted.
    np.testing.assert_allclose(cmc, [0.0, 0.5, 1.0, 1.0])
    ap0 = (1 / 3 + 2 / 4) / 2
    ap1 = 1 / 2
    assert mean_ap == pytest.approx((ap0 + ap1) / 2)


def test_cmc_map_other_camera_same_pid_is_positive():
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    cmc, mean_ap = cmc_map(distmat, [1], G_PIDS, [2], G_CAMS)  # query camera 2: nothing removed
    assert cmc.shape == (5,)  # max_rank 50 clipped to the gallery size
    np.testing.assert_allclose(cmc, [1, 1, 1, 1, 1])
    assert mean_ap == pytest.approx((1 + 1 + 3 / 4) / 3)  # hits at positions 0, 1, 3


def test_cmc_map_without_valid_query_raises():
    with pytest.raises(ValueError, match="no query has a gallery image"):
        cmc_map(np.zeros((1, 5)), [2], G_PIDS, [0], G_CAMS)
    with pytest.raises(ValueError, match="no query"):
        cmc_map(np.zeros((1, 5)), [7], G_PIDS, [0], G_CAMS)


def test_cmc_map_shape_mismatch_raises():
    with pytest.raises(ValueError, match="distmat is"):
        cmc_map(np.zeros((2, 5)), [1], G_PIDS, [0], G_CAMS)
