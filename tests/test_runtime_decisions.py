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


def test_cpu_launches_run_on_the_calling_thread_unless_the_user_says_otherwise(monkeypatch):
    """geoloc sets MS_DEV_HOST_BLOCKING_RUN=1 on CPU (geocli.runtime.context.dispatch_inline says why)."""
    import os

    from geocli.runtime import context

    monkeypatch.delenv(context.HOST_BLOCKING_ENV, raising=False)
    assert context.dispatch_inline("ascend") is False  # device kernels: MindSpore's queue stays
    assert context.HOST_BLOCKING_ENV not in os.environ
    assert context.dispatch_inline("cpu") is True
    monkeypatch.setenv(context.HOST_BLOCKING_ENV, "0")
    assert context.dispatch_inline("cpu") is False  # the user's choice wins


@pytest.mark.parametrize("user_choice, queue_thread", [(None, False), ("0", True)])
def test_mindspore_starts_no_busy_waiting_queue_after_setup(tmp_path, user_choice, queue_thread):
    """After context.setup on CPU, a graph runs without MindSpore's frontend_queue thread (the one the
    caller busy-waits for); with the user's MS_DEV_HOST_BLOCKING_RUN=0 the thread is there."""
    import os
    import subprocess
    import sys

    from geocli.runtime.context import HOST_BLOCKING_ENV

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("thread names are read from /proc (Linux)")
    script = (
        "import os, numpy as np, mindspore as ms\n"
        "from pathlib import Path\n"
        "from geocli.runtime import context\n"
        f"context.setup(Path({str(tmp_path)!r}), device='cpu', mode='graph', seed=0, threads=1, distributed=False)\n"
        "@ms.jit\n"
        "def f(x):\n"
        "    return x * 2 + 1\n"
        "assert float(f(ms.Tensor(np.ones(3, np.float32))).asnumpy()[0]) == 3.0\n"
        "print(sorted(open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != HOST_BLOCKING_ENV}
    if user_choice is not None:
        env[HOST_BLOCKING_ENV] = user_choice
    path = tmp_path / "launch.py"  # MindSpore compiles a graph from its source file, not from `-c`
    path.write_text(script)
    out = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    threads = out.stdout.strip().splitlines()[-1]
    assert ("frontend_queue" in threads) is queue_thread, threads
