"""1x1 stride-1 convolutions with a one-GEMM input gradient (geocli.runtime.pointwise_conv, part of
``--conv auto``): the same outputs and gradients as nn.Conv2d on both of its paths (the GEMM where many
input channels meet a small map, MindSpore's kernel elsewhere), the same parameter names, the same training,
and export gets nn.Conv2d back. Nothing here needs the compiled op."""

import numpy as np
import pytest

from geocli.runtime import blocked_conv, pointwise_conv
from grad_check import input_and_weight_gradients


@pytest.fixture(scope="module")
def graph_mode(tmp_path_factory):
    from geocli.runtime import context

    context.setup(tmp_path_factory.mktemp("ctx"), mode="graph", seed=0, threads=2, distributed=False)


def _pair(cin, cout, **kwargs):
    """Two equal networks around one 1x1 convolution: plain, and with it swapped."""
    import mindspore as ms
    from mindspore import nn

    ms.set_seed(0)
    plain, swapped = (nn.SequentialCell([nn.Conv2d(cin, cout, 1, **kwargs), nn.ReLU()]) for _ in range(2))
    for a, b in zip(plain.get_parameters(), swapped.get_parameters()):
        b.set_data(a.data)
    return plain, swapped


def test_the_rule_takes_many_channels_on_small_maps():
    assert pointwise_conv.gemm_data_gradient(1024, 16 * 8)  # ResNet50's layer3/4 at Centroids-ReID's 256 x 128
    assert pointwise_conv.gemm_data_gradient(512, 32 * 16)
    assert not pointwise_conv.gemm_data_gradient(256, 16 * 8)  # few channels: MindSpore's kernel is close
    assert not pointwise_conv.gemm_data_gradient(512, 41 * 41)  # a large map: the transposes cost more


@pytest.mark.parametrize("cin, hw, bias", [(512, (4, 6), False), (512, (4, 6), True), (6, (5, 7), True),
                                           (512, (24, 24), False)],
                         ids=["gemm", "gemm-bias", "mindspore-few-channels", "mindspore-large-map"])
def test_outputs_and_gradients_equal_mindspores(graph_mode, cin, hw, bias):
    import mindspore as ms

    plain, swapped = _pair(cin, 8, has_bias=bias, pad_mode="valid")
    names = [p.name for p in swapped.get_parameters()]
    assert blocked_conv.swap_pointwise(swapped) == 1
    assert type(swapped[0]).__name__ == "PointwiseConv"
    assert [p.name for p in swapped.get_parameters()] == names  # checkpoints keep their keys
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((3, cin, *hw)).astype(np.float32))
    want, got = plain(x).asnumpy(), swapped(x).asnumpy()
    np.testing.assert_array_equal(got, want)  # the forward pass is MindSpore's own primitive
    r = ms.Tensor(rng.standard_normal(want.shape).astype(np.float32))
    got_grads, want_grads = input_and_weight_gradients(swapped, x, r), input_and_weight_gradients(plain, x, r)
    assert len(got_grads) == 2 + bias
    for a, b in zip(want_grads, got_grads):
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max())


def test_only_unpadded_float32_1x1_stride_1_convolutions_are_taken(graph_mode):
    import mindspore as ms
    from mindspore import nn

    assert pointwise_conv.takes(nn.Conv2d(4, 8, 1, pad_mode="valid"))
    assert pointwise_conv.takes(nn.Conv2d(4, 8, 1, pad_mode="pad", padding=0))
    assert not pointwise_conv.takes(nn.Conv2d(4, 8, 1, pad_mode="pad", padding=1))
    assert not pointwise_conv.takes(nn.Conv2d(4, 8, 1, stride=2))
    assert not pointwise_conv.takes(nn.Conv2d(4, 8, 3))
    assert not pointwise_conv.takes(nn.Conv2d(4, 8, 1, group=2))
    assert not pointwise_conv.takes(nn.Dense(4, 8))
    half = nn.Conv2d(4, 8, 1)
    half.weight.set_dtype(ms.float16)
    assert not pointwise_conv.takes(half)


def test_training_matches_mindspores_and_export_gets_conv2d_back(graph_mode, tmp_path):
    """Five SGD steps through a 1x1 layer on the GEMM path: the same parameters as with nn.Conv2d; then the
    export puts nn.Conv2d back."""
    import mindspore as ms
    from mindspore import nn

    rng = np.random.default_rng(1)
    x = ms.Tensor(rng.standard_normal((4, 16, 6, 6)).astype(np.float32))
    y = ms.Tensor(rng.standard_normal((4, 8)).astype(np.float32))

    def trained(swap):
        ms.set_seed(0)
        net = nn.SequentialCell([nn.Conv2d(16, 512, 3, pad_mode="same"), nn.ReLU(),
                                 nn.Conv2d(512, 8, 1, has_bias=True), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()])
        if swap:
            assert blocked_conv.swap_pointwise(net) == 1
        opt = nn.SGD(net.trainable_params(), learning_rate=0.1)

        def loss_fn(inp, target):
            return ((net(inp) - target) ** 2).mean()

        step = ms.jit(ms.value_and_grad(loss_fn, None, opt.parameters))
        losses = []
        for _ in range(5):
            loss, grads = step(x, y)
            opt(grads)
            losses.append(float(loss.asnumpy()))
        return net, losses

    plain, plain_losses = trained(False)
    swapped, losses = trained(True)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-5)
    for a, b in zip(plain.get_parameters(), swapped.get_parameters()):
        assert a.name == b.name
        np.testing.assert_allclose(b.asnumpy(), a.asnumpy(), atol=1e-5, err_msg=a.name)
    assert blocked_conv.plain_convs(swapped) == 1 and type(swapped[2]) is nn.Conv2d
