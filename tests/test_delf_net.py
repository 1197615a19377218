"""DELF's network against the port's architecture (research/cv/delf src/delf_model.py)."""

import numpy as np
import pytest

from geocli import config, registry


@pytest.fixture(scope="module")
def ms_ctx(tmp_path_factory):
    from geocli.runtime import context

    return context.setup(tmp_path_factory.mktemp("ctx"), mode="graph", seed=0, distributed=False)


def test_backbone_parameter_count_equals_keras_resnet50_without_top(ms_ctx):
    """Keras' ResNet50(include_top=False) reports 23,587,712 parameters, 23,534,592 trainable. The
    Keras-style trunk has the same layers (conv biases included), and MindSpore, like Keras, keeps
    BatchNorm's moving mean and variance as non-trainable parameters: 53,120 = 2 x 26,560 BN channels.
    So both figures must match exactly; DELF's stride-1 conv5 changes no parameter."""
    from geocli.models.delf.net import DelfNet
    from geocli.nets.resnet_keras import ResNet50Keras, count_parameters

    trunk = ResNet50Keras()
    assert count_parameters(trunk) == 23_587_712
    assert count_parameters(trunk, trainable_only=True) == 23_534_592
    net = DelfNet(num_classes=7, mode="attn")
    assert count_parameters(net.backbone) == 23_587_712
    # attention: 1024*512+512 conv, 4*512 BN, 512+1 conv; classifiers 2048*7+7 and 1024*7+7
    assert count_parameters(net) - 23_587_712 == (1024 * 512 + 512) + 4 * 512 + 513 + (2048 * 7 + 7) + (1024 * 7 + 7)


def test_modes_share_parameter_names_and_return_the_ports_outputs(ms_ctx):
    import mindspore as ms

    from geocli.models.delf.net import DelfNet

    images = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 96)).astype(np.float32))
    nets = {m: DelfNet(num_classes=5, mode=m) for m in ("tuning", "attn", "test")}
    names = {m: {p.name for p in n.get_parameters()} for m, n in nets.items()}
    assert names["test"] < names["attn"] and names["tuning"] < names["attn"]
    assert not any(n.startswith(("attention.", "attn.")) for n in names["tuning"])
    assert not any(n.startswith(("desc.", "backbone.res5")) for n in names["test"])
    for net in nets.values():
        net.set_train(False)
    assert nets["tuning"](images).shape == (2, 5)
    attn_logits, desc_logits = nets["attn"](images)
    assert attn_logits.shape == (2, 5) and desc_logits.shape == (2, 5)
    prob, block3 = nets["test"](images)
    assert prob.shape == (2, 1, 2, 3) and block3.shape == (2, 1024, 2, 3)  # stride 32
    narrow = DelfNet(num_classes=5, mode="test", width=0.25)  # the tests' training width
    narrow.set_train(False)
    assert {p.name for p in narrow.get_parameters()} == names["test"]
    assert narrow(images)[1].shape == (2, 256, 2, 3)


def test_attention_initialisers_put_scores_in_the_hundreds(ms_ctx):
    """The port's N(1, 0.5^2) conv2 weights give softplus scores far above the extraction threshold 100."""
    import mindspore as ms

    from geocli.models.delf.net import DelfNet

    net = DelfNet(mode="test")
    net.set_train(False)
    w2 = net.attention.conv2.weight.asnumpy()
    assert abs(w2.mean() - 1.0) < 0.1 and abs(w2.std() - 0.5) < 0.1
    assert np.allclose(net.attention.conv2.bias.asnumpy(), -0.6666)
    b1 = net.attention.conv1.bias.asnumpy()
    assert abs(b1.mean() + 1.0) < 0.3 and abs(b1.std() - 1.5) < 0.2
    beta = net.attention.bn.beta.asnumpy()
    assert abs(beta.mean() + 0.15) < 0.03 and abs(beta.std() - 0.17) < 0.03
    prob, _ = net(ms.Tensor(np.random.default_rng(1).uniform(-1, 1, (1, 3, 96, 96)).astype(np.float32)))
    assert prob.asnumpy().min() > 20


def test_global_pool_port_is_the_top_left_7x7_window(ms_ctx):
    import mindspore as ms

    from geocli.models.delf.net import MeanGlobalPool, PortGlobalPool, check_input_size, min_port_pool_size

    x = np.random.default_rng(2).standard_normal((1, 3, 10, 10)).astype(np.float32)
    port = PortGlobalPool()(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(port, x[:, :, :7, :7].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(MeanGlobalPool()(ms.Tensor(x)).asnumpy(), x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    assert min_port_pool_size() == 197
    check_input_size(321, "port")
    with pytest.raises(ValueError, match="at least 197 px"):
        check_input_size(96, "port")


def test_backend_builds_the_extraction_network_and_presets_resolve(ms_ctx):
    spec = registry.get("delf")
    assert spec.flags["stage"].choices == ("tuning", "attn")
    for preset in spec.presets:
        config.load_preset("delf", preset)
    cfg = config.load_preset("delf")
    assert (cfg["optim"]["lr"], cfg["optim"]["end_lr"], cfg["optim"]["momentum"]) == (0.01, 0.0001, 0.9)
    assert (cfg["train"]["batch_size"], cfg["train"]["steps"], cfg["optim"]["clip_global_norm"]) == (32, 500000, 10.0)
    assert cfg["model"]["global_pool"] == "mean"
    net = registry.load_backend("delf").build_network(cfg)
    assert net.mode == "test" and not net.training


@pytest.mark.parametrize("fmt", ["onnx", "mindir"])
def test_export_writes_the_extraction_network_with_parity(cli, tmp_path, fmt):
    """`geoloc export delf`: the port's export (the test-mode network, prob and block3) at a fixed shape;
    here the demo width at 2 x 96 px instead of the port's 7 x 2048 px."""
    pytest.importorskip("onnxruntime")
    from geocli import config, registry
    from geocli.runtime import checkpoint as ckpt

    cfg = config.load_preset("delf", "demo")
    network = registry.load_backend("delf").build_network(cfg)
    path = ckpt.save(tmp_path / "run" / "checkpoints" / "last.ckpt", network,
                     meta={"model": "delf", "preset": "demo", "config": cfg, "stage": "attn"})
    result = cli("export", "delf", "--checkpoint", path, "--format", fmt, "--out", tmp_path / "delf",
                 "--set", "export.batch=2", "--set", "export.size=96")
    assert result.exit_code == 0, result.output + result.stderr
    assert float(result.output.split("max abs difference")[1].split()[0]) <= 1e-4
    assert (tmp_path / f"delf.{fmt}").stat().st_size > 1_000_000  # the weights are in the file
    bad = cli("export", "delf", "--checkpoint", path, "--format", fmt, "--out", tmp_path / "bad",
              "--set", "export.size=16")
    assert bad.exit_code != 0 and "export.size" in bad.output + bad.stderr
