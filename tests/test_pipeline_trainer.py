"""The trainer fed by the streaming loader: exact resume with workers, resumable mined pools, timing in
the log, worker failures, Ctrl-C with workers running, mixed precision levels.

Running this file as a script trains until interrupted (the Ctrl-C test starts it in a subprocess)."""

if __name__ == "__main__":  # as `geoloc train` does: block Ctrl-C before NumPy and MindSpore start threads
    from geocli.runtime import interrupt

    interrupt.defer()

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from geocli.data import readers
from geocli.data.pipeline import PoolSampler
from geocli.errors import ConfigError, DataError
from geocli.runtime.plan import IndexedSource, OptimizerSpec, Schedule, TrainPlan

DIM, ROWS = 8, 96


def write_regression(path: Path, corrupt_row=None) -> Path:
    """y = sin(x . w) as MindRecord rows {x: float32[8], y: float32[1]}; ``corrupt_row`` gets no x."""
    from mindspore.mindrecord import FileWriter

    rng = np.random.default_rng(1234)
    w = rng.standard_normal(DIM).astype(np.float32)
    x = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    y = np.sin(x @ w / np.sqrt(DIM))[:, None].astype(np.float32)
    writer = FileWriter(str(path), shard_num=1, overwrite=True)
    writer.add_schema({"x": {"type": "float32", "shape": [-1]}, "y": {"type": "float32", "shape": [1]}}, "reg")
    writer.write_raw_data([{"x": x[i][:0] if i == corrupt_row else x[i], "y": y[i]} for i in range(ROWS)])
    writer.commit()
    return path


class RecordLoad:
    """Reads rows by index and jitters x with noise from the batch's seed (a random augmentation)."""

    def __init__(self, path):
        self.rows = readers.MindRecordRows(path)

    def __call__(self, indices, seed):
        rng = np.random.default_rng(list(seed))
        xs, ys = [], []
        for i in indices:
            row = self.rows[i]
            if row["x"].shape != (DIM,):
                raise DataError(f"{self.rows.where(i)}: x has {row['x'].size} values, expected {DIM}")
            xs.append(row["x"])
            ys.append(row["y"])
        x = np.stack(xs) + 0.05 * rng.standard_normal((len(xs), DIM)).astype(np.float32)
        return x.astype(np.float32), np.stack(ys)


class Mined(PoolSampler):
    """Hardest items first, by the residuals the epoch hook measured with the network."""

    def __init__(self):
        super().__init__(length=ROWS)

    def order(self, rng, hardness):
        return np.argsort(-(hardness + 0.1 * rng.random(len(hardness))))


def make_plan(path, *, steps, workers, ctx, sampler=None, amp_level="O0", log_every=5):
    import mindspore as ms
    from mindspore import nn, ops

    ms.set_seed(0)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.body = nn.Dense(DIM, 16, activation="tanh")
            self.head = nn.Dense(16, 1)

        def construct(self, x):
            return self.head(self.body(x))

    net = Net()

    def forward(x, y):
        mse = ops.reduce_mean((net(x) - y) ** 2)
        return mse, mse

    hooks = []
    if sampler is not None:
        rows = readers.MindRecordRows(path)
        xs = np.stack([rows[i]["x"] for i in range(len(rows))])
        ys = np.stack([rows[i]["y"] for i in range(len(rows))])

        def mine(trainer, epoch):
            if sampler.needs_refresh(epoch):
                residual = np.abs(net(ms.Tensor(xs)).asnumpy() - ys)[:, 0]
                sampler.refresh(epoch, hardness=residual)

        hooks.append(mine)
    source = IndexedSource(ROWS, 8, RecordLoad(path), seed=3, rank=ctx.rank, group_size=ctx.group_size,
                           sampler=sampler, workers=workers, prefetch=3)
    return TrainPlan(network=net, forward=forward, loss_names=["mse"],
                     optimizers=[OptimizerSpec("all", list(net.trainable_params()), kind="adam", lr=0.01,
                                               schedule=Schedule("constant"))],
                     data=source, steps=steps, epoch_hooks=hooks, log_every=log_every, amp_level=amp_level)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from geocli.runtime import context

    return context.setup(tmp_path_factory.mktemp("ctx"), seed=0)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_regression(tmp_path_factory.mktemp("data") / "reg.mindrecord")


def params(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)


def stop_at(step_to_stop):
    def progress(step, total, values):
        if step == step_to_stop:
            raise KeyboardInterrupt

    return progress


def train_interrupted_then_resumed(tmp_path, ctx, records, *, stop, steps, workers, sampler_cls=None):
    from geocli.runtime import trainer

    ctx.run_dir = tmp_path
    cut = make_plan(records, steps=steps, workers=workers, ctx=ctx, sampler=sampler_cls() if sampler_cls else None)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cut, ctx, progress=stop_at(stop))
    assert cut.data._pool is None  # the workers were stopped
    last = tmp_path / "checkpoints" / "last.ckpt"
    again = make_plan(records, steps=steps, workers=workers, ctx=ctx, sampler=sampler_cls() if sampler_cls else None)
    trainer.train(again, ctx, resume=last)
    return params(again.network), last


def test_resume_mid_epoch_with_workers_equals_an_uninterrupted_in_process_run(tmp_path, ctx, records):
    from geocli.runtime import trainer

    ctx.run_dir = tmp_path / "straight"
    straight = make_plan(records, steps=20, workers=0, ctx=ctx)  # 12 steps per epoch: crosses an epoch
    trainer.train(straight, ctx)
    resumed, _ = train_interrupted_then_resumed(tmp_path / "cut", ctx, records, stop=7, steps=20, workers=2)
    assert_same(params(straight.network), resumed)


def test_a_mined_pool_is_checkpointed_so_resume_is_exact(tmp_path, ctx, records):
    from geocli.runtime import checkpoint as ckpt
    from geocli.runtime import trainer

    ctx.run_dir = tmp_path / "straight"
    straight = make_plan(records, steps=30, workers=0, ctx=ctx, sampler=Mined())
    trainer.train(straight, ctx)
    resumed, last = train_interrupted_then_resumed(tmp_path / "cut", ctx, records, stop=17, steps=30, workers=0,
                                                   sampler_cls=Mined)
    saved, _ = ckpt.load(last)
    assert "optimizer/data/pool.hardness" in saved and "optimizer/data/pool_epoch" in saved
    assert_same(params(straight.network), resumed)


def test_each_logging_window_records_data_wait_and_compute(tmp_path, ctx, records):
    from geocli.runtime import trainer
    from geocli.runtime.runlog import RunLogger

    ctx.run_dir, ctx.log = tmp_path, RunLogger(tmp_path, quiet=True)
    shown = []
    try:
        trainer.train(make_plan(records, steps=10, workers=1, ctx=ctx), ctx,
                      progress=lambda step, total, values: shown.append(values))
    finally:
        ctx.log.close()
        ctx.log = None
    windows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [w["step"] for w in windows] == [5, 10]
    for w in windows:
        assert w["data_wait_s"] >= 0 and w["compute_s"] > 0 and w["images_per_s"] > 0
        assert 0 <= w["data_wait_share"] <= 1 and np.isfinite(w["loss"])
    assert {"img/s", "wait%"} <= set(shown[0]) and {"loss", "mse", "img/s", "wait%"} <= set(shown[-1])


def test_a_bad_record_stops_training_with_one_line_naming_it(tmp_path, ctx):
    from geocli.runtime import trainer

    bad = write_regression(tmp_path / "bad.mindrecord", corrupt_row=40)
    ctx.run_dir = tmp_path
    plan = make_plan(bad, steps=30, workers=2, ctx=ctx)
    with pytest.raises(DataError, match=r"^\S*bad.mindrecord row 40: x has 0 values, expected 8$"):
        trainer.train(plan, ctx)
    assert plan.data._pool is None


def test_amp_levels_are_validated_and_o2_trains_on_cpu(tmp_path, ctx, records):
    import mindspore as ms

    from geocli.runtime import trainer

    ctx.run_dir = tmp_path
    with pytest.raises(ConfigError, match="train.amp_level 'O4'"):
        trainer.train(make_plan(records, steps=2, workers=0, ctx=ctx, amp_level="O4"), ctx)
    plan = make_plan(records, steps=24, workers=0, ctx=ctx, amp_level="O2", log_every=12)
    result = trainer.train(plan, ctx)
    assert plan.network.body.weight.dtype == ms.float32  # parameters stay float32 (master weights)
    assert plan.network.head.to_float  # cast cells compute in float16
    first = make_plan(records, steps=12, workers=0, ctx=ctx, amp_level="O2", log_every=12)
    early = trainer.train(first, ctx).losses["loss"]
    assert result.losses["loss"] < early  # it learns at O2


# ---- Ctrl-C with workers (a real process) -------------------------------------------------------------

def _main(run_dir: str, data: str) -> None:
    from geocli.runtime import context, interrupt, trainer

    assert interrupt.unguarded_threads() == 0, "the __main__ block defers before NumPy starts its threads"
    ctx = context.setup(run_dir, seed=0)
    plan = make_plan(Path(data), steps=10**6, workers=2, ctx=ctx)
    plan.checkpoint_every = 20

    def report(step, total, values):
        if step == 1:
            Path(run_dir, "pids").write_text(" ".join(map(str, plan.data._pool.pids)))

    try:
        trainer.train(plan, ctx, progress=report)
    except KeyboardInterrupt:
        sys.exit(130)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_ctrl_c_stops_the_workers_and_exits_130_with_last_ckpt(tmp_path, records):
    from geocli.runtime import checkpoint as ckpt

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, __file__, str(tmp_path), str(records)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pids_file, checkpoints = tmp_path / "pids", tmp_path / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and not (pids_file.is_file() and ckpt.step_checkpoints(checkpoints)):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.1)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.stderr.read().decode()[-3000:]
    assert ckpt.read_meta(checkpoints / "last.ckpt")["step"] >= 20
    assert not any(alive(p) for p in pids)


def test_geoloc_train_defers_ctrl_c_while_the_process_has_one_thread():
    """Ctrl-C is only safe if no thread predates the deferral (geocli.runtime.interrupt): the console
    script's imports must not start NumPy's (or MindSpore's) threads before `train` defers."""
    probe = ("import os, sys\n"
             "import geocli.cli.main, geocli.api\n"
             "from geocli.runtime import interrupt\n"
             "interrupt.defer()\n"
             "print(interrupt.unguarded_threads(), 'numpy' in sys.modules, 'mindspore' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "False", "False"]


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
