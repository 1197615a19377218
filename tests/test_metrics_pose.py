"""Pose errors and their summary on hand-computed cases."""

import numpy as np
import pytest

from geocli.metrics.pose import pose_errors, pose_summary

S = np.sqrt(0.5)


def test_pose_errors_translation_and_rotation():
    t_err, r_err = pose_errors(
        t_pred=[[0, 0, 0], [1, 1, 1], [0, 0, 0]],
        q_pred=[[1, 0, 0, 0], [2, 0, 0, 0], [1, 0, 0, 0]],   # unnormalised second one
        t_true=[[3, 4, 0], [1, 1, 1], [0, 0, 0]],
        q_true=[[S, 0, 0, S], [1, 0, 0, 0], [-1, 0, 0, 0]],  # 90 deg about z; same; -q
    )
    np.testing.assert_allclose(t_err, [5.0, 0.0, 0.0])
    np.testing.assert_allclose(r_err, [90.0, 0.0, 0.0], atol=1e-9)


def test_pose_errors_identical_rotation_is_zero_not_nan():
    q = np.random.default_rng(0).normal(size=(100, 4))
    _, r_err = pose_errors(np.zeros((100, 3)), q, np.zeros((100, 3)), q * 3.0)
    assert not np.isnan(r_err).any() and np.all(r_err < 1e-4)


def test_pose_errors_rejects_zero_quaternion_and_shape_mismatch():
    with pytest.raises(ValueError, match="zero quaternion"):
        pose_errors([0, 0, 0], [0, 0, 0, 0], [0, 0, 0], [1, 0, 0, 0])
    with pytest.raises(ValueError, match="translation shapes"):
        pose_errors(np.zeros((2, 3)), np.ones((2, 4)), np.zeros((3, 3)), np.ones((2, 4)))


def test_pose_summary_hand_computed():
    summary = pose_summary([0.1, 0.3, 1.0, 6.0], [1.0, 1.0, 9.0, 1.0])
    assert summary["n_frames"] == 4
    assert summary["median_t_m"] == pytest.approx(0.65)
    assert summary["median_r_deg"] == pytest.approx(1.0)
    assert summary["mean_t_m"] == pytest.approx(1.85)
    assert summary["mean_r_deg"] == pytest.approx(3.0)
    assert summary["pct_0.25m_2deg"] == pytest.approx(25.0)
    assert summary["pct_0.5m_5deg"] == pytest.approx(50.0)
    assert summary["pct_5m_10deg"] == pytest.approx(75.0)


def test_pose_summary_thresholds_are_strict():
    summary = pose_summary([0.25, 0.5], [1.0, 1.0])
    assert summary["pct_0.25m_2deg"] == 0.0 and summary["pct_0.5m_5deg"] == 50.0
    with pytest.raises(ValueError):
        pose_summary([], [])
