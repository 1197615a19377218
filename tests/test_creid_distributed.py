"""`geoloc train creid --distributed --workers 2`: two msrun CPU workers train the P x K recipe and agree."""

import re

import pytest

from geocli.runtime import checkpoint as ckpt


@pytest.mark.slow
def test_two_msrun_workers_train_creid(cli, tmp_path):
    from geocli.runtime.launch import msrun_available

    assert msrun_available(), "msrun is installed with mindspore: the distributed path must be testable here"
    data = tmp_path / "synth"
    made = cli("data", "synth", "reid", "--out", data, "--train-ids", "8", "--test-ids", "2", "--cameras", "2",
               "--height", "64", "--width", "32")
    assert made.exit_code == 0, made.output
    result = cli("train", "creid", "--data", data, "--preset", "demo", "--out", tmp_path / "dist", "--distributed",
                 "--workers", 2, "--set", "model.width=8", "--set", "train.ids_per_batch=2", "--set", "train.steps=2",
                 "--set", "train.log_every=1")
    assert result.exit_code == 0, result.output + result.stderr
    for rank in (0, 1):
        log = (tmp_path / "dist" / "logs" / f"rank{rank}.log").read_text()
        match = re.search(r"parameters of 2 ranks agree to (\S+) \(relative\)", log)
        assert match and float(match.group(1)) <= 1e-5, log[-2000:]
    meta = ckpt.read_meta(tmp_path / "dist" / "checkpoints" / "last.ckpt")
    assert meta["group_size"] == 2 and meta["step"] == 2 and meta["n_classes"] == 8
