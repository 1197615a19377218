"""geocli.nets.dropout.Dropout: the masks are the documented hash of (seed, stream, draw), so training with
dropout is reproducible and resumes exactly (MindSpore's own CPU Dropout is neither)."""

import numpy as np
import pytest

from geocli.nets.dropout import DRAWS, Dropout, is_draw_counter, mix32_numpy


def _jit_call(cell):
    import mindspore as ms

    def call(x):
        return cell(x)

    return ms.jit(call)


def expected_mask(cell, draw: int, shape) -> np.ndarray:
    """The mask of draw ``draw`` computed from the docstring's recipe in NumPy alone."""
    with np.errstate(over="ignore"):
        key = mix32_numpy(np.uint32(draw) * np.uint32(0x9E3779B9) + cell.salt.asnumpy())
        index = np.arange(int(np.prod(shape)), dtype=np.uint32) + key
    return (mix32_numpy(index) < np.uint32(cell.threshold)).reshape(shape)


def test_masks_are_the_documented_hash_and_advance_per_call():
    import mindspore as ms

    drop = Dropout(0.3, seed=7, stream=2)
    drop.set_train(True)
    run = _jit_call(drop)
    x = ms.Tensor(np.ones((4, 16, 8, 8), np.float32))
    outputs = [run(x).asnumpy() for _ in range(3)]
    assert int(drop.dropout_draws.asnumpy()) == 3
    for draw, out in enumerate(outputs):
        mask = expected_mask(drop, draw, x.shape)
        np.testing.assert_allclose(out, np.where(mask, 1 / 0.7, 0.0), rtol=1e-6)
    assert not np.array_equal(outputs[0], outputs[1])


def test_keeps_one_minus_p_of_the_elements_independently():
    import mindspore as ms

    drop = Dropout(0.3, seed=0)
    drop.set_train(True)
    out = _jit_call(drop)(ms.Tensor(np.ones((64, 128, 8, 8), np.float32))).asnumpy()
    kept = (out > 0).ravel()
    n = kept.size
    assert abs(kept.mean() - 0.7) < 4 * np.sqrt(0.7 * 0.3 / n)  # binomial: 4 standard deviations
    assert abs(out.mean() - 1.0) < 0.01  # inverted dropout keeps the expectation
    neighbours = np.corrcoef(kept[:-1], kept[1:])[0, 1]
    assert abs(neighbours) < 4 / np.sqrt(n)


def test_seed_and_stream_change_the_masks_evaluation_is_the_identity():
    import mindspore as ms

    x = ms.Tensor(np.ones((2, 256), np.float32))
    masks = {}
    for seed, stream in ((0, 0), (0, 1), (1, 0), (0, 0)):
        drop = Dropout(0.5, seed=seed, stream=stream)
        drop.set_train(True)
        masks.setdefault((seed, stream), []).append(_jit_call(drop)(x).asnumpy())
    assert np.array_equal(*masks[(0, 0)])  # same seed and stream: the same masks in a new cell
    assert not np.array_equal(masks[(0, 0)][0], masks[(0, 1)][0])
    assert not np.array_equal(masks[(0, 0)][0], masks[(1, 0)][0])
    drop = Dropout(0.5, seed=0)
    drop.set_train(False)
    np.testing.assert_array_equal(_jit_call(drop)(x).asnumpy(), x.asnumpy())
    assert int(drop.dropout_draws.asnumpy()) == 0
    with pytest.raises(ValueError, match="must be in"):
        Dropout(1.0)


def test_a_conv_dropout_step_twice_gives_identical_losses_and_gradients():
    """The case MindSpore's nn.Dropout got wrong here: value_and_grad of conv -> dropout, called twice
    per step (a shared trunk), in graph mode."""
    import mindspore as ms
    from mindspore import nn

    def run():
        ms.set_seed(3)
        conv = nn.Conv2d(8, 8, 3, weight_init="he_uniform")
        drop = Dropout(0.3)
        drop.set_train(True)

        def loss(x, y):
            return (drop(conv(x)) * x).sum() + 2 * (drop(conv(y)) * y).sum()

        step = ms.jit(ms.value_and_grad(loss, None, conv.trainable_params()))
        x = ms.Tensor(np.random.default_rng(0).normal(size=(4, 8, 6, 6)).astype(np.float32))
        results = [step(x, x) for _ in range(3)]
        assert int(drop.dropout_draws.asnumpy()) == 6  # two draws per step
        return [(float(v), [g.asnumpy() for g in grads]) for v, grads in results]

    first, second = run(), run()
    for (v1, g1), (v2, g2) in zip(first, second):
        assert v1 == v2
        for a, b in zip(g1, g2):
            np.testing.assert_array_equal(a, b)
    assert first[0][0] != first[1][0]  # the masks move on from step to step


def test_training_with_dropout_is_reproducible_and_resumes_exactly(tmp_path):
    """The toy model with dropout (two optimizer stages: two forward passes, two draws per step): a second
    run equals the first, and a run interrupted at step 25 then resumed equals both, counter included."""
    from geocli import api
    from geocli.runtime import checkpoint as ckpt

    overrides = ["model.dropout=0.3"]

    def params(path):
        net, _ = ckpt.split_optimizer_state(ckpt.load(path)[0])
        return {k: v.asnumpy() for k, v in net.items()}

    first = params(api.train("toy", out=tmp_path / "a", overrides=overrides, quiet=True).last_checkpoint)
    second = params(api.train("toy", out=tmp_path / "b", overrides=overrides, quiet=True).last_checkpoint)

    def interrupt_at_25(step, total, losses):
        if step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.train("toy", out=tmp_path / "cut", overrides=overrides, quiet=True, progress=interrupt_at_25)
    resumed = params(api.train("toy", out=tmp_path / "cut", resume="auto", quiet=True).last_checkpoint)
    counter = "drop." + DRAWS
    assert int(first[counter]) == 80  # 40 steps x 2 stages
    for other in (second, resumed):
        assert other.keys() == first.keys()
        for name in first:
            np.testing.assert_array_equal(first[name], other[name], err_msg=name)


def test_checkpoints_without_draw_counters_still_load(tmp_path):
    """Checkpoints written before the counter existed, and converted weights, load with it at 0."""
    import mindspore as ms

    from geocli.runtime import checkpoint as ckpt

    from geocli.models.toy.backend import build

    net = build(8, 0.3)
    params = {p.name: ms.Parameter(p.asnumpy(), name=p.name) for p in net.get_parameters()
              if not is_draw_counter(p.name)}
    assert len(params) == len(list(net.get_parameters())) - 1
    assert ckpt.load_into(net, params, tmp_path / "old.ckpt") == []
    assert int(net.drop.dropout_draws.asnumpy()) == 0
    with pytest.raises(ckpt.CheckpointError, match="missing parameters body.weight"):
        ckpt.load_into(build(8, 0.3), {k: v for k, v in params.items() if k != "body.weight"}, tmp_path / "x.ckpt")
