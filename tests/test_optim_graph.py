"""Gradient transforms of geocli.runtime.optim compile inside a jitted step (graph mode), where the
trainer runs them; PyNative alone would not catch a construct the graph compiler refuses."""

import numpy as np
import pytest

from geocli.runtime.plan import Clip


@pytest.fixture(scope="module")
def graph_ctx(tmp_path_factory):
    from geocli.runtime import context

    return context.setup(tmp_path_factory.mktemp("ctx"), mode="graph", seed=0, distributed=False)


def _jitted(transform):
    import mindspore as ms

    @ms.jit
    def step(a, b):
        return transform((a, b))

    return step


def test_grad_scale_and_clip_compile_and_compute(graph_ctx):
    import mindspore as ms

    from geocli.runtime.optim import make_clipper, make_scaler

    a = ms.Tensor(np.full(4, 3.0, np.float32))  # norm 6
    b = ms.Tensor(np.array([0.3, 0.4], np.float32))  # norm 0.5
    scaled = _jitted(make_scaler(2000.0))(a, b)  # Centroids-ReID's 1 / 5e-4 on the centres' gradients
    np.testing.assert_allclose(scaled[0].asnumpy(), np.full(4, 6000.0))
    np.testing.assert_allclose(scaled[1].asnumpy(), [600.0, 800.0])
    clipped = _jitted(make_clipper(Clip("norm", 1.0)))(a, b)  # each tensor to norm <= 1
    np.testing.assert_allclose(clipped[0].asnumpy(), np.full(4, 0.5), rtol=1e-6)
    np.testing.assert_allclose(clipped[1].asnumpy(), [0.3, 0.4], rtol=1e-6)


@pytest.mark.parametrize("limit", [0.5, 100.0])
def test_global_norm_clip_equals_mindspores(graph_ctx, limit):
    """The dot-product clip (make_clipper's sum_of_squares) gives ops.clip_by_global_norm's result,
    clipping (0.5) and not (100)."""
    import mindspore as ms
    from mindspore import ops

    from geocli.runtime.optim import make_clipper

    rng = np.random.default_rng(0)
    a = ms.Tensor(rng.standard_normal((3, 4, 5, 5)).astype(np.float32))
    b = ms.Tensor(rng.standard_normal(7).astype(np.float32))
    ours = _jitted(make_clipper(Clip("global_norm", limit)))(a, b)

    def mindspores(grads):
        return ops.clip_by_global_norm(grads, limit)

    theirs = _jitted(mindspores)(a, b)
    for x, y in zip(ours, theirs):
        np.testing.assert_allclose(x.asnumpy(), y.asnumpy(), rtol=1e-5, atol=1e-7)
    norm = np.sqrt(sum(float((t.asnumpy() ** 2).sum()) for t in ours))
    assert norm == pytest.approx(min(limit, np.sqrt(float((a.asnumpy() ** 2).sum() + (b.asnumpy() ** 2).sum()))),
                                 rel=1e-5)


@pytest.mark.parametrize("decay_all", [False, True])
def test_decay_all_reaches_batchnorm_parameters(graph_ctx, decay_all):
    """Coupled weight decay (Centroids-ReID's torch Adam): with ``decay_all`` every parameter, BatchNorm's
    gamma and beta included, gets ``weight_decay * p`` added to its gradient; MindSpore's default skips them."""
    import mindspore as ms
    from mindspore import nn

    from geocli.runtime.optim import build_optimizer
    from geocli.runtime.plan import OptimizerSpec, Schedule

    net = nn.SequentialCell([nn.Dense(3, 4), nn.BatchNorm1d(4)])
    for p in net.trainable_params():
        p.set_data(ms.Tensor(np.full(p.shape, 2.0, np.float32)))
    params = list(net.trainable_params())
    opt = build_optimizer(OptimizerSpec("main", params, kind="sgd", lr=1.0, schedule=Schedule(),
                                        weight_decay=0.25, decay_all=decay_all), total_steps=1)
    opt(tuple(ms.Tensor(np.zeros(p.shape, np.float32)) for p in params))  # a zero gradient: decay alone moves
    for p in params:
        norm_param = "gamma" in p.name or "beta" in p.name
        expected = 2.0 if norm_param and not decay_all else 2.0 - 0.25 * 2.0
        np.testing.assert_allclose(p.asnumpy(), expected, err_msg=p.name)
