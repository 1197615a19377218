"""Centroids-ReID losses and centroids against hand computations (NumPy), run in MindSpore PyNative."""

import numpy as np
import pytest

from geocli.metrics.reid import camera_sets_contain, cmc_map
from geocli.models.creid import centroids as cent


def _np_dist(x):
    d2 = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T
    return np.sqrt(np.maximum(d2, 1e-12))


def _np_triplet(x, labels, margin):
    d = _np_dist(x)
    out = []
    for i in range(len(x)):
        pos = d[i][labels == labels[i]].max()
        neg = d[i][labels != labels[i]].min()
        out.append(max(0.0, pos - neg + margin))
    return float(np.mean(out))


@pytest.fixture(scope="module")
def ms_ops():
    import mindspore as ms

    from geocli.models.creid import loss

    ms.set_context(mode=ms.PYNATIVE_MODE)
    return ms, loss


def test_batch_hard_triplet_by_hand(ms_ops):
    ms, loss = ms_ops
    x = np.array([[0, 0], [3, 0], [0, 1], [0, 5]], np.float32)  # ids 0 0 1 1
    labels = np.array([0, 0, 1, 1], np.int32)
    # anchor 0: farthest positive 3 (idx 1), nearest negative 1 (idx 2) -> 3 - 1 + 0.5 = 2.5
    # anchor 1: pos 3, neg min(sqrt(10), sqrt(34)) = 3.162 -> 0.338; anchor 2: pos 4, neg 1 -> 3.5
    # anchor 3: pos 4, neg min(5, sqrt(34)) = 5 -> 0 (clipped)
    expected = (2.5 + (3 - np.sqrt(10) + 0.5) + 3.5 + 0.0) / 4
    got = float(loss.batch_hard_triplet(ms.Tensor(x), ms.Tensor(labels), 0.5).asnumpy())
    assert got == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(_np_triplet(x, labels, 0.5))


def test_label_smoothed_cross_entropy_by_hand(ms_ops):
    ms, loss = ms_ops
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], np.float32)
    labels = np.array([0, 2], np.int32)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    targets = np.full((2, 3), 0.1 / 3)
    targets[[0, 1], labels] += 0.9
    expected = float((-targets * logp).sum(1).mean())
    got = float(loss.label_smoothed_ce(ms.Tensor(logits), ms.Tensor(labels), 0.1).asnumpy())
    assert got == pytest.approx(expected, rel=1e-5)


def test_center_loss_value_and_the_reference_gradient_scaling(ms_ops):
    ms, loss = ms_ops
    x = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]], np.float32)
    centers = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    labels = np.array([1, 0, 1], np.int32)
    # sum ||x - c_y||^2 / B, no 1/2: (0 + 1) + 1 + (4 + 4) = 10 -> 10/3
    plain = float(loss.center_loss(ms.Tensor(x), ms.Tensor(labels), ms.Tensor(centers)).asnumpy())
    assert plain == pytest.approx(10 / 3)
    w = 5e-4
    fn = ms.value_and_grad(lambda a, c: loss.weighted_center_loss(a, ms.Tensor(labels), c, w), (0, 1))
    value, (gx, gc) = fn(ms.Tensor(x), ms.Tensor(centers))
    assert float(value.asnumpy()) == pytest.approx(w * 10 / 3, rel=1e-5)
    diff = x - centers[labels]
    np.testing.assert_allclose(gx.asnumpy(), w * 2 * diff / 3, rtol=1e-5)  # features: the weighted gradient
    expected_gc = np.zeros_like(centers)
    for i, y in enumerate(labels):
        expected_gc[y] -= 2 * diff[i] / 3
    np.testing.assert_allclose(gc.asnumpy(), expected_gc, rtol=1e-5)  # centres: x 1/w, as the reference


def test_centroid_triplet_rotations_by_hand(ms_ops):
    ms, loss = ms_ops
    rng = np.random.default_rng(3)
    p, k = 3, 3
    x = rng.normal(size=(p * k, 4)).astype(np.float32)
    labels = np.repeat(np.array([7, 2, 9], np.int32), k)
    expected = []
    for r in range(k):  # the r-th image of each identity against the mean of its other K-1 images
        queries = np.stack([x[i * k + r] for i in range(p)])
        cents = np.stack([np.delete(x[i * k:(i + 1) * k], r, axis=0).mean(0) for i in range(p)])
        both = np.concatenate([queries, cents])
        expected.append(_np_triplet(both, np.concatenate([[7, 2, 9], [7, 2, 9]]), 0.5))
    got = float(loss.centroid_triplet(ms.Tensor(x), ms.Tensor(labels), k, 0.5).asnumpy())
    assert got == pytest.approx(float(np.mean(expected)), rel=1e-5)
    # rotations matter: using only the first image per identity gives another value
    assert abs(got - expected[0]) > 1e-4


# ---- centroids (pure NumPy) -------------------------------------------------------------------------

#: gallery: pid 5 seen by cameras 0, 1, 2; pid 6 by camera 1 only and 3; pid 0 distractor (no query)
G_PIDS = np.array([5, 5, 5, 6, 6, 0])
G_CAMS = np.array([0, 1, 2, 1, 3, 2])
G_FEATS = np.array([[1.0, 0], [3, 0], [5, 0], [0, 2], [0, 4], [9, 9]], np.float32)
Q_PIDS = np.array([5, 5, 6])
Q_CAMS = np.array([0, 1, 1])


def test_centroids_per_query_camera_exclude_that_camera():
    c = cent.build(G_FEATS, G_PIDS, G_CAMS, Q_PIDS, Q_CAMS, "fixed")
    # pid 0 (no query): all its images; pid 5 for query cam 0: cams {1,2} -> mean(3,5) = 4,
    # for query cam 1: cams {0,2} -> 3; pid 6 for query cam 1: camera 3 only -> (0, 4)
    assert c.pids.tolist() == [0, 5, 5, 6]
    assert c.camsets == [(2,), (1, 2), (0, 2), (3,)]
    np.testing.assert_allclose(c.features, [[9, 9], [4, 0], [3, 0], [0, 4]])
    same = camera_sets_contain(Q_CAMS, c.camsets)
    # query 0 (pid 5, cam 0) keeps centroid (1,2) and drops none of its own; the centroid (0,2) holds
    # its camera and is removed for it (same pid); query 1 (cam 1) is the other way round
    assert same.tolist() == [[False, False, True, False], [False, True, False, False], [False, True, False, False]]


def test_reference_protocol_reproduces_the_camera_offset_bug_and_drops_gallery_only_ids():
    # the reference looks gallery cameras up in concat(query cams, gallery cams) at gallery positions:
    # gallery image i gets camera [0, 1, 1, 0, 1, 2][i] instead of G_CAMS[i]
    believed = cent.gallery_cameras(G_CAMS, Q_CAMS, "reference")
    assert believed.tolist() == [0, 1, 1, 0, 1, 2]
    c = cent.build(G_FEATS, G_PIDS, G_CAMS, Q_PIDS, Q_CAMS, "reference")
    assert 0 not in c.pids.tolist()  # the distractor gets no centroid
    # pid 5, query cam 0: believed cams (0, 1, 1) -> images 1, 2; query cam 1: image 0 only;
    # pid 6, query cam 1: believed cams (0, 1) -> image 3 (its TRUE camera is 1: a same-camera leak)
    assert c.pids.tolist() == [5, 5, 6]
    assert c.camsets == [(1,), (0,), (0,)]
    np.testing.assert_allclose(c.features, [[4, 0], [1, 0], [0, 2]])


def test_centroid_scores_rank_the_right_identity():
    from geocli.models.creid.scoring import score

    figures = score(np.array([[1.0, 0.1], [0.1, 1.0]]), np.array([5, 6]), np.array([0, 1]),
                    G_FEATS + 0.01, G_PIDS, G_CAMS, protocol="fixed", centroids=True, max_rank=3)
    assert figures["rank1"] == 100.0 and figures["centroids_rank1"] == 100.0
    assert figures["centroids"] == 3 and figures["gallery_size"] == 6  # one query camera per identity
    cmc, _ = cmc_map(np.zeros((1, 2)), [1], [1, 1], [0], [0, 0], same_camera=np.array([[True, False]]))
    assert cmc[0] == 1.0


def test_centroids_by_identity_are_the_mean_of_each_identity_in_any_gallery_order():
    by_identity = cent.by_identity
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((200, 8)).astype(np.float32)
    pids = rng.integers(-1, 30, 200)  # shuffled identities, distractor pids 0 and -1 included
    c = by_identity(feats, pids)
    assert c.pids.tolist() == sorted(set(pids.tolist()))
    for pid, members, centroid in zip(c.pids, c.members, c.features):
        assert members.tolist() == np.flatnonzero(pids == pid).tolist()
        np.testing.assert_allclose(centroid, feats[pids == pid].mean(axis=0), atol=1e-6)
    empty = by_identity(np.zeros((0, 8), np.float32), np.zeros(0, np.int64))
    assert empty.features.shape == (0, 8) and len(empty.members) == 0
