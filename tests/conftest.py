"""Shared test fixtures. Model- and area-specific fixtures live in their own test modules."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture
def shared_fixtures() -> Path:
    """``../shared/fixtures`` beside the repo (CI has it; a user's clone does not)."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"reference data not found at {SHARED_FIXTURES} (only CI and developer machines have ../shared)")
    return SHARED_FIXTURES


@pytest.fixture
def cli():
    """Invoke ``geoloc`` in-process: ``cli("train", "toy", ...)`` -> typer Result (stderr separate)."""
    from typer.testing import CliRunner

    from geocli.cli.main import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture
def ranks_agree():
    """``ranks_agree(run_dir)``: every rank of a data-parallel run logged the trainer's replica check
    (parameters of all ranks equal within 1e-5, ``Trainer.check_replicas``); returns the meta of the run's
    ``last.ckpt``."""
    from geocli.runtime import checkpoint as ckpt

    def check(run_dir: Path, ranks: int = 2) -> dict:
        for rank in range(ranks):
            log = (Path(run_dir) / "logs" / f"rank{rank}.log").read_text()
            match = re.search(rf"parameters of {ranks} ranks agree to (\S+) \(relative\)", log)
            assert match and float(match.group(1)) <= 1e-5, log[-2000:]
        return ckpt.read_meta(Path(run_dir) / "checkpoints" / "last.ckpt")

    return check


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Run every test in its own working directory so default ``runs/`` folders never collide; with its own
    cache, and MindSpore's convolutions (a test's ``--conv`` sets GEOLOC_CONV in this process: undone
    afterwards)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GEOLOC_CONV", "mindspore")
    yield


os.environ.setdefault("GLOG_v", "3")
# A developer who built the blocked convolutions (`--conv blocked`) would otherwise run the suite's
# module-scoped trainings on them (`auto`); tests/test_blocked_conv.py turns them on where it tests them.
os.environ["GEOLOC_CONV"] = "mindspore"
