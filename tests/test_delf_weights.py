"""Keras ResNet50 h5 -> DELF checkpoint: both h5 layouts users have, orientation, strict name checks,
and the port's parameter names."""

import numpy as np
import pytest

from geocli.errors import CheckpointError, DataError
from geocli.models.delf import weights as w
from geocli.nets import resnet_keras as rk

LEAF_KERAS1 = {"weight": "W", "bias": "b", "gamma": "gamma", "beta": "beta", "moving_mean": "running_mean",
               "moving_variance": "running_std"}
LEAF_KERAS2 = {"weight": "kernel", "bias": "bias", "gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean",
               "moving_variance": "moving_variance"}


def tf_keras_layer(layer):
    """keras-applications layer name -> tf.keras' (the inverse of weights.keras_layer_name)."""
    if layer == "conv1":
        return "conv1_conv"
    if layer == "bn_conv1":
        return "conv1_bn"
    kind, rest = ("conv", layer[3:]) if layer.startswith("res") else ("bn", layer[2:])
    stage, block, branch = rest[0], ord(rest[1]) - ord("a") + 1, rest.split("_branch")[1]
    index = {"1": 0, "2a": 1, "2b": 2, "2c": 3}[branch]
    return f"conv{stage}_block{block}_{index}_{kind}"


@pytest.fixture(scope="module")
def keras_tensors():
    """Random Keras-layout tensors (kernels HWIO) for every layer of ResNet50 without top."""
    rng = np.random.default_rng(0)
    shapes = rk.parameter_shapes()
    tensors = {}
    for layer in rk.keras_layers():
        module = rk.module_of(layer)
        for leaf in ("weight", "bias") if not layer.startswith("bn") else ("gamma", "beta", "moving_mean",
                                                                           "moving_variance"):
            shape = shapes[f"{module}.{leaf}"]
            if len(shape) == 4:
                shape = (shape[2], shape[3], shape[1], shape[0])  # OIHW -> HWIO
            tensors[(layer, leaf)] = rng.standard_normal(shape, dtype=np.float32)
    return tensors


def write_keras1(path, tensors):
    """The port's file: a group per layer, datasets <layer>_<W|b|gamma|...>_1:0 directly inside."""
    import h5py

    layers = list(dict.fromkeys(layer for layer, _ in tensors))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in ["input_1", *layers, "activation_1"]]
        f.create_group("input_1").attrs["weight_names"] = []
        f.create_group("activation_1").attrs["weight_names"] = []
        for layer in layers:
            group = f.create_group(layer)
            names = []
            for (lay, leaf), value in tensors.items():
                if lay == layer:
                    name = f"{layer}_{LEAF_KERAS1[leaf]}_1:0"
                    group.create_dataset(name, data=value)
                    names.append(name.encode())
            group.attrs["weight_names"] = names


def write_keras2(path, tensors, rename=lambda layer: layer):
    """keras-applications / tf.keras: <layer>/<layer>/<kernel|bias|...>:0."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        for (layer, leaf), value in tensors.items():
            name = rename(layer)
            group = f.require_group(name)
            group.require_group(name).create_dataset(f"{LEAF_KERAS2[leaf]}:0", data=value)
        f.create_group("pool1_pad").attrs["weight_names"] = []


@pytest.fixture(scope="module")
def ms_ctx(tmp_path_factory):
    from geocli.runtime import context

    return context.setup(tmp_path_factory.mktemp("ctx"), mode="graph", seed=0, distributed=False)


def test_all_three_layouts_convert_to_the_same_correctly_oriented_checkpoint(tmp_path, keras_tensors, ms_ctx):
    from typer.testing import CliRunner

    import typer

    from geocli import config, registry
    from geocli.models.delf.net import DelfNet
    from geocli.models.delf.train_commands import convert_keras_resnet50
    from geocli.runtime import checkpoint as ckpt
    from geocli.runtime.trainer import load_weights

    files = {"keras1": tmp_path / "port.h5", "keras2": tmp_path / "apps.h5", "tf.keras": tmp_path / "tfkeras.h5"}
    write_keras1(files["keras1"], keras_tensors)
    write_keras2(files["keras2"], keras_tensors)
    write_keras2(files["tf.keras"], keras_tensors, rename=tf_keras_layer)

    app = typer.Typer()
    app.command()(convert_keras_resnet50)
    converted = {}
    for layout, h5 in files.items():
        out = tmp_path / f"{layout}.ckpt"
        result = CliRunner().invoke(app, [str(h5), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "loaded 318 tensors (23,587,712 values" in result.output.replace("\n", " ")
        params, meta = ckpt.load(out)
        converted[layout] = {k: v.asnumpy() for k, v in params.items()}
        assert meta["weights"] == "keras-resnet50"
        again = CliRunner().invoke(app, [str(h5), "--out", str(out)])
        assert again.exit_code != 0 and "--overwrite" in str(again.exception or again.output)
    for layout in ("keras2", "tf.keras"):
        assert converted[layout].keys() == converted["keras1"].keys()
        for name, value in converted["keras1"].items():
            np.testing.assert_array_equal(converted[layout][name], value, err_msg=f"{layout} {name}")

    c = converted["keras1"]
    stem = keras_tensors[("conv1", "weight")]  # HWIO (7, 7, 3, 64)
    np.testing.assert_array_equal(c["backbone.conv1.weight"], stem.transpose(3, 2, 0, 1))  # the stem is loaded
    k = keras_tensors[("res3b_branch2b", "weight")]  # a 3x3 kernel, HWIO
    ours = c["backbone.res3b.branch2b.weight"]
    assert ours[5, 7, 0, 2] == k[0, 2, 7, 5]  # [o, i, h, w] = [h, w, i, o]: not spatially transposed
    assert ours[5, 7, 0, 2] != k[2, 0, 7, 5]
    np.testing.assert_array_equal(c["backbone.res3b.bn_branch2b.moving_variance"],
                                  keras_tensors[("bn3b_branch2b", "moving_variance")])

    # --weights loads it into the tuning network through the backend's name map
    cfg = config.load_preset("delf")
    backend = registry.load_backend("delf")
    net = DelfNet(num_classes=3, mode="tuning")
    unused = load_weights(net, tmp_path / "keras1.ckpt", lambda p: backend.map_weights(p, cfg))
    assert unused == []
    np.testing.assert_array_equal(net.backbone.res3b.branch2b.weight.asnumpy(), ours)


def test_a_missing_or_extra_tensor_is_an_error_naming_it(keras_tensors):
    tensors = {f"{layer}.{leaf}": v for (layer, leaf), v in keras_tensors.items()}
    assert len(w.to_network(dict(tensors), "f.h5")) == 318
    short = dict(tensors)
    del short["bn4c_branch2a.gamma"]
    with pytest.raises(DataError, match=r"f.h5: no tensor for parameter res4c.bn_branch2a.gamma"):
        w.to_network(short, "f.h5")
    extra = dict(tensors, **{"fc1000.weight": np.zeros((2048, 1000), np.float32)})
    with pytest.raises(DataError, match=r"tensor fc1000.weight belongs to no layer"):
        w.to_network(extra, "f.h5")
    wrong = dict(tensors, **{"res2a_branch2b.weight": np.zeros((3, 3, 64, 32), np.float32)})
    with pytest.raises(DataError, match=r"res2a_branch2b.weight has shape \(32, 64, 3, 3\).*needs \(64, 64, 3, 3\)"):
        w.to_network(wrong, "f.h5")


def test_unknown_datasets_and_non_h5_files_are_refused(tmp_path):
    import h5py

    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.create_group("dense").create_dataset("weights_matrix", data=np.zeros(3, np.float32))
    with pytest.raises(DataError, match="dense/weights_matrix is not a Keras weight name"):
        w.read_h5(bad)
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5 file"):
        w.read_h5(tmp_path / "x.h5")


def test_the_ports_parameter_names_map_onto_every_parameter():
    """The port's Model(state='attn') names (src/delf_model.py: auto_prefix=False, update_parameters_name)."""
    port = {}
    for layer in rk.keras_layers():
        leaves = ("weight", "bias") if not layer.startswith("bn") else ("gamma", "beta", "moving_mean", "moving_variance")
        for leaf in leaves:
            port[f"{layer}.{leaf}"] = layer
    for sub, leaves in (("conv1_needl2", ("weight", "bias")), ("conv2_needl2", ("weight", "bias")),
                        ("bn1", ("gamma", "beta", "moving_mean", "moving_variance"))):
        for leaf in leaves:
            port[f"attention.{sub}.{leaf}"] = sub
    for head in ("desc", "attn"):
        port[f"{head}.weight"] = port[f"{head}.bias"] = head
    port.update({"moments.desc.weight": 0, "learning_rate": 0, "global_step": 0})
    mapped = w.map_port_names(port, w.network_names())
    assert set(mapped) == set(w.network_names())
    assert mapped["backbone.res4f.bn_branch2c.moving_variance"] == "bn4f_branch2c"
    assert mapped["attention.bn.gamma"] == "bn1"
    with pytest.raises(CheckpointError, match="none of the checkpoint's 2 entries is a DELF parameter"):
        w.map_port_names({"fc.weight": 0, "conv.bias": 0}, w.network_names())


def test_attn_stage_weights_must_hold_the_tuned_backbone_and_classifier():
    from geocli import config, registry

    backend = registry.load_backend("delf")
    cfg = config.load_preset("delf")
    cfg["train"]["stage"] = "attn"
    backbone_only = {n: 0 for n in w.network_names() if n.startswith("backbone.")}
    with pytest.raises(CheckpointError, match="--stage attn starts from the tuning stage's checkpoint.*desc.weight"):
        backend.map_weights(backbone_only, cfg)
    tuned = dict(backbone_only, **{"desc.weight": 0, "desc.bias": 0})
    assert set(backend.map_weights(tuned, cfg)) == set(tuned)
