"""VIGOR network, losses, sampler and chunked evaluation against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from geocli.models.vigor.sampler import TileSampler


def _safa_reference(feat, w1, b1, w2, b2):
    """models.py:307-330 in NumPy: einsum('bi,ijd->bjd'), einsum('bjd,jid->bid'), einsum('bic,bid->bdc')."""
    b, c = feat.shape[:2]
    f = feat.reshape(b, c, -1).transpose(0, 2, 1)  # (B, HW, C), positions row-major like TF's NHWC reshape
    v = f.max(axis=2)
    v2 = np.einsum("bi,ijd->bjd", v, w1) + b1
    v3 = np.einsum("bjd,jid->bid", v2, w2) + b2
    return np.einsum("bic,bid->bdc", f, v3).reshape(b, -1)


def test_safa_size_and_d_major_layout():
    import mindspore as ms

    from geocli.models.vigor.net import SAFA, VigorNet, l2_normalise

    rng = np.random.default_rng(0)
    feat = rng.standard_normal((2, 6, 2, 4)).astype(np.float32)
    for layout in ("d-major", "c-major"):
        safa = SAFA(8, maps=8, layout=layout)
        for p in (safa.w1, safa.b1, safa.w2, safa.b2):
            p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32) * 0.3))
        got = safa(ms.Tensor(feat)).asnumpy()
        want = _safa_reference(feat, *(p.asnumpy() for p in (safa.w1, safa.b1, safa.w2, safa.b2)))
        if layout == "c-major":
            want = want.reshape(2, 8, 6).transpose(0, 2, 1).reshape(2, -1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert tuple(safa.w1.shape) == (8, 4, 8) and tuple(safa.w2.shape) == (4, 8, 8)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_allclose(l2_normalise(ms.Tensor(x)).asnumpy(), x / np.linalg.norm(x, axis=1, keepdims=True),
                               rtol=1e-5)
    net = VigorNet((64, 128), (64, 64), width=0.0625)
    g, s, o = net(ms.Tensor(rng.standard_normal((1, 3, 64, 128)).astype(np.float32)),
                  ms.Tensor(rng.standard_normal((1, 3, 64, 64)).astype(np.float32)))
    assert g.shape == (1, 8 * 32) and s.shape == (1, 8 * 32) and o.shape == (1, 2)
    assert VigorNet((320, 640), (320, 320), width=0.0625).grd.safa.hw == 200  # the reference's 10 x 20
    assert net.sat.safa.hw == 4 and net.head.fc1.weight.shape[1] == 2 * 8 * 32


def test_losses_against_hand_computation():
    import mindspore as ms

    from geocli.models.vigor import loss as L

    rng = np.random.default_rng(1)
    n = 4
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sat, grd, semi = (unit(rng.standard_normal((n, 6))).astype(np.float32) for _ in range(3))
    dist = 2 - 2 * sat @ grd.T
    g2s = sum(np.log1p(np.exp(10 * (dist[j, j] - dist[i, j]))) for i in range(n) for j in range(n))
    s2g = sum(np.log1p(np.exp(10 * (dist[i, i] - dist[i, j]))) for i in range(n) for j in range(n))
    want = (g2s + s2g) / (n * (n - 1)) / 2
    T = lambda a: ms.Tensor(np.asarray(a, np.float32))  # noqa: E731
    assert float(L.soft_margin_triplet(T(sat), T(grd)).asnumpy()) == pytest.approx(want, rel=1e-5)
    # without the diagonal: the port's alpha-20 cosine form
    cos = sat @ grd.T
    port = np.mean([np.log1p(np.exp(20 * (cos[i, j] - cos[j, j]))) for i in range(n) for j in range(n) if i != j])
    port = (port + np.mean([np.log1p(np.exp(20 * (cos[i, j] - cos[i, i]))) for i in range(n) for j in range(n)
                            if i != j])) / 2
    assert float(L.soft_margin_triplet(T(sat), T(grd), diagonal=False).asnumpy()) == pytest.approx(port, rel=1e-5)
    ratio = rng.uniform(0.2, 0.9, n)
    s_pos, s_semi = (sat * grd).sum(1), (semi * grd).sum(1)
    want_iou = np.mean((s_semi / s_pos - ratio) ** 2) / 10
    assert float(L.iou_loss(T(sat), T(semi), T(grd), T(ratio)).asnumpy()) == pytest.approx(want_iou, rel=1e-4)
    pred, target = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    want_off = np.mean(((pred - target) ** 2).sum(1)) / 100  # batch mean (the port's missing mean not reproduced)
    assert float(L.offset_loss(T(pred), T(target)).asnumpy()) == pytest.approx(want_off, rel=1e-5)


def _grid_labels(cities=2, side=6, per_tile=2, seed=0):
    """Panoramas of square grids: each covered by its nearest tile and the three others of a 2x2 block."""
    rng = np.random.default_rng(seed)
    pos, semi = [], []
    for c in range(cities):
        for i in range(side - 1):
            for j in range(side - 1):
                block = [(i, j), (i + 1, j), (i, j + 1), (i + 1, j + 1)]
                for _ in range(per_tile):
                    order = rng.permutation(4)
                    ids = [c * side * side + a * side + b for a, b in (block[k] for k in order)]
                    pos.append(ids[0])
                    semi.append(ids[1:])
    return np.array(pos), np.array(semi)


def test_sampler_batches_never_share_a_tile_and_mine_half():
    positive, semi = _grid_labels()
    sampler = TileSampler(positive, semi, global_batch=6, iters=12, mining_start=2)
    order = sampler(np.random.default_rng(0))
    assert len(order) == len(sampler) == 72
    tiles = np.concatenate([positive[:, None], semi], 1)
    for batch in order.reshape(-1, 6):
        used = tiles[batch].ravel()
        assert len(set(used.tolist())) == used.size  # no tile twice in a batch
    np.testing.assert_array_equal(order, sampler(np.random.default_rng(0)))  # a pure function of the rng
    # mined lists: each panorama's "hard" tiles; from mining_start the second half comes from them
    mined = np.stack([np.roll(np.unique(positive), -k)[:5] for k in range(len(positive))])
    sampler.set_epoch(1, mined)
    assert not sampler.mining_active
    sampler.set_epoch(2, mined)
    hits = total = 0
    for batch in sampler(np.random.default_rng(1)).reshape(-1, 6):
        anchors, rest = batch[:3], batch[3:]
        for a, b in zip(anchors, rest):
            total += 1
            hits += positive[b] in mined[a]
        used = tiles[batch].ravel()
        assert len(set(used.tolist())) == used.size
    assert hits / total > 0.8  # the rest fell back to random samples after 101 failed tries
    port = TileSampler(positive, semi, global_batch=6, iters=0, mode="port")
    counts = np.bincount(positive[port(np.random.default_rng(2))])
    assert set(counts[np.unique(positive)].tolist()) == {2}  # every positive tile twice per epoch


def test_sampler_state_resumes_a_mining_epoch_exactly():
    """A run interrupted mid-epoch gets the epoch's mined lists back from the checkpointed state and the
    mining hook keeps them (the network they came from is gone), so the epoch's batches are unchanged;
    the next epoch mines again."""
    from geocli.models.vigor.backend import MiningHook

    positive, semi = _grid_labels()
    mined = np.stack([np.roll(np.unique(positive), -k)[:5] for k in range(len(positive))])
    running = TileSampler(positive, semi, global_batch=6, iters=12, mining_start=2)
    running.set_epoch(3, mined)
    state = {k: np.array(v) for k, v in running.state_dict().items()}  # what the trainer checkpoints
    calls = []

    class Hook(MiningHook):
        def mine(self, epoch):
            calls.append(epoch)
            return mined[:, ::-1]

    resumed = TileSampler(positive, semi, global_batch=6, iters=12, mining_start=2)
    resumed.load_state_dict(state)
    hook = Hook(resumed, None, None, {}, {"train": {"mining_start": 2}})
    hook(None, 3)  # the trainer calls the epoch hooks when it resumes mid-epoch
    assert calls == []
    np.testing.assert_array_equal(resumed(np.random.default_rng([0, 3])), running(np.random.default_rng([0, 3])))
    hook(None, 4)
    assert calls == [4] and resumed.pool_epoch == 4
    np.testing.assert_array_equal(resumed.mined, mined[:, ::-1])
    fresh = TileSampler(positive, semi, global_batch=6, iters=12, mining_start=2)
    fresh.load_state_dict({})  # a checkpoint without sampler state: the hook mines as before
    Hook(fresh, None, None, {}, {"train": {"mining_start": 2}})(None, 3)
    assert calls == [4, 3] and fresh.mining_active


def test_sampler_reports_an_impossible_batch():
    from geocli.errors import DataError

    positive, semi = _grid_labels(cities=1, side=3, per_tile=1)
    with pytest.raises(DataError, match="share no tile"):
        TileSampler(positive, semi, global_batch=3, iters=1)(np.random.default_rng(0))


def test_chunked_recall_equals_one_matrix():
    from geocli.metrics.geo import vigor_recall
    from geocli.models.vigor.predict import chunked_recall

    rng = np.random.default_rng(3)
    grd = rng.standard_normal((53, 8)).astype(np.float32)
    sat = rng.standard_normal((230, 8)).astype(np.float32)
    grd /= np.linalg.norm(grd, axis=1, keepdims=True)
    sat /= np.linalg.norm(sat, axis=1, keepdims=True)
    positive = rng.integers(0, 230, 53)
    semi = np.stack([(positive + k) % 230 for k in (1, 2, 3)], 1)
    whole = vigor_recall(2 - 2 * grd @ sat.T, positive, semi, ks=(1, 5, 10))
    for chunk in (1, 7, 1000):
        got, top1 = chunked_recall(grd, sat, positive, semi, "reference", chunk)
        assert got == pytest.approx(whole, abs=1e-9)
        np.testing.assert_array_equal(top1, np.argmax(grd @ sat.T, axis=1))
    port, _ = chunked_recall(grd, sat, positive, semi, "port", 7)
    ranks = ((grd @ sat.T) > (grd * sat[positive]).sum(1)[:, None]).sum(1)
    assert port["r@1%"] == pytest.approx(100 * np.mean(ranks < 230 // 100))
    assert got["r@1%"] == pytest.approx(100 * np.mean(ranks < int(0.01 * 230) + 1))
