"""ImageNet VGG16 -> VIGOR branches: the name map covers every trunk parameter, the first convolution
is folded exactly for the reference's BGR mean-subtracted input, and Keras kernels are transposed."""

from __future__ import annotations

import numpy as np
import pytest

from geocli import config
from geocli.models.vigor import weights as W


def _torch_state(batch_norm: bool, rng):
    from geocli.nets.vgg import VGG16_BLOCKS

    state, cin = {}, 3
    idx = iter(W.torchvision_indices(batch_norm))
    for _b, n, cout in VGG16_BLOCKS:
        for _ in range(n):
            i = next(idx)
            state[f"features.{i}.weight"] = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.01
            state[f"features.{i}.bias"] = rng.standard_normal(cout).astype(np.float32)
            if batch_norm:
                for k in ("weight", "bias", "running_mean", "running_var"):
                    state[f"features.{i + 1}.{k}"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
            cin = cout
    state["classifier.0.weight"] = np.zeros((4, 4), np.float32)  # ignored
    return state


@pytest.mark.parametrize("preset", ["default", "port"])
def test_converted_names_cover_both_trunks(tmp_path, preset):
    torch = pytest.importorskip("torch")
    import mindspore as ms

    from geocli.models.vigor.net import VigorNet

    rng = np.random.default_rng(0)
    bn = preset == "port"
    state = _torch_state(bn, rng)
    path = tmp_path / "vgg.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, str(path))
    result = W.convert(path, tmp_path / "vgg.ckpt", preset=preset)
    params = ms.load_checkpoint(result["out"])
    net = VigorNet((64, 128), (64, 64), batch_norm=bn, width=0.0625)  # names do not depend on the width
    trunk = {p.name for p in net.get_parameters() if ".vgg." in p.name}
    assert set(params) == trunk  # every trunk parameter of both branches, nothing else
    np.testing.assert_array_equal(params["sat.vgg.conv5_3.conv.weight"].asnumpy(), state["features.28.weight"]
                                  if not bn else state["features.40.weight"])
    with pytest.raises(Exception, match="exists"):
        W.convert(path, tmp_path / "vgg.ckpt", preset=preset)


def test_first_conv_fold_is_exact_for_bgr_mean_subtracted_input():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    cfg = config.load_preset("vigor", "default")
    w2, b2 = W.fold_first_conv(w, b, cfg["data"]["mean"])
    bgr = rng.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    rgb = bgr[:, ::-1]
    theirs = torch.nn.functional.conv2d(
        torch.from_numpy(((rgb / 255.0 - W.IMAGENET_MEAN[None, :, None, None]) / W.IMAGENET_STD[None, :, None, None])
                         .astype(np.float32)), torch.from_numpy(w), torch.from_numpy(b))
    ours = torch.nn.functional.conv2d(
        torch.from_numpy(bgr - np.asarray(cfg["data"]["mean"], np.float32)[None, :, None, None]),
        torch.from_numpy(w2), torch.from_numpy(b2))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-4)


def test_keras_h5_kernels_are_transposed(tmp_path):
    import h5py

    rng = np.random.default_rng(2)
    path = tmp_path / "vgg16_notop.h5"
    from geocli.nets.vgg import VGG16_BLOCKS

    with h5py.File(path, "w") as f:
        cin = 3
        for b, n, cout in VGG16_BLOCKS:
            for i in range(n):
                name = f"block{b}_conv{i + 1}"
                g = f.create_group(name).create_group(name)
                g["kernel:0"] = rng.standard_normal((3, 3, cin, cout)).astype(np.float32) if b == 1 else \
                    np.zeros((3, 3, cin, cout), np.float32)
                g["bias:0"] = np.full(cout, b, np.float32)
                cin = cout
    state = W.read_keras(path)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(state["features.2.weight"],
                                      f["block1_conv2/block1_conv2/kernel:0"][()].transpose(3, 2, 0, 1))
    params = W.convert_state_dict(state, config.load_preset("vigor", "default"), folded=False)
    assert params["grd.vgg.conv3_1.conv.bias"][0] == 3 and len(params) == 2 * 26
