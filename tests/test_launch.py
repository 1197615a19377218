"""Launch helpers: command building, flag stripping, dry-run text, and real msrun / rank-table runs."""

import json
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from geocli.errors import LaunchError, UsageError
from geocli.runtime import launch


needs_msrun = pytest.mark.skipif(not launch.msrun_available(), reason="msrun (installed with MindSpore) not found")

FAIL_SCRIPT = textwrap.dedent("""
    import mindspore as ms
    from mindspore.communication import get_rank, init
    ms.set_device("CPU")
    init()
    if get_rank() == 1:
        raise ValueError("boom on rank 1")
""")


# ------------------------------------------------------------------------------------ command lines

@needs_msrun
def test_msrun_command_has_the_real_flags(tmp_path):
    cmd = launch.msrun_command([sys.executable, "-m", "geocli", "-q", "train", "toy"], workers=2, nodes=3,
                               node_rank=1, master_addr="10.0.0.1", master_port=29500, log_dir=tmp_path / "logs",
                               cluster_timeout=30)
    assert cmd[0] == launch.msrun_path()
    assert cmd[1:] == ["--worker_num=6", "--local_worker_num=2", "--master_addr=10.0.0.1", "--master_port=29500",
                       "--node_rank=1", f"--log_dir={tmp_path / 'logs'}", "--join=True", "--cluster_time_out=30",
                       "--tail_worker_log=0", "python", "-m", "geocli", "-q", "train", "toy"]
    help_text = subprocess.run([cmd[0], "--help"], capture_output=True, text=True, timeout=60).stdout
    for flag in cmd[1:10]:
        assert f"[{flag.split('=')[0]} " in help_text, flag


@needs_msrun
def test_geoloc_arguments_become_python_m_geocli():
    cmd = launch.msrun_command(["train", "toy"], workers=1, tail_worker=None)
    assert cmd[-5:] == ["python", "-m", "geocli", "train", "toy"]
    assert "--cluster_time_out=120" in cmd and not any(c.startswith("--tail_worker_log") for c in cmd)
    assert "--cluster_time_out=600" in launch.msrun_command(["train", "toy"], workers=1, nodes=2)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"workers": 0}, "must be at least 1"),
    ({"workers": 2, "nodes": 2, "node_rank": 2}, "--node-rank 2 must be in 0..1"),
    ({"workers": 2, "master_port": 80}, "--master-port 80"),
])
def test_msrun_command_rejects_bad_values(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        launch.msrun_command(["train", "toy"], **kwargs)


def test_missing_msrun_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(launch, "msrun_path", lambda: None)
    assert not launch.msrun_available()
    with pytest.raises(LaunchError, match="msrun not found .* installed with MindSpore"):
        launch.msrun_command(["train", "toy"], workers=2)


@needs_msrun
def test_dry_run_text_is_the_exact_shell_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the interpreter's folder is not on PATH
    cmd = launch.msrun_command([sys.executable, "-m", "geocli", "train", "toy", "--set", "a b=1"], workers=2,
                               master_port=8118, log_dir=tmp_path / "my logs")
    text = launch.dry_run_text(cmd)
    assert text.startswith(f"PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH ")
    assert shlex.split(text.split(" ", 1)[1]) == list(cmd)
    assert "'--log_dir=" in text and "'a b=1'" in text
    env_line = launch.dry_run_text(["python", "-m", "geocli"], {"RANK_ID": "1", "RANK_TABLE_FILE": "/a b.json"})
    assert env_line == "RANK_ID=1 RANK_TABLE_FILE='/a b.json' python -m geocli"


def test_find_free_port_is_bindable():
    import socket

    port = launch.find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("env,expected", [
    ({}, None),
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "4", "MS_NODE_ID": "3", "RANK_ID": "3", "DEVICE_ID": "1"},
     launch.WorkerRank("msrun", "worker", 3, 4, 1)),
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "4", "MS_NODE_ID": "2"}, launch.WorkerRank("msrun", "worker", 2, 4)),
    ({"MS_ROLE": "MS_SCHED", "MS_WORKER_NUM": "2", "RANK_ID": "0"}, launch.WorkerRank("msrun", "scheduler", None, 2)),
    ({"RANK_TABLE_FILE": "/t.json", "RANK_ID": "5", "RANK_SIZE": "8", "DEVICE_ID": "5"},
     launch.WorkerRank("rank_table", "worker", 5, 8, 5)),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1"},
     launch.WorkerRank("mpirun", "worker", 1, 2, 1)),
])
def test_worker_env_rank(env, expected):
    assert launch.worker_env_rank(env) == expected
    if expected is not None:
        assert expected.is_main == (expected.rank == 0 and expected.role == "worker")


def test_error_line_finds_the_exception_or_geoloc_error():
    log = ("[WARNING] DISTRIBUTED(1) noise\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
           "[WARNING] interleaved\nValueError: bad thing\n[INFO] after\n")
    assert launch.error_line(log) == "ValueError: bad thing"
    assert launch.error_line("ok\nerror: rank table t.json: version: missing\n") == \
        "rank table t.json: version: missing"
    assert launch.error_line("all fine\n") is None


# ------------------------------------------------------------------------------------------ real runs

def _script(tmp_path, text, name):
    path = tmp_path / name
    path.write_text(text)
    return path


@needs_msrun
def test_msrun_failure_names_the_failing_rank_quickly(tmp_path):
    script = _script(tmp_path, FAIL_SCRIPT, "fail.py")
    cmd = launch.msrun_command([sys.executable, str(script)], workers=2, master_port=launch.find_free_port(),
                               log_dir=tmp_path / "logs", cluster_timeout=30)
    start = time.monotonic()
    with pytest.raises(LaunchError) as info:
        launch.run_msrun(cmd, tmp_path / "logs", timeout=100, echo=lambda line: None)
    message = str(info.value)
    assert "rank 1: ValueError: boom on rank 1" in message
    assert str(tmp_path / "logs" / "worker_1.log") in message
    assert time.monotonic() - start < 35  # not msrun's ~40 s scheduler heartbeat wait


@needs_msrun
def test_msrun_timeout_stops_every_process(tmp_path):
    psutil = pytest.importorskip("psutil")
    script = _script(tmp_path, "import time\ntime.sleep(600)\n", "hang.py")
    cmd = launch.msrun_command([sys.executable, str(script)], workers=2, master_port=launch.find_free_port(),
                               log_dir=tmp_path / "logs", cluster_timeout=30)
    with pytest.raises(LaunchError, match="timed out after 4 s and was stopped"):
        launch.run_msrun(cmd, tmp_path / "logs", timeout=4, echo=lambda line: None)

    def leftovers():
        return [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
                if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))]

    deadline = time.monotonic() + 5
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers()  # scheduler, workers and msrun's `tail -f` are all gone


RANK_SCRIPT = textwrap.dedent("""
    import json, os, sys
    keys = ("RANK_TABLE_FILE", "RANK_ID", "DEVICE_ID", "RANK_SIZE")
    print("rank", os.environ["RANK_ID"], "says hello", flush=True)
    with open(os.path.join(sys.argv[1], "env_" + os.environ["RANK_ID"] + ".json"), "w") as f:
        json.dump({k: os.environ[k] for k in keys}, f)
    if os.environ["RANK_ID"] == sys.argv[2]:
        raise SystemExit("error: rank " + os.environ["RANK_ID"] + " could not open its device")
""")


def _two_device_table(tmp_path):
    path = tmp_path / "hccl_2p.json"
    path.write_text(json.dumps({
        "version": "1.0", "server_count": "1", "status": "completed",
        "server_list": [{"server_id": "10.0.0.1", "host_nic_ip": "reserve", "device": [
            {"device_id": "0", "device_ip": "192.1.27.6", "rank_id": "0"},
            {"device_id": "1", "device_ip": "192.2.27.6", "rank_id": "1"}]}]}))
    return path


def test_rank_table_launch_gives_each_process_its_rank(tmp_path):
    script = _script(tmp_path, RANK_SCRIPT, "ranks.py")
    table = _two_device_table(tmp_path)
    echoed = []
    launch.run_rank_table([sys.executable, str(script), str(tmp_path), "-1"], table, tmp_path / "logs",
                          timeout=60, echo=echoed.append)
    envs = [json.loads((tmp_path / f"env_{r}.json").read_text()) for r in (0, 1)]
    assert envs == launch.rank_table_envs(launch.load_rank_table(table), table)
    assert "rank 0 says hello\n" in echoed and not any("rank 1" in line for line in echoed)
    assert "rank 1 says hello" in (tmp_path / "logs" / "worker_1.log").read_text()


def test_rank_table_launch_failure_names_the_rank_log(tmp_path):
    script = _script(tmp_path, RANK_SCRIPT, "ranks.py")
    with pytest.raises(LaunchError, match=r"failed: rank 1: rank 1 could not open its device; its log: .*worker_1\.log"):
        launch.run_rank_table([sys.executable, str(script), str(tmp_path), "1"], _two_device_table(tmp_path),
                              tmp_path / "logs", timeout=60, echo=lambda line: None)


def test_rank_table_launch_validates_the_table_first(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(LaunchError, match="bad.json: version: missing"):
        launch.run_rank_table(["train", "toy"], bad, tmp_path / "logs")
