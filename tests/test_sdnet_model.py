"""SDNet network, loss terms against hand computations, parameter groups, one forward per step, LR."""

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from geocli import config  # noqa: E402
from geocli.models.sdnet import loss as L  # noqa: E402
from geocli.models.sdnet.net import SDNet, input_norm  # noqa: E402


def _unit(rng, n, d=128):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _t(x):
    return ms.Tensor(np.asarray(x, np.float32))


def test_network_layout_outputs_and_init():
    net = SDNet()
    net.set_train(False)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 64, 64)).astype(np.float32)
    outs = [o.asnumpy() for o in net(_t(x), _t(x[::-1].copy()))]
    assert [o.shape for o in outs] == [(3, 128), (3, 128), (3, 128), (3, 128), (3, 1, 64, 64), (3, 1, 64, 64)]
    for v in outs[:4]:  # descriptors and Lower vectors are L2-normalised
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert np.abs(outs[4]).max() <= 1.0  # tanh reconstruction
    from mindspore import nn

    names = [p.name for p in net.trainable_params()]
    assert not [n for n in names if "gamma" in n or "beta" in n]  # BatchNorm affine=False everywhere
    convs = [c for _, c in net.cells_and_names() if isinstance(c, nn.Conv2d)]
    assert convs and all(c.bias is None or not c.has_bias for c in convs)
    w = convs[0].weight.asnumpy().reshape(32, -1)  # 32 x 9: rows orthogonal? no: 9 < 32, columns are
    np.testing.assert_allclose(w.T @ w, 0.36 * np.eye(9), atol=1e-5)  # orthonormal x gain 0.6
    w = convs[1].weight.asnumpy().reshape(32, -1)  # 32 x 288: rows orthonormal x 0.6
    np.testing.assert_allclose(w @ w.T, 0.36 * np.eye(32), atol=1e-5)
    ups = [c for _, c in net.cells_and_names() if isinstance(c, nn.Conv2dTranspose)]
    assert len(ups) == 3 and all(c.has_bias for c in ups)  # keep bias and the default init


def test_input_norm_is_per_patch_population_standardisation():
    x = np.random.default_rng(1).uniform(0, 5, (2, 1, 4, 4)).astype(np.float32)
    flat = x.reshape(2, -1)
    want = (flat - flat.mean(1, keepdims=True)) / (flat.std(1, ddof=0, keepdims=True) + 1e-7)
    np.testing.assert_allclose(input_norm(_t(x)).asnumpy().reshape(2, -1), want, rtol=1e-5, atol=1e-5)


def _hardnet_by_hand(a, p, margin=1.0, swap=True):
    n = len(a)
    d = np.sqrt(((a[:, None] - p[None]) ** 2).sum(-1) + 1e-6) + 1e-8
    pos = np.diag(d).copy()
    off = d + 10 * np.eye(n)
    off = off + 10 * (off < 0.008)
    neg = off.min(1)
    if swap:
        neg = np.minimum(neg, off.min(0))
    return np.maximum(0, margin + pos - neg).mean()


def test_hardnet_term_matches_hand_computation_including_mask_and_swap():
    rng = np.random.default_rng(2)
    a, p = _unit(rng, 6), _unit(rng, 6)
    p[3] = a[1]  # an off-diagonal near-duplicate (distance < 0.008) must be masked out of the minimum
    for swap in (True, False):
        got = float(L.hardnet_loss(_t(a), _t(p), 1.0, swap).asnumpy())
        assert got == pytest.approx(_hardnet_by_hand(a, p, 1.0, swap), rel=1e-4, abs=1e-5)
    # without the mask the near-duplicate would be the hardest negative: the loss would differ
    d = np.sqrt(((a[:, None] - p[None]) ** 2).sum(-1) + 1e-6) + 1e-8
    assert d[1, 3] < 0.008


def test_reconstruction_term_is_mean_squared_error():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-1, 1, (2, 1, 8, 8)), rng.uniform(-1, 1, (2, 1, 8, 8))
    assert float(L.recon_loss(_t(x), _t(y)).asnumpy()) == pytest.approx(((x - y) ** 2).mean(), rel=1e-5)


def _softmax_rows(s):
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_rank_kl_is_the_b_squared_mean_with_the_diagonal_included():
    rng = np.random.default_rng(4)
    b = 5
    f, e = _unit(rng, b).astype(np.float64), _unit(rng, b).astype(np.float64)
    t = 0.1
    p_l = _softmax_rows(0.5 * (1 + f @ f.T) / t)  # diagonal included
    p_h = _softmax_rows(0.5 * (1 + e @ e.T) / t)
    row_kl = (p_h * (np.log(p_h) - np.log(p_l))).sum(1)
    want = row_kl.sum() / b ** 2  # sum of row KLs / B^2, i.e. 1/B of the mean row KL
    got = float(L.rank_kl(_t(f), _t(e), t).asnumpy())
    assert got == pytest.approx(want, rel=2e-3)  # float32 logs
    assert got != pytest.approx(row_kl.mean(), rel=0.5)
    # excluding the diagonal would give another value
    mask = ~np.eye(b, dtype=bool)
    p_l2 = _softmax_rows(np.where(mask, 0.5 * (1 + f @ f.T) / t, -np.inf))
    p_h2 = _softmax_rows(np.where(mask, 0.5 * (1 + e @ e.T) / t, -np.inf))
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.nansum(p_h2 * (np.log(p_h2) - np.log(p_l2))) / b ** 2
    assert abs(got - off) > 10 * abs(got - want)


def test_total_loss_is_the_weighted_sum_with_the_port_pairings():
    rng = np.random.default_rng(5)
    b = 4
    oe, se, ol, sl = (_unit(rng, b) for _ in range(4))
    orec, srec = rng.uniform(-1, 1, (2, b, 1, 8, 8)).astype(np.float32)
    xo, xs = rng.uniform(-1, 1, (2, b, 1, 8, 8)).astype(np.float32)
    terms = [float(v.asnumpy()) for v in L.SDNetLoss()(tuple(map(_t, (oe, se, ol, sl, orec, srec))), _t(xo), _t(xs))]
    kl = lambda s, t: float(L.rank_kl(_t(s), _t(t), 0.1).asnumpy())  # noqa: E731
    want = [_hardnet_by_hand(oe, se), 0.001 * ((xo - orec) ** 2).mean(), 0.001 * ((xs - srec) ** 2).mean(),
            10 * kl(ol, oe), 10 * kl(sl, se), 10 * kl(sl, oe), 10 * kl(ol, se), 10 * kl(oe, se), 10 * kl(ol, sl)]
    np.testing.assert_allclose(terms[1:], want, rtol=1e-4, atol=1e-7)
    assert terms[0] == pytest.approx(sum(want), rel=1e-5)
    assert len(L.TERMS) == 9


def test_three_parameter_groups_identical_settings_and_one_forward_per_step(tmp_path):
    from geocli.models.sdnet.backend import optimizers
    from geocli.runtime.plan import RunContext, TrainPlan
    from geocli.runtime.trainer import Trainer

    cfg = config.resolve("sdnet", "default", None, [])
    net = SDNet()
    groups = net.parameter_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(net.trainable_params())  # disjoint, and cover every parameter
    assert {p.name.split(".")[0] for p in groups["lower"]} == {"lower_opt", "lower_sar"}
    assert {p.name.split(".")[0] for p in groups["decoder"]} == {"decoder"}
    specs = optimizers(cfg, net, 10, 0.0)
    assert [s.name for s in specs] == ["focal", "lower", "decoder"]
    for s in specs:
        assert (s.kind, s.lr, s.weight_decay, s.loss, s.options) == ("adam", 0.004, 0.0001, "total",
                                                                     {"beta1": 0.5, "beta2": 0.9, "eps": 1e-8})
    calls = []
    loss = L.SDNetLoss()

    def forward(opt, sar):
        calls.append(1)  # PyNative: Python runs once per forward
        return loss(net(opt, sar), opt, sar)

    net.set_train(True)
    plan = TrainPlan(network=net, forward=forward, loss_names=list(L.TERMS), optimizers=specs, data=None, steps=10)
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)  # an earlier test in this process may have chosen graph mode
    try:
        trainer = Trainer(plan, RunContext(tmp_path, mode="pynative"))
        before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
        x = np.random.default_rng(6).uniform(-1, 1, (4, 1, 64, 64)).astype(np.float32)
        trainer.step_fn(_t(x), _t(x[::-1].copy()))
    finally:
        ms.set_context(mode=mode)
    assert len(calls) == 1  # one forward (and one backward) updates all three groups
    changed = {g: any(not np.array_equal(before[p.name], p.asnumpy()) for p in ps) for g, ps in groups.items()}
    assert changed == {"focal": True, "lower": True, "decoder": True}


def test_lr_schedule_clipped_by_default_and_port_formula_with_preset_port():
    from geocli.models.sdnet.backend import lr_end_factor
    from geocli.runtime.plan import Schedule
    from geocli.runtime.schedules import lr_values

    steps = 1167 * 20  # the port: ceil(583180 / 500) steps per epoch, 20 epochs
    default = config.resolve("sdnet", "default", None, [])
    lr = lr_values(0.004, Schedule("linear", end_factor=lr_end_factor(default, steps, 500, 583180)), steps)
    assert lr.min() >= 0 and lr[0] == pytest.approx(0.004)
    port = config.resolve("sdnet", "port", None, [])
    assert port["data"]["shuffle"] is False and port["optim"]["clip_lr"] is False
    lr = lr_values(0.004, Schedule("linear", end_factor=lr_end_factor(port, steps, 500, 10)), steps).astype(np.float64)
    i = np.arange(steps)
    np.testing.assert_allclose(lr, 0.004 * (1 - i * 500 / (583180 * 20)), atol=1e-8)
    assert (lr < 0).sum() == 12 and lr[-1] == pytest.approx(-2.0e-6, abs=2e-7)  # the port's quirk Q3
    assert lr[1167] == pytest.approx(0.0038, abs=1e-6)  # README: lr 0.003800 after epoch 1
