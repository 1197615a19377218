"""PoseNet's network, loss and weight map against the MindSpore port's architecture (research/cv/PoseNet)."""

import numpy as np
import pytest

from geocli import config, registry
from geocli.errors import CheckpointError
from geocli.nets.dropout import is_draw_counter

#: The port's Inception widths (in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (a 3x3 kernel), pool proj).
PORT_INCEPTION = {
    "3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


def port_parameters():
    """Names and shapes of every parameter of the port's PoseNet, written from its src/posenet.py."""
    shapes = {}

    def conv_block(name, cin, cout, k):  # Conv2dBlock: conv without bias + BatchNorm2d
        shapes[f"{name}.conv.weight"] = (cout, cin, k, k)
        for leaf in ("gamma", "beta", "moving_mean", "moving_variance"):
            shapes[f"{name}.bn.{leaf}"] = (cout,)

    def dense(name, cin, cout):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin), (cout,)

    conv_block("conv1", 3, 64, 7)
    conv_block("conv2", 64, 64, 1)
    conv_block("conv3", 64, 192, 3)
    for b, (cin, n1, n3r, n3, n5r, n5, pool) in PORT_INCEPTION.items():
        conv_block(f"block{b}.b1", cin, n1, 1)
        conv_block(f"block{b}.b2.0", cin, n3r, 1)
        conv_block(f"block{b}.b2.1", n3r, n3, 3)
        conv_block(f"block{b}.b3.0", cin, n5r, 1)
        conv_block(f"block{b}.b3.1", n5r, n5, 3)
        conv_block(f"block{b}.b4", cin, pool, 1)
    conv_block("conv1x1_1", 512, 128, 1)
    conv_block("conv1x1_2", 528, 128, 1)
    dense("fc2048", 2048, 1024)  # shared by both auxiliary regressors
    dense("cls_fc_pose_xyz_1024", 1024, 512)
    dense("cls_fc_pose_xyz_512", 512, 3)
    dense("cls_fc_pose_wpqr_1024", 1024, 4)
    dense("fc", 1024, 2048)
    dense("cls_fc_pose_xyz", 2048, 3)
    dense("cls_fc_pose_wpqr", 2048, 4)
    return shapes


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from geocli.runtime import context

    return context.setup(tmp_path_factory.mktemp("ctx"), mode="graph", seed=0, distributed=False)


@pytest.fixture(scope="module")
def backend():
    return registry.load_backend("posenet")


def test_registered_with_its_tasks_and_presets():
    spec = registry.get("posenet")
    assert spec.tasks == ("train", "eval", "export", "retrieve", "demo")
    assert {"default", "port", "demo", "kingscollege", "stmaryschurch", "oldhospital", "shopfacade",
            "greatcourt", "street"} <= set(spec.presets)
    for preset in spec.presets:
        config.load_preset("posenet", preset)  # every preset resolves against default.yaml
    default = config.load_preset("posenet")
    assert (default["optim"]["kind"], default["optim"]["lr"], default["optim"]["weight_decay"]) == ("adagrad", 0.001, 0.5)
    assert (default["optim"]["clip_norm"], default["train"]["batch_size"], default["train"]["steps"]) == (50.0, 75, 30000)
    assert config.load_preset("posenet", "port")["data"]["resize"] == "fixed"
    assert default["data"]["resize"] == "shorter"


def test_parameter_count_equals_the_ports_architecture(ctx, backend):
    from geocli.models.posenet.net import count_parameters

    port = port_parameters()
    trainable = sum(int(np.prod(s)) for n, s in port.items() if "moving_" not in n)
    net = backend.build_network(config.load_preset("posenet"), training=True)
    assert count_parameters(net) == trainable == 10_475_694
    assert count_parameters(net, trainable_only=False) == sum(int(np.prod(s)) for s in port.values())
    # the port's README rounds this to "10.7 M"; the architecture it ships has 10.48 M
    assert round(trainable / 1e6, 2) == 10.48


def test_forward_shapes_at_224_and_backward_at_64(ctx, backend):
    import mindspore as ms

    cfg = config.load_preset("posenet")
    x = ms.Tensor(backend.export_inputs(cfg)[0])
    assert x.shape == (1, 3, 224, 224)
    inference = backend.build_network(cfg)
    assert [o.shape for o in inference(x)] == [(1, 3), (1, 4)]

    small = config.apply_overrides(cfg, ["model.heads=global", "data.crop=64"])
    net = backend.build_network(small, training=True)
    from geocli.models.posenet.loss import PoseLoss

    loss = PoseLoss()
    images = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32))
    poses = ms.Tensor(np.array([[1, 2, 3, 1, 0, 0, 0], [0, 1, 0, 0.5, 0.5, 0.5, 0.5]], np.float32))
    params = net.trainable_params()

    def objective(a, b):  # the outputs come back as aux: one compiled graph, not a forward graph besides
        outputs = net(a)
        return loss(outputs, b)[0], outputs

    grad_fn = ms.value_and_grad(objective, None, params, has_aux=True)
    (value, outputs), grads = grad_fn(images, poses)
    assert [o.shape for o in outputs] == [(2, 3), (2, 4)] * 3
    assert np.isfinite(float(value.asnumpy()))
    assert [g.shape for g in grads] == [p.shape for p in params]
    assert all(np.isfinite(g.asnumpy()).all() for g in grads)
    assert sum(float(np.abs(g.asnumpy()).sum()) > 0 for g in grads) == len(params)  # every parameter learns


def port_distance(predicted, real):
    """The port's EuclideanDistance, op by op: sub, square, sum over axis 0 (the batch), sqrt,
    square, sum over axis 0, sqrt."""
    res = (predicted - real) ** 2
    res = np.sqrt(res.sum(axis=0))
    return np.sqrt((res ** 2).sum(axis=0))


@pytest.mark.parametrize("reduction", ["batch", "mean"])
def test_loss_matches_a_hand_computation(ctx, reduction):
    import mindspore as ms

    from geocli.models.posenet.loss import PoseLoss

    rng = np.random.default_rng(3)
    outs = [rng.normal(size=(5, 3 if i % 2 == 0 else 4)).astype(np.float32) for i in range(6)]
    poses = rng.normal(size=(5, 7)).astype(np.float32)
    weights_x, weights_q = (3.0, 3.0, 10.0), (150.0, 150.0, 500.0)
    expected_x = expected_q = 0.0
    for head in range(3):
        dx, dq = outs[2 * head], outs[2 * head + 1]
        if reduction == "batch":
            ex, eq = port_distance(dx, poses[:, :3]), port_distance(dq, poses[:, 3:])
        else:
            ex = np.mean(np.linalg.norm(dx - poses[:, :3], axis=1))
            eq = np.mean(np.linalg.norm(dq - poses[:, 3:], axis=1))
        expected_x += weights_x[head] * ex
        expected_q += weights_q[head] * eq
    total, xyz, wpqr = PoseLoss(weights_x, weights_q, reduction)([ms.Tensor(o) for o in outs], ms.Tensor(poses))
    np.testing.assert_allclose(float(xyz.asnumpy()), expected_x, rtol=1e-5)
    np.testing.assert_allclose(float(wpqr.asnumpy()), expected_q, rtol=1e-5)
    np.testing.assert_allclose(float(total.asnumpy()), expected_x + expected_q, rtol=1e-5)
    if reduction == "batch":  # one norm over the whole batch, not a mean of per-frame norms
        d = outs[4] - poses[:, :3]
        assert port_distance(d, 0) == pytest.approx(np.sqrt((d.astype(np.float64) ** 2).sum()), rel=1e-5)
    scaled = PoseLoss(weights_x, weights_q, reduction, xyz_scale=[2.0, 2.0, 2.0])
    half = float(scaled([ms.Tensor(o) for o in outs], ms.Tensor(poses))[1].asnumpy())
    assert half == pytest.approx(expected_x / 2, rel=1e-5)


def test_port_checkpoint_loads_through_the_name_map(ctx, backend, tmp_path):
    import mindspore as ms

    from geocli.runtime import checkpoint as ckpt

    rng = np.random.default_rng(0)
    port = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in port_parameters().items()}
    entries = [{"name": "network." + n, "data": ms.Tensor(v)} for n, v in port.items()]  # PosenetWithLoss names
    entries += [{"name": "accum.network.fc.weight", "data": ms.Tensor(port["fc.weight"])},
                {"name": "global_step", "data": ms.Tensor(np.array([5], np.int32))}]
    path = tmp_path / "posenet_port.ckpt"
    ms.save_checkpoint(entries, str(path))

    cfg = config.load_preset("posenet")
    net = backend.build_network(cfg)
    params, meta = ckpt.load(path)
    mapped = backend.map_weights(params, cfg)
    unused = ckpt.load_into(net, mapped, path, strict=True)
    assert unused == [] and meta == {}
    from geocli.models.posenet.weights import port_name_map

    table = port_name_map()
    weights = [p for p in net.get_parameters() if not is_draw_counter(p.name)]  # not the dropout counters
    assert len(table) == len(port) == len(weights)
    own = {p.name: p.asnumpy() for p in net.get_parameters()}
    for port_name, value in port.items():
        np.testing.assert_array_equal(own[table[port_name]], value, err_msg=port_name)


def test_googlenet_checkpoint_initialises_the_backbone_only(ctx, backend, tmp_path):
    import mindspore as ms

    from geocli.runtime import checkpoint as ckpt

    backbone = {n: s for n, s in port_parameters().items() if n.startswith(("conv1.", "conv2.", "conv3.", "block"))}
    entries = [{"name": n, "data": ms.Tensor(np.full(s, 0.5, np.float32))} for n, s in backbone.items()]
    entries.append({"name": "classifier.weight", "data": ms.Tensor(np.zeros((1000, 1024), np.float32))})
    path = tmp_path / "googlenet_imagenet.ckpt"
    ms.save_checkpoint(entries, str(path))
    cfg = config.load_preset("posenet")
    net = backend.build_network(cfg)
    mapped = backend.map_weights(ckpt.load(path)[0], cfg)
    assert len(mapped) == len(backbone) and all(n.startswith("backbone.") for n in mapped)
    ckpt.load_into(net, mapped, path, strict=False)
    values = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert all((values[n] == 0.5).all() for n in mapped)
    assert not (values["main_fc.weight"] == 0.5).all()
    # --weights from a geoloc checkpoint: parameters pass through, the old data's statistics do not
    geoloc_names = backend.map_weights({"main_fc.bias": ms.Tensor(np.zeros(2048, np.float32)),
                                        "xyz_mean": ms.Tensor(np.zeros((1, 3), np.float32))}, cfg)
    assert list(geoloc_names) == ["main_fc.bias"]
    with pytest.raises(CheckpointError, match="none of the checkpoint's 1 entries"):
        backend.map_weights({"resnet.layer1.weight": ms.Tensor(np.zeros(1, np.float32))}, cfg)


def _numpy_same_max_pool(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Reference 'same' max-pool: TF-style padding (the extra row/column at the end), -inf outside."""
    n = x.shape[-1]
    out = -(-n // stride)
    total = max((out - 1) * stride + kernel - n, 0)
    before = total // 2
    padded = np.pad(x, ((0, 0), (0, 0), (before, total - before), (before, total - before)),
                    constant_values=-np.inf)
    return np.stack([np.stack([padded[:, :, i * stride:i * stride + kernel, j * stride:j * stride + kernel].max(axis=(2, 3))
                               for j in range(out)], axis=-1) for i in range(out)], axis=-2)


def test_same_max_pool_matches_tf_style_padding(ctx):
    """GoogLeNet's pools (MindSpore 'same' mode, the form that exports to ONNX) pad as TF does, for odd
    and even sizes, on signed inputs (so a zero pad would show)."""
    import mindspore as ms

    from geocli.nets.pooling import MaxPool2d

    rng = np.random.default_rng(0)
    for size in (7, 8, 113):
        x = rng.standard_normal((1, 2, size, size)).astype(np.float32)
        for kernel, stride in ((3, 2), (3, 1), (2, 2)):
            ours = MaxPool2d(kernel, stride, "same")(ms.Tensor(x)).asnumpy()
            np.testing.assert_array_equal(ours, _numpy_same_max_pool(x, kernel, stride))
