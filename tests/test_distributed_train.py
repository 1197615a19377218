"""`geoloc train --distributed` for real: msrun with 2 CPU workers (mccl) vs one process."""

import numpy as np
import pytest

from geocli.runtime import checkpoint as ckpt


@pytest.fixture(autouse=True)
def _msrun_installed():
    from geocli.runtime.launch import msrun_available

    assert msrun_available(), "msrun is installed with mindspore: the distributed path must be testable here"


def _params(path):
    params, _ = ckpt.load(path)
    net, _ = ckpt.split_optimizer_state(params)
    return {k: v.asnumpy() for k, v in net.items()}


def test_two_msrun_workers_equal_one_process_on_the_concatenated_batches(cli, tmp_path, ranks_agree):
    """The real data-parallel path (msrun, mccl, DATA_PARALLEL, gradients_mean) through `geoloc train`: the
    ranks agree with each other and with one process on the whole batch; msrun's lines are streamed and
    its logs kept. (It replaced a bare-MindSpore DP script in test_launch.py that checked the same.)"""
    steps = ["--set", "train.steps=12", "--set", "train.checkpoint_every=0"]
    dist = cli("train", "toy", "--out", tmp_path / "dist", "--distributed", "--workers", 2,
               "--set", "train.batch_size=8", *steps)
    assert dist.exit_code == 0, dist.output + dist.stderr
    assert "worker_0.log" in dist.output  # msrun's start lines were streamed
    logs = tmp_path / "dist" / "logs" / "msrun"
    assert (logs / "msrun.log").is_file() and (logs / "worker_1.log").is_file()
    single = cli("train", "toy", "--out", tmp_path / "single", "--set", "train.batch_size=16", *steps)
    assert single.exit_code == 0, single.output + single.stderr

    # both ranks trained and agreed (the trainer all-gathers a fingerprint of every parameter)
    meta = ranks_agree(tmp_path / "dist")
    assert meta["group_size"] == 2 and meta["step"] == 12

    a = _params(tmp_path / "dist" / "checkpoints" / "last.ckpt")
    b = _params(tmp_path / "single" / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


def test_dry_run_prints_the_msrun_command(cli, tmp_path):
    result = cli("train", "toy", "--out", tmp_path / "r", "--distributed", "--workers", 2, "--dry-run",
                 "--master-port", 8123)
    assert result.exit_code == 0
    out = result.output.replace("\n", " ")
    assert "msrun" in out and "--worker_num=2" in out and "--master_port=8123" in out
    assert "-m geocli -q train toy --out" in out
    assert "--distributed" not in out.split("msrun", 1)[1]
    assert not (tmp_path / "r").exists()
