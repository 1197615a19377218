"""The one training loop: learning, resume equality, checkpoints, schedules, multiple optimizers."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from geocli import api
from geocli.runtime import checkpoint as ckpt
from geocli.runtime.plan import Schedule
from geocli.runtime.schedules import lr_values


def net_params(path: Path) -> dict:
    params, _ = ckpt.load(path)
    net, _ = ckpt.split_optimizer_state(params)
    return {k: v.asnumpy() for k, v in net.items()}


def assert_same_params(a: Path, b: Path, atol=1e-6):
    pa, pb = net_params(a), net_params(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_allclose(pa[name], pb[name], atol=atol, err_msg=name)


def test_toy_learns_and_writes_a_self_describing_checkpoint(tmp_path):
    result = api.train("toy", out=tmp_path / "run", overrides=["train.steps=60"], quiet=True)
    assert result.step == 60
    meta = ckpt.read_meta(result.run_dir / "checkpoints" / "last.ckpt")
    assert meta["model"] == "toy" and meta["step"] == 60 and meta["config"]["train"]["steps"] == 60
    assert meta["geoloc_version"]
    assert (result.run_dir / "config.yaml").is_file() and (result.run_dir / "logs" / "rank0.log").is_file()
    metrics, out_dir = api.evaluate("toy", result.run_dir / "checkpoints" / "last.ckpt", quiet=True)
    assert metrics["mse"] < 0.75 * metrics["baseline_mse"], metrics
    assert (out_dir / "metrics.json").is_file()
    # keep-max: checkpoint_every=20, keep 2 -> steps 40 and 60 remain
    assert [p.name for p in ckpt.step_checkpoints(result.run_dir / "checkpoints")] == [
        "step_0000040.ckpt", "step_0000060.ckpt"]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    full = api.train("toy", out=tmp_path / "full", quiet=True)

    def interrupt_at_25(step, total, losses):
        if step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.train("toy", out=tmp_path / "cut", quiet=True, progress=interrupt_at_25)
    assert ckpt.read_meta(tmp_path / "cut" / "checkpoints" / "last.ckpt")["step"] == 25
    resumed = api.train("toy", out=tmp_path / "cut", resume="auto", quiet=True)
    assert resumed.step == 40
    assert_same_params(full.last_checkpoint, resumed.last_checkpoint)


def logged_lr(run_dir: Path) -> dict:
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if r["kind"] == "train"}


def test_resume_with_more_steps_continues_on_the_longer_schedule(tmp_path):
    """The lr table is a function of the total steps, so it is not restored from the checkpoint: resuming
    a 20-step run to 40 steps follows the 40-step schedule (it used to crash, indexing the saved 20-entry
    table at step 20)."""
    api.train("toy", out=tmp_path / "short", quiet=True, overrides=["train.steps=20"])
    longer = api.train("toy", out=tmp_path / "short", resume="auto", quiet=True, overrides=["train.steps=40"])
    api.train("toy", out=tmp_path / "fresh", quiet=True, overrides=["train.steps=40"])
    assert longer.step == 40
    resumed_lr, fresh_lr = logged_lr(tmp_path / "short"), logged_lr(tmp_path / "fresh")
    assert resumed_lr[20] < fresh_lr[20]  # the short run had decayed further by step 20 ...
    for step in (30, 40):  # ... and the resumed run then continues on the 40-step schedule
        assert resumed_lr[step] == pytest.approx(fresh_lr[step], rel=1e-6)
    log = (tmp_path / "short" / "logs" / "rank0.log").read_text()
    assert "schedule recomputed for 40 steps (the checkpoint's was 20)" in log


def test_resume_from_a_periodic_checkpoint_equals_uninterrupted(tmp_path):
    full = api.train("toy", out=tmp_path / "full", quiet=True)
    step20 = tmp_path / "full" / "checkpoints" / "step_0000020.ckpt"
    resumed = api.train("toy", out=tmp_path / "again", resume=str(step20), quiet=True)
    assert_same_params(full.last_checkpoint, resumed.last_checkpoint)


def test_weights_initialise_only(tmp_path):
    first = api.train("toy", out=tmp_path / "a", quiet=True)
    again = api.train("toy", out=tmp_path / "b", weights=first.last_checkpoint, quiet=True)
    assert again.step == 40  # started at 0, not at the checkpoint's step
    assert ckpt.read_meta(again.last_checkpoint)["step"] == 40


def test_resume_refuses_a_foreign_checkpoint(tmp_path):
    import mindspore as ms
    from mindspore import nn

    foreign = tmp_path / "foreign.ckpt"
    ms.save_checkpoint(nn.Dense(2, 2), str(foreign))
    from geocli.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no training state"):
        api.train("toy", out=tmp_path / "r", resume=str(foreign), quiet=True)


def test_killed_process_leaves_a_valid_checkpoint_and_resumes_exactly(tmp_path):
    """SIGKILL a real training process mid-run, resume it, compare with an uninterrupted run."""
    common = ["--set", "optim.schedule=constant", "--set", "optim.warmup_steps=0",
              "--set", "train.checkpoint_every=50", "--set", "train.keep_checkpoints=50"]
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "geocli", "-q", "train", "toy", "--out", str(run),
                             "--set", "train.steps=1000000", *common],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and len(ckpt.step_checkpoints(run / "checkpoints")) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    last = run / "checkpoints" / "last.ckpt"
    killed_at = ckpt.read_meta(last)["step"]  # loads: the atomic save never leaves a torn file
    assert killed_at >= 100 and killed_at % 50 == 0
    target = killed_at + 30
    resumed = api.train("toy", out=run, resume="auto", overrides=[f"train.steps={target}"], quiet=True)
    straight = api.train("toy", out=tmp_path / "straight", quiet=True,
                         overrides=[f"train.steps={target}", "optim.schedule=constant", "optim.warmup_steps=0",
                                    "train.checkpoint_every=50"])
    assert resumed.step == straight.step == target
    assert_same_params(straight.last_checkpoint, resumed.last_checkpoint)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    import mindspore as ms
    from mindspore import nn

    net = nn.Dense(3, 2)
    path = ckpt.save(tmp_path / "c.ckpt", net, meta={"step": 1})
    before = path.read_bytes()

    def broken(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ms, "save_checkpoint", broken)
    with pytest.raises(RuntimeError):
        ckpt.save(path, net, meta={"step": 2})
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # the temporary file is cleaned up


def test_checkpoint_round_trip_is_exact(tmp_path):
    from mindspore import nn

    net = nn.Dense(4, 3)
    path = ckpt.save(tmp_path / "x.ckpt", net, meta={"model": "toy", "labels": {"a": 1}})
    params, meta = ckpt.load(path)
    assert meta["labels"] == {"a": 1} and meta["geoloc_version"]
    for p in net.get_parameters():
        np.testing.assert_array_equal(params[p.name].asnumpy(), p.asnumpy())


@pytest.mark.parametrize("schedule,expect", [
    (Schedule("constant"), [1, 1, 1, 1]),
    (Schedule("linear"), [1, 0.75, 0.5, 0.25]),
    (Schedule("poly", power=2.0), [1, 0.5625, 0.25, 0.0625]),
    (Schedule("step", gamma=0.1, milestones=(2,)), [1, 1, 0.1, 0.1]),
    (Schedule("constant", warmup_steps=2, warmup_factor=0.0), [0.5, 1, 1, 1]),
])
def test_schedules(schedule, expect):
    np.testing.assert_allclose(lr_values(1.0, schedule, 4), expect, rtol=1e-6)


def test_two_optimizers_minimise_their_own_terms(tmp_path):
    """The head is trained by SGD on 'mse' only; the body by Adam on the total. Freezing the head
    (no optimizer) must leave it untouched."""
    from geocli import config, registry
    from geocli.runtime import context, trainer

    cfg = config.resolve("toy", overrides=["train.steps=10"])
    ctx = context.setup(tmp_path, seed=0)
    plan = registry.load_backend("toy").train_plan(cfg, None, ctx)
    head = plan.optimizers[1].params
    before = [p.asnumpy().copy() for p in head]
    plan.optimizers = plan.optimizers[:1]  # freeze the head
    trainer.train(plan, ctx)
    for b, p in zip(before, head):
        np.testing.assert_array_equal(b, p.asnumpy())


def test_eval_while_training_is_logged(tmp_path):
    import json

    api.train("toy", out=tmp_path / "run", overrides=["train.eval_every=20"], quiet=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [20, 40]
    assert evals[-1]["mse"] < evals[-1]["baseline_mse"]
    trains = [r for r in records if r["kind"] == "train"]
    assert {"loss", "mse", "reg", "lr"} <= set(trains[0])


def test_ctrl_c_exits_130_and_leaves_a_valid_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "geocli", "-q", "train", "toy", "--out", str(run),
                             "--set", "train.steps=1000000", "--set", "train.checkpoint_every=50"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.step_checkpoints(run / "checkpoints"):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    meta = ckpt.read_meta(run / "checkpoints" / "last.ckpt")
    assert meta["step"] >= 50


def test_replica_difference_is_relative_and_never_passes_non_finite_parameters():
    from geocli.runtime.trainer import replica_difference

    same = np.array([[10.0, 200.0], [10.0, 200.0]])
    assert replica_difference(same) == 0.0
    apart = np.array([[10.0, 200.0], [10.0, 202.0]])
    assert replica_difference(apart) == pytest.approx(2.0 / 202.0)
    for bad in (np.nan, np.inf):
        blown_up = np.array([[10.0, bad], [10.0, bad]])  # both ranks equally broken still fails
        assert not replica_difference(blown_up) <= 1e-5
