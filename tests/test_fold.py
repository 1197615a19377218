"""BatchNorm folding for MindSpore inference (geocli.nets.fold): the same outputs as the unfolded network,
every BatchNorm of the inference graph gone, and the caller's network untouched."""

import numpy as np
import pytest

from geocli import config, registry

from bn_stats import with_statistics


def _count(network, kind):
    return sum(1 for _, cell in network.cells_and_names() if type(cell).__name__ == kind)


@pytest.mark.parametrize("model, preset, graph, batchnorms",
                         [("sdnet", "default", "descriptors", 12), ("posenet", "demo", "", 59),
                          ("creid", "demo", "", 53)])
def test_mindspore_runner_folds_and_matches_the_network(model, preset, graph, batchnorms):
    from geocli.runtime import engine

    cfg = config.load_preset(model, preset)
    backend = registry.load_backend(model)
    network = with_statistics(backend.build_network(cfg))
    before = [p.asnumpy().copy() for p in network.get_parameters()]
    inputs = [np.repeat(x, 3, axis=0) for x in backend.export_inputs(cfg)]

    expected = engine.cell_runner(engine._graph(backend, cfg, network, graph).cell)(*inputs)
    got = engine.runner("mindspore", backend, cfg, network, graph=graph)(*inputs)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * float(np.abs(e).max()))

    folded = engine.inference_network(backend, cfg, network)
    in_graph = engine._graph(backend, cfg, folded, graph).cell
    assert _count(network, "BatchNorm2d") - _count(folded, "BatchNorm2d") == batchnorms
    if model != "sdnet":
        assert _count(in_graph, "BatchNorm2d") == 0
    after = list(network.get_parameters())  # (wrapping it in a graph prefixes its names: MindSpore's doing)
    assert len(after) == len(before)
    for p, value in zip(after, before):  # the caller's network is untouched
        np.testing.assert_array_equal(p.asnumpy(), value, err_msg=p.name)
    assert _count(network, "BatchNorm2d") > 0


def test_folded_conv_is_the_algebra():
    import mindspore as ms
    from mindspore import nn

    from geocli.nets.fold import fold_batchnorm

    ms.set_seed(0)
    seq = with_statistics(nn.SequentialCell([nn.Conv2d(3, 4, 3, stride=2, pad_mode="pad", padding=1, has_bias=True),
                                               nn.BatchNorm2d(4, eps=1e-3), nn.ReLU()]))
    x = ms.Tensor(np.random.default_rng(1).normal(size=(2, 3, 9, 9)).astype(np.float32))
    expected = seq(x).asnumpy()
    assert fold_batchnorm(seq) == 1
    assert type(seq[1]).__name__ == "Identity" and seq[0].has_bias
    np.testing.assert_allclose(seq(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_copies_leave_the_random_streams_where_they_were():
    """A network built only to receive weights must not change what is drawn after it: the folded copy
    of an untrained network, evaluated before training, once changed the trained network's init."""
    import mindspore as ms

    from geocli.nets.copies import inference_copy
    from geocli.nets.fold import folded_copy

    backend = registry.load_backend("sdnet")
    cfg = config.load_preset("sdnet")
    ms.set_seed(3)
    trained = backend.build_network(cfg)
    ms.set_seed(3)
    backend.build_network(cfg)
    expected = (np.random.rand(4), [p.asnumpy() for p in backend.build_network(cfg).get_parameters()])
    ms.set_seed(3)
    backend.build_network(cfg)
    inference_copy(lambda: backend.build_network(cfg), trained)
    folded_copy(lambda: backend.build_network(cfg), trained)
    got = (np.random.rand(4), [p.asnumpy() for p in backend.build_network(cfg).get_parameters()])
    np.testing.assert_array_equal(got[0], expected[0])
    for g, e in zip(got[1], expected[1]):
        np.testing.assert_array_equal(g, e)


def test_delf_extraction_runs_a_folded_copy_with_the_same_outputs():
    """DELF extracts through the network itself (no export graph): `make_extractor` folds it."""
    import mindspore as ms

    from geocli.models.delf.tasks import make_extractor

    cfg = config.load_preset("delf", "demo")
    network = with_statistics(registry.load_backend("delf").build_network(cfg))
    extractor, _, _ = make_extractor(cfg, network)
    assert extractor.network is not network and _count(extractor.network, "BatchNorm2d") == 0
    assert _count(network, "BatchNorm2d") == 44  # stem + conv2_x..conv4_x (13 blocks x 3, 3 projections) + attention
    x = ms.Tensor(np.random.default_rng(2).normal(size=(2, 3, 96, 80)).astype(np.float32))
    for e, g in zip(network(x), extractor.network(x)):
        e, g = e.asnumpy(), g.asnumpy()
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * float(np.abs(e).max()))
