"""Deliberate decisions about MindSpore pitfalls measured on this machine (see README)."""

import numpy as np
import pytest


def test_numpy_1x_keeps_pynative_tuple_ops_working():
    """With NumPy 2, MindSpore 2.10 PyNative ops with a tuple argument raise SystemError; we pin NumPy 1.x."""
    assert np.__version__.startswith("1."), "geoloc pins numpy<2: see README 'Why NumPy 1.x'"
    import mindspore as ms
    from mindspore import ops

    x = ms.Tensor(np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    out = ops.ReduceMean(keep_dims=False)(x, (2, 3))  # eager call, outside any jit
    np.testing.assert_allclose(out.asnumpy(), x.asnumpy().mean(axis=(2, 3)))


def test_export_parity_mindir_and_onnx(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "toy", "--out", run, "--set", "train.steps=5").exit_code == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    for fmt in ("mindir", "onnx"):
        result = cli("export", "toy", "--checkpoint", ckpt, "--format", fmt, "--out", tmp_path / f"toy-{fmt}")
        assert result.exit_code == 0, result.output + result.stderr
        assert "max abs difference" in result.output
        assert (tmp_path / f"toy-{fmt}.{fmt}").is_file()
    again = cli("export", "toy", "--checkpoint", ckpt, "--format", "mindir", "--out", tmp_path / "toy-mindir")
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_air_export_refused_off_ascend(cli, tmp_path):
    from geocli.runtime.context import available_devices

    if "ascend" in available_devices():
        pytest.skip("this machine has Ascend: AIR export is possible")
    result = cli("export", "toy", "--format", "air")
    assert result.exit_code == 2 and "needs an Ascend device" in result.stderr
