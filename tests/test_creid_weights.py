"""Converting torchvision's ResNet50 layout and the reference's Lightning checkpoint, checked against a
PyTorch forward of the same weights (v1.5 strides, torchvision padding, no stem ReLU, last stride 1)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converter reads PyTorch files; torch is not installed")
F = torch.nn.functional

WIDTH = 8  # a narrow ResNet50 keeps the file small; names and layout are torchvision's


def torchvision_state(width=WIDTH, seed=0):
    """A random state dict with exactly torchvision's ResNet50 names and shapes (at ``width``)."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5

    def bn(name, c):
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_var"] = 1 + 0.1 * torch.rand(c, generator=g)
        state[f"{name}.num_batches_tracked"] = torch.tensor(7)

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    cin = width
    for i, n in enumerate((3, 4, 6, 3)):
        planes = width * 2 ** i
        for b in range(n):
            pre = f"layer{i + 1}.{b}"
            conv(f"{pre}.conv1", planes, cin, 1)
            bn(f"{pre}.bn1", planes)
            conv(f"{pre}.conv2", planes, planes, 3)
            bn(f"{pre}.bn2", planes)
            conv(f"{pre}.conv3", planes * 4, planes, 1)
            bn(f"{pre}.bn3", planes * 4)
            if b == 0:
                conv(f"{pre}.downsample.0", planes * 4, cin, 1)
                bn(f"{pre}.downsample.1", planes * 4)
            cin = planes * 4
    state["fc.weight"] = torch.randn(1000, cin, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def torch_forward(s, x, prefix="", last_stride=1, stem_relu=False):
    """torchvision's ResNet50 forward written out (eval-mode BatchNorm)."""
    def bn(name, t):
        return F.batch_norm(t, s[f"{name}.running_mean"], s[f"{name}.running_var"], s[f"{name}.weight"],
                            s[f"{name}.bias"], False, 0.0, 1e-5)

    p = prefix
    x = bn(f"{p}bn1", F.conv2d(x, s[f"{p}conv1.weight"], stride=2, padding=3))
    if stem_relu:
        x = F.relu(x)
    x = F.max_pool2d(x, 3, 2, 1)
    for i, n in enumerate((3, 4, 6, 3)):
        for b in range(n):
            pre = f"{p}layer{i + 1}.{b}"
            stride = (1, 2, 2, last_stride)[i] if b == 0 else 1
            out = F.relu(bn(f"{pre}.bn1", F.conv2d(x, s[f"{pre}.conv1.weight"])))
            out = F.relu(bn(f"{pre}.bn2", F.conv2d(out, s[f"{pre}.conv2.weight"], stride=stride, padding=1)))
            out = bn(f"{pre}.bn3", F.conv2d(out, s[f"{pre}.conv3.weight"]))
            short = bn(f"{pre}.downsample.1", F.conv2d(x, s[f"{pre}.downsample.0.weight"], stride=stride)) \
                if b == 0 else x
            x = F.relu(out + short)
    return x


def _cfg(width=WIDTH):
    from geocli import config

    return config.resolve("creid", "default", None, [f"model.width={width}", "data.size=[64,32]"])


def test_torchvision_file_converts_and_computes_what_pytorch_computes(cli, tmp_path):
    import mindspore as ms

    from geocli.models.creid.backend import build
    from geocli.runtime import checkpoint as ckpt
    from geocli.runtime.trainer import load_weights

    state = torchvision_state()
    src = tmp_path / "resnet50-19c8e357.pth"
    torch.save(state, src)
    result = cli("data", "convert-weights", "torchvision-resnet50", src)
    assert result.exit_code == 0, result.output + result.stderr
    out = tmp_path / "resnet50-19c8e357.ms.ckpt"
    assert out.is_file() and "torchvision" in result.output
    again = cli("data", "convert-weights", "torchvision-resnet50", src)
    assert again.exit_code != 0 and "--overwrite" in again.output + again.stderr

    params, _ = ckpt.load(out)
    assert "backbone.layer2.0.downsample.1.moving_variance" in params and not any("fc." in n for n in params)
    cfg = _cfg()
    net = build(cfg)
    from geocli.models.creid.backend import CReIDBackend

    unused = load_weights(net, out, mapper=lambda p: CReIDBackend.map_weights(None, p, cfg))
    assert unused == []
    np.testing.assert_array_equal(net.backbone.layer3.get_parameters().__next__().asnumpy(),
                                  state["layer3.0.conv1.weight"].numpy())
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 32)).astype(np.float32)
    net.set_train(False)
    ours = net.backbone(ms.Tensor(x)).asnumpy()
    with torch.no_grad():
        ref = torch_forward(state, torch.from_numpy(x)).numpy()
        with_relu = torch_forward(state, torch.from_numpy(x), stem_relu=True).numpy()
    assert ours.shape == ref.shape == (2, 32 * WIDTH, 4, 2)  # last stride 1: 1/16 of 64x32
    # float32 through 50 layers of random weights (activations up to ~200): compare relative to the scale
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.abs(ref - with_relu).max() > 1e-3  # the stem ReLU matters, and it is absent here


def test_lightning_checkpoint_maps_backbone_and_bnneck(cli, tmp_path):
    from geocli.api import load_model

    state = torchvision_state(seed=1)
    lightning = {f"backbone.base.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    dim = 32 * WIDTH
    lightning.update({"bn.weight": torch.rand(dim) + 0.5, "bn.bias": torch.zeros(dim), "bn.running_mean": torch.randn(dim),
                      "bn.running_var": torch.rand(dim) + 0.5, "bn.num_batches_tracked": torch.tensor(3),
                      "fc_query.weight": torch.randn(5, dim), "center_loss.centers": torch.randn(5, dim)})
    src = tmp_path / "market1501_resnet50_256_128_epoch_120.ckpt"
    torch.save({"state_dict": lightning, "epoch": 120}, src)
    out = tmp_path / "ctl.ckpt"
    result = cli("data", "convert-weights", "torchvision-resnet50", src, "--out", out)
    assert result.exit_code == 0 and "lightning" in result.output, result.output + result.stderr
    loaded = load_model("creid", out, overrides=[f"model.width={WIDTH}", "data.size=[64,32]"])
    np.testing.assert_array_equal(loaded.network.bnneck.moving_mean.asnumpy(), lightning["bn.running_mean"].numpy())
    np.testing.assert_array_equal(loaded.network.backbone.conv1.weight.asnumpy(), state["conv1.weight"].numpy())


def test_not_a_torch_file_is_one_clear_error(cli, tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    result = cli("data", "convert-weights", "torchvision-resnet50", bad)
    assert result.exit_code != 0
    text = result.output + result.stderr
    assert "weights.pth" in text and "Traceback" not in text
