"""``--conv blocked``: MindSpore's CPU convolutions swapped for the oneDNN blocked-layout custom op
(geocli.runtime.blocked_conv): the op is compiled here (g++, oneDNN headers from the onednn-devel wheel)
and must give nn.Conv2d's outputs and gradients for every geometry the backends use, keep parameter
names and checkpoints, train like MindSpore's kernel, stay out of export graphs, and follow the choice."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from geocli.errors import UsageError
from geocli.runtime import blocked_conv
from grad_check import input_and_weight_gradients

pytestmark = pytest.mark.skipif(shutil.which("g++") is None,
                                reason="g++ not installed: the blocked convolutions are compiled here")


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """An XDG_CACHE_HOME holding the compiled op (compiled once for this module, as a user's first
    ``--conv blocked`` does: the headers are downloaded with pip)."""
    folder = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder))
        assert blocked_conv.build().parent == folder / "geoloc" / "kernels"
    return folder


@pytest.fixture(autouse=True)
def _built_here(_isolated_runs, kernels, monkeypatch):
    """Every test here (and the processes it starts) finds the op built."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(kernels))


@pytest.fixture(scope="module")
def graph_mode(tmp_path_factory):
    from geocli.runtime import context

    context.setup(tmp_path_factory.mktemp("ctx"), mode="graph", seed=0, threads=2, distributed=False)


def _pair(graph_mode, cin, cout, kernel, **kwargs):
    """Two equal one-convolution networks (in a SequentialCell, which runs its own cell list): plain, swapped."""
    import mindspore as ms
    from mindspore import nn

    ms.set_seed(0)
    plain, swapped = (nn.SequentialCell([nn.Conv2d(cin, cout, kernel, **kwargs), nn.ReLU()]) for _ in range(2))
    for a, b in zip(plain.get_parameters(), swapped.get_parameters()):
        b.set_data(a.data)
    return plain, swapped


GEOMETRIES = [  # what the five backends' convolutions use, and the odd cases of MindSpore's arithmetic
    dict(kernel=3, pad_mode="same"),
    dict(kernel=3, stride=2, pad_mode="same", has_bias=True),
    dict(kernel=7, stride=2, pad_mode="pad", padding=3),
    dict(kernel=1, stride=2, pad_mode="valid"),
    dict(kernel=2, stride=2, pad_mode="same", has_bias=True),
    dict(kernel=(3, 5), stride=(2, 1), pad_mode="same", dilation=2),
    dict(kernel=4, stride=2, pad_mode="pad", padding=(1, 2, 0, 1), has_bias=True),
    # channels in multiples of 8 and a stride: the data gradient on the blocked layout (blocked_data_gradient)
    dict(channels=(8, 16), kernel=3, stride=2, pad_mode="pad", padding=1),
    dict(channels=(16, 8), kernel=1, stride=2, pad_mode="valid", has_bias=True),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(f"{k}{v}" for k, v in g.items()))
def test_outputs_and_gradients_equal_mindspores(graph_mode, kernels, geometry):
    import mindspore as ms

    geometry = dict(geometry)
    cin, cout = geometry.pop("channels", (5, 6))
    plain, swapped = _pair(graph_mode, cin, cout, **geometry)
    names = [p.name for p in swapped.get_parameters()]
    assert blocked_conv.swap_convs(swapped, blocked_conv.build()) == 1
    assert type(swapped[0]).__name__ == "BlockedConv"
    assert [p.name for p in swapped.get_parameters()] == names  # checkpoints keep their keys
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((2, cin, 11, 13)).astype(np.float32))
    want, got = plain(x).asnumpy(), swapped(x).asnumpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    r = ms.Tensor(rng.standard_normal(want.shape).astype(np.float32))
    for a, b in zip(input_and_weight_gradients(plain, x, r), input_and_weight_gradients(swapped, x, r)):
        np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max())


def test_the_choice_decides_and_never_runs_off_cpu(graph_mode, kernels, monkeypatch, tmp_path):
    import mindspore as ms

    pointwise, _ = _pair(graph_mode, 3, 4, 1, pad_mode="valid")
    monkeypatch.setenv("GEOLOC_CONV", "blocked")
    assert blocked_conv.apply(pointwise) == 1  # 1x1 stride 1: a GEMM either way, not the op's ...
    assert type(pointwise[0]).__name__ == "PointwiseConv"  # ... but a faster input gradient
    mono, _ = _pair(graph_mode, 1, 4, 3, pad_mode="same")
    assert blocked_conv.apply(mono) == 0  # one input channel: one lane of eight, left to MindSpore
    half, _ = _pair(graph_mode, 3, 4, 3, pad_mode="same")
    half.to_float(ms.float16)
    for p in half.get_parameters():
        p.set_dtype(ms.float16)
    assert blocked_conv.apply(half) == 0  # the op is float32 only
    plain, _ = _pair(graph_mode, 3, 4, 3, pad_mode="same")
    monkeypatch.setenv("GEOLOC_CONV", "mindspore")
    assert blocked_conv.apply(plain) == 0
    monkeypatch.setenv("GEOLOC_CONV", "blocked")
    assert blocked_conv.apply(plain, device="gpu") == 0
    monkeypatch.setenv("GEOLOC_CONV", "auto")
    assert blocked_conv.apply(plain, device="ascend") == 0
    assert blocked_conv.apply(plain) == 1  # auto: built here -> swapped
    assert blocked_conv.apply(plain) == 0  # nothing left to swap
    monkeypatch.setenv("GEOLOC_CONV", "fast")
    with pytest.raises(UsageError, match="GEOLOC_CONV 'fast': choose one of auto, blocked, mindspore"):
        blocked_conv.chosen()


def test_auto_builds_on_first_use_and_remembers_why_it_could_not(graph_mode, monkeypatch, tmp_path, cli):
    """The default compiles the op the first time a network runs on CPU; where it cannot (here: no g++),
    the run goes on with MindSpore's convolution, says so once, and records why, so later runs do not try
    again; --conv blocked does try again, and a success clears the record."""
    import mindspore as ms

    monkeypatch.setenv("GEOLOC_CONV", "auto")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))
    plain, _ = _pair(graph_mode, 3, 4, 3, pad_mode="same")
    assert blocked_conv.needs_build("auto") and blocked_conv.needs_build("blocked")
    assert not blocked_conv.needs_build("mindspore")
    assert blocked_conv.apply(plain) == 1  # compiled now, in an empty cache
    assert blocked_conv.library_path().is_file()

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-compiler"))
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None)
    r = cli("train", "toy", "--set", "train.steps=2")
    assert r.exit_code == 0, r.output + r.stderr
    assert "note: convolutions on MindSpore's CPU kernel: g++ not found" in " ".join(r.stderr.split())
    record = blocked_conv.failure_record(blocked_conv.library_path())
    assert "g++ not found" in record.read_text()
    assert blocked_conv.status(ms.__version__)["failure"] == record.read_text().strip()
    assert not blocked_conv.needs_build("auto") and blocked_conv.needs_build("blocked")
    env = cli("env", "--json")
    assert "g++ not found" in json.loads(env.stdout)["conv"]["failure"]
    r = cli("train", "toy", "--set", "train.steps=2")
    assert r.exit_code == 0 and "note:" not in r.stderr, r.stderr  # said once
    monkeypatch.setattr(shutil, "which", real_which)
    other, _ = _pair(graph_mode, 3, 4, 3, pad_mode="same")
    assert blocked_conv.apply(other) == 0  # auto does not try again, even with g++ back
    monkeypatch.setenv("GEOLOC_CONV", "blocked")
    assert blocked_conv.apply(other) == 1  # --conv blocked does, and a success clears the record
    assert not record.exists() and blocked_conv.status(ms.__version__)["failure"] is None


def test_no_compiler_a_failed_compile_and_a_bad_choice_are_clear_errors(monkeypatch, tmp_path, cli):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(blocked_conv.Unbuildable, match="g\\+\\+ not found.*--conv mindspore"):
        blocked_conv.build()
    monkeypatch.setattr(shutil, "which", real_which)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "broken"))
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(blocked_conv, "SOURCE", broken)
    with pytest.raises(blocked_conv.Unbuildable, match="compiling broken.cpp failed: .*error") as failed:
        blocked_conv.build()
    assert "\n" not in str(failed.value)
    assert not list((tmp_path / "broken" / "geoloc" / "kernels").glob("*.so*"))  # no partial file left
    r = cli("train", "toy", "--conv", "fastest")
    assert r.exit_code != 0 and "--conv 'fastest': choose one of auto, blocked, mindspore" in r.output
    assert "Traceback" not in r.output


def test_inference_copies_take_their_relus_and_one_channel_layers(graph_mode, kernels, monkeypatch):
    """A network that only runs forward (engine's BatchNorm-folded copies) also gets its one-channel layer
    and the ReLUs after its convolutions (folded BatchNorms, Identity cells, between them) on the op, with
    MindSpore's outputs; export's plain_convs puts every Conv2d and ReLU back."""
    import mindspore as ms
    from mindspore import nn

    def build():
        ms.set_seed(0)
        return nn.SequentialCell([nn.Conv2d(1, 8, 3, pad_mode="pad", padding=1, has_bias=True), nn.Identity(),
                                  nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, pad_mode="same", has_bias=True), nn.ReLU(),
                                  nn.Conv2d(8, 4, 3, pad_mode="same"), nn.Sigmoid()])

    plain, training, fused = build(), build(), build()
    monkeypatch.setenv("GEOLOC_CONV", "blocked")
    assert blocked_conv.apply(training) == 2  # the one-channel layer stays on MindSpore's kernel to train
    assert blocked_conv.apply(fused, inference=True) == 3
    assert [type(c).__name__ for c in fused] == ["BlockedConv", "Identity", "Identity", "BlockedConv", "Identity",
                                                 "BlockedConv", "Sigmoid"]
    x = ms.Tensor(np.random.default_rng(2).standard_normal((3, 1, 17, 15)).astype(np.float32))
    want = plain(x).asnumpy()
    np.testing.assert_allclose(fused(x).asnumpy(), want, atol=1e-6)
    np.testing.assert_allclose(training(x).asnumpy(), want, atol=1e-6)
    assert blocked_conv.plain_convs(fused) == 5
    assert [type(c).__name__ for c in fused] == [type(c).__name__ for c in plain]
    np.testing.assert_allclose(fused(x).asnumpy(), want, atol=1e-6)


def test_sdnet_inference_copy_runs_on_the_op_and_the_callers_network_does_not_change(graph_mode, monkeypatch):
    from bn_stats import with_statistics
    from geocli import config, registry
    from geocli.runtime import engine

    cfg, backend = config.load_preset("sdnet"), registry.load_backend("sdnet")
    network = with_statistics(backend.build_network(cfg))
    patches = np.random.default_rng(3).uniform(-1, 1, (4, 1, 64, 64)).astype(np.float32)
    monkeypatch.setenv("GEOLOC_CONV", "mindspore")
    (want,) = engine.runner("mindspore", backend, cfg, network, graph="optical")(patches)
    kinds = [type(c).__name__ for _, c in network.cells_and_names()]
    swaps = []
    real_apply = blocked_conv.apply
    monkeypatch.setattr(blocked_conv, "apply", lambda *a, **k: swaps.append(real_apply(*a, **k)) or swaps[-1])
    monkeypatch.setenv("GEOLOC_CONV", "blocked")
    (got,) = engine.runner("mindspore", backend, cfg, network, graph="optical")(patches)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # every 3x3 and 8x8 layer of the copy, the one-channel ones too (two stems, the decoder's 1->1)
    assert swaps == [sum(1 for _, c in network.cells_and_names() if type(c).__name__ == "Conv2d")]
    assert [type(c).__name__ for _, c in network.cells_and_names()] == kinds


def test_export_puts_mindspores_convolutions_back(graph_mode, tmp_path):
    pytest.importorskip("onnxruntime")
    from geocli.export import export_network

    _, swapped = _pair(graph_mode, 3, 4, 3, stride=2, pad_mode="same", has_bias=True)
    blocked_conv.swap_convs(swapped, blocked_conv.build())
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    result = export_network(swapped, [x], "onnx", tmp_path / "net")
    assert type(swapped[0]).__name__ == "Conv2d"
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-5


def test_training_follows_mindspores_kernel_and_logs_the_swap(graph_mode, tmp_path, monkeypatch):
    """The same few SGD steps of a small strided network with either kernel: the same parameters (within
    float32 rounding), the same checkpoint keys, and the run log says which kernel ran."""
    import mindspore as ms
    from mindspore import nn

    from geocli.runtime import checkpoint as ckpt
    from geocli.runtime.plan import IndexedSource, OptimizerSpec, RunContext, TrainPlan
    from geocli.runtime.runlog import RunLogger
    from geocli.runtime.trainer import Trainer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    y = rng.standard_normal((8, 8)).astype(np.float32)

    def run(choice):
        monkeypatch.setenv("GEOLOC_CONV", choice)
        ms.set_seed(0)
        net = nn.SequentialCell([nn.Conv2d(3, 8, 3, stride=2, pad_mode="pad", padding=1, has_bias=True), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, pad_mode="same"), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten()])

        def forward(inp, target):
            loss = ((net(inp) - target) ** 2).mean()
            return loss, loss

        folder = tmp_path / choice
        ctx = RunContext(run_dir=folder, log=RunLogger(folder, rank=0, quiet=True))
        plan = TrainPlan(network=net, forward=forward, loss_names=["mse"],
                         optimizers=[OptimizerSpec(name="sgd", params=net.trainable_params(), lr=0.05,
                                                   kind="sgd", loss="total")],
                         data=IndexedSource(8, 8, lambda idx, seed: (x[idx], y[idx]), drop_last=True), steps=5)
        trainer = Trainer(plan, ctx)
        losses = [float(trainer.step_fn(ms.Tensor(x), ms.Tensor(y))[0].asnumpy()) for _ in range(5)]
        path = ckpt.save(folder / "last.ckpt", net, [], {"model": "test"})
        ctx.log.close()
        return losses, path, (folder / "logs" / "rank0.log").read_text()

    plain_losses, plain_ckpt, plain_log = run("mindspore")
    losses, path, log = run("blocked")
    assert "2 convolutions on oneDNN's blocked layout" in log and "blocked layout" not in plain_log
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-4)
    a, _ = ckpt.load(plain_ckpt)
    b, _ = ckpt.load(path)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key].asnumpy(), a[key].asnumpy(), atol=1e-5, err_msg=key)


def test_two_msrun_workers_train_sdnet_on_the_blocked_op(cli, tmp_path, ranks_agree):
    """msrun's workers get --conv blocked, swap SDNet's convolutions (strided ones included), and their
    replicas agree after the gradients were averaged."""
    from geocli import config
    from geocli.data import sen12_npz
    from geocli.data.synth.sen12 import SynthSpec, generate

    r = cli("train", "sdnet", "--distributed", "--dry-run", "--conv", "blocked", "--out", tmp_path / "dry")
    assert r.exit_code == 0 and "--conv blocked" in r.output, r.output
    generate(tmp_path / "raw", spec=SynthSpec(seasons=1, scenes=2, patches=4, size=128, seed=3))
    prep = {**config.resolve("sdnet", "default", None, [])["prep"], "max_per_image": 10, "min_distance": 10,
            "test_fraction": 0.25}
    sen12_npz.prepare(tmp_path / "raw", tmp_path / "npz", prep, seed=0)
    r = cli("train", "sdnet", "--data", tmp_path / "npz", "--out", tmp_path / "dist", "--distributed",
            "--workers", 2, "--conv", "blocked", "--set", "train.batch_size=8", "--set", "train.steps=2",
            "--set", "train.log_every=1", "--set", "train.eval_every_epoch=false",
            "--set", "train.checkpoint_every_epoch=false")
    assert r.exit_code == 0, r.output + getattr(r, "stderr", "")
    assert ranks_agree(tmp_path / "dist")["step"] == 2
    for rank in range(2):
        log = (tmp_path / "dist" / "logs" / f"rank{rank}.log").read_text()
        assert re.search(r"\d+ convolutions on oneDNN's blocked layout", log), log[-2000:]


def test_two_processes_building_at_once_both_get_the_op(tmp_path):
    """msrun workers, or two commands started together, may compile the op at the same moment: each
    downloads and compiles in a folder of its own and moves the result in whole."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    code = "from geocli.runtime import blocked_conv as b; print(b.build())"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outputs]
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(paths) == 1 and Path(paths.pop()).is_file()
    assert not list((tmp_path / "geoloc" / "kernels").glob("*.tmp"))
