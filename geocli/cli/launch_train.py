"""``geoloc train --distributed / --rank-table / --dry-run``: re-launch this same command as workers.

The parent process only prepares: it fixes the run folder (every rank must write to the same one),
rebuilds the worker command line from the parsed options (not from ``sys.argv``, so it also works when
called from Python), and hands it to MindSpore's launcher: ``msrun`` for the dynamic-cluster way, or one
process per device with RANK_TABLE_FILE/RANK_ID/DEVICE_ID for the HCCL rank-table way on Ascend.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

from geocli import runs
from geocli.cli._common import console
from geocli.errors import UsageError

#: Options passed through to every worker unchanged: (parameter name, flag).
PASS_THROUGH = (("preset", "--preset"), ("data", "--data"), ("config", "--config"), ("resume", "--resume"),
                ("weights", "--weights"), ("device", "--device"), ("mode", "--mode"), ("seed", "--seed"),
                ("threads", "--threads"), ("conv", "--conv"))


def worker_argv(model: str, params: Dict[str, Any], run_dir: Path) -> List[str]:
    """The ``python -m geocli train ...`` command line each worker runs (launch flags removed)."""
    argv = [sys.executable, "-m", "geocli", "-q", "train", model, "--out", str(run_dir)]
    for name, flag in PASS_THROUGH:
        value = params.get(name)
        if value is not None:
            argv += [flag, str(value)]
    for item in params.get("set_") or []:
        argv += ["--set", item]
    return argv


def launch(model: str, params: Dict[str, Any]) -> None:
    from geocli.runtime import launch as launcher

    if params.get("distributed") and params.get("rank_table") is not None:
        raise UsageError("--distributed (msrun) and --rank-table are two ways to launch: choose one")
    if params["workers"] < 1 or params["nodes"] < 1:
        raise UsageError("--workers and --nodes must be at least 1")
    run_dir = Path(params["out"]) if params.get("out") else runs.new_run_dir(model, params["preset"])
    child = worker_argv(model, params, run_dir)
    con = console()
    if params.get("rank_table") is not None:
        table = launcher.load_rank_table(params["rank_table"])
        envs = launcher.rank_table_envs(table, params["rank_table"])
        if params.get("dry_run"):
            for env in envs:
                con.print(launcher.dry_run_text(child, env), markup=False, soft_wrap=True)
            return
        launcher.run_rank_table(child, envs, run_dir / "logs")
    else:
        port = params.get("master_port") or launcher.find_free_port()
        cmd = launcher.msrun_command(child, workers=params["workers"], nodes=params["nodes"],
                                     node_rank=params["node_rank"], master_addr=params["master_addr"],
                                     master_port=port, log_dir=run_dir / "logs" / "msrun")
        if params.get("dry_run"):
            con.print(launcher.dry_run_text(cmd), markup=False, soft_wrap=True)
            return
        launcher.run_msrun(cmd, run_dir / "logs" / "msrun")
    last = run_dir / "checkpoints" / "last.ckpt"
    con.print(f"distributed training finished: {run_dir}")
    if last.is_file():
        con.print(f"checkpoint: {last}")
