"""Launch the same command as several data-parallel workers: MindSpore's ``msrun`` or an HCCL rank table.

Nothing here imports MindSpore: the parent process only builds command lines, starts processes and
reads their logs. Facts this module relies on (measured with MindSpore 2.10, see
``../shared/mindspore-notes.md`` and ``tests/test_launch.py``):

* ``msrun`` starts one *scheduler* and ``local_worker_num`` *workers*, all running the same command.
  It runs ``python <script> args`` with ``python`` looked up on ``PATH`` (a first argument of
  ``python``/``python3`` is used as the program itself), so the interpreter's folder must come first on
  ``PATH``: :func:`msrun_command` records that and :func:`run_msrun` / :func:`dry_run_text` apply it.
* Workers get ``MS_ROLE=MS_WORKER``, ``MS_WORKER_NUM``, ``MS_NODE_ID``, ``MS_SCHED_HOST``,
  ``MS_SCHED_PORT``, ``MS_TOPO_TIMEOUT``, ``RANK_ID``, ``RANK_SIZE`` and ``DEVICE_ID`` (the local
  index); the scheduler gets ``MS_ROLE=MS_SCHED`` and ``RANK_ID=0``, and its
  ``mindspore.communication.init()`` never returns (the process exits when the job ends). A worker
  command must therefore call ``init()`` before writing anything. :func:`worker_env_rank` reads these.
* Logs: ``<log_dir>/scheduler.log`` and ``<log_dir>/worker_<rank>.log``; ``--tail_worker_log=0`` echoes
  only local worker 0 (the rank that shows progress).
* When a worker fails, msrun kills the other workers at once but then waits for the scheduler, which
  notices only after its heartbeat timeout (about 40 s whatever ``--cluster_time_out`` says).
  :func:`run_msrun` watches msrun's own log for that failure and stops the scheduler after a short
  grace period, so a failed job ends in seconds and names the failing rank's log.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, IO, List, Mapping, Optional, Sequence, Tuple, Union

from geocli.errors import LaunchError, UsageError
from geocli.runtime.ranktable import RankTable, load_rank_table, rank_env

__all__ = ["LaunchCommand", "WorkerRank", "dry_run_text", "find_free_port", "load_rank_table",
           "msrun_available", "msrun_command", "msrun_path", "rank_env", "rank_table_envs", "run_msrun",
           "run_rank_table", "worker_env_rank"]

#: Seconds between a worker's failure and stopping msrun's scheduler (lets msrun finish killing workers).
FAILURE_GRACE_SECONDS = 1.0

rank_table_envs = rank_env  # the name the train command's launcher uses

Echo = Callable[[str], None]


# ----------------------------------------------------------------------------------------- arguments

def _is_interpreter(arg: str) -> bool:
    return re.fullmatch(r"python[0-9.]*", Path(arg).name) is not None


def _split_interpreter(child_argv: Sequence[str]) -> Tuple[str, List[str]]:
    """A full command line starting with a Python interpreter, or ``geoloc`` arguments."""
    argv = list(child_argv)
    if not argv:
        raise UsageError("empty worker command line")
    if _is_interpreter(argv[0]):
        return argv[0], argv[1:]
    return sys.executable, ["-m", "geocli", *argv]


def _python_on_path(interpreter: str) -> Tuple[str, Optional[str]]:
    """The name msrun should run (``python``/``python3``) and the folder to put first on PATH (or None)."""
    folder = Path(interpreter).parent if os.sep in interpreter else None
    if folder is None:  # a bare name: PATH decides, as msrun would
        return interpreter if interpreter in ("python", "python3") else "python", None
    for name in ("python", "python3"):
        candidate = folder / name
        if candidate.exists():
            found = shutil.which(name)
            same = found is not None and Path(found).parent.resolve() == folder.resolve()
            return name, None if same else str(folder)
    raise LaunchError(f"msrun starts workers as `python` or `python3` from PATH, but neither exists next to "
                      f"{interpreter}; run geoloc from a virtualenv or create that link")


# ------------------------------------------------------------------------------------------- msrun

class LaunchCommand(list):
    """A command line (a ``list[str]``) plus the folder that must lead ``PATH`` when it runs."""

    path_prefix: Optional[str] = None

    def env(self, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        env = dict(os.environ if base is None else base)
        if self.path_prefix:
            env["PATH"] = self.path_prefix + os.pathsep + env.get("PATH", "")
        return env


def msrun_path() -> Optional[str]:
    """``msrun`` next to this interpreter (the usual virtualenv install) or on PATH."""
    beside = Path(sys.executable).parent / "msrun"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("msrun")


def msrun_available() -> bool:
    return msrun_path() is not None


def _require_msrun() -> str:
    path = msrun_path()
    if path is None:
        raise LaunchError(f"msrun not found next to {sys.executable} or on PATH: it is installed with MindSpore "
                          "(pip install mindspore); `geoloc env` shows what is installed")
    return path


def msrun_command(child_argv: Sequence[str], workers: int, nodes: int = 1, node_rank: int = 0,
                  master_addr: str = "127.0.0.1", master_port: int = 8118,
                  log_dir: Union[str, Path] = "msrun_logs", cluster_timeout: Optional[int] = None,
                  tail_worker: Optional[int] = 0) -> LaunchCommand:
    """The msrun command line that runs ``child_argv`` as ``workers`` processes on each of ``nodes``.

    ``child_argv`` is either a full command line starting with a Python interpreter
    (``[sys.executable, "-m", "geocli", "train", ...]`` or ``[sys.executable, "script.py"]``) or just
    ``geoloc`` arguments (``["train", "toy", ...]``, run as ``python -m geocli ...``).
    ``cluster_timeout`` (seconds for all processes to join) defaults to 120 on one node and 600 across
    nodes; ``tail_worker`` is the local worker whose log msrun echoes (None: all of them).
    """
    if workers < 1 or nodes < 1:
        raise UsageError(f"--workers ({workers}) and --nodes ({nodes}) must be at least 1")
    if not 0 <= node_rank < nodes:
        raise UsageError(f"--node-rank {node_rank} must be in 0..{nodes - 1} for {nodes} node(s)")
    if not 1024 <= int(master_port) <= 65535:
        raise UsageError(f"--master-port {master_port} must be in 1024..65535")
    if tail_worker is not None and not 0 <= tail_worker < workers:
        raise UsageError(f"tail_worker {tail_worker} must be a local worker index 0..{workers - 1}")
    interpreter, rest = _split_interpreter(child_argv)
    python, prefix = _python_on_path(interpreter)
    timeout = cluster_timeout if cluster_timeout is not None else (120 if nodes == 1 else 600)
    cmd = LaunchCommand([
        _require_msrun(),
        f"--worker_num={workers * nodes}",
        f"--local_worker_num={workers}",
        f"--master_addr={master_addr}",
        f"--master_port={int(master_port)}",
        f"--node_rank={node_rank}",
        f"--log_dir={os.fspath(log_dir)}",
        "--join=True",
        f"--cluster_time_out={int(timeout)}",
    ])
    if tail_worker is not None:
        cmd.append(f"--tail_worker_log={tail_worker}")
    cmd += [python, *rest]
    cmd.path_prefix = prefix
    return cmd


def find_free_port(host: str = "") -> int:
    """A TCP port nobody listens on right now (the OS picks it; a race with other programs is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def dry_run_text(cmd: Sequence[str], env: Optional[Mapping[str, str]] = None) -> str:
    """The exact shell line that runs ``cmd``: ``K=V ... cmd`` (``PATH=<dir>:$PATH`` where msrun needs it)."""
    parts = [f"{key}={shlex.quote(str(value))}" for key, value in (env or {}).items()]
    prefix = getattr(cmd, "path_prefix", None)
    if prefix:
        parts.insert(0, f"PATH={shlex.quote(prefix)}:$PATH")
    return " ".join(parts + [shlex.join([str(c) for c in cmd])])


def _pump(stream: IO[str], sinks: Sequence[Callable[[str], None]]) -> None:
    for line in iter(stream.readline, ""):
        for sink in sinks:
            sink(line)
    stream.close()


def _default_echo(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()


def _console_echo(echo: Optional[Echo]) -> Echo:
    """``echo`` (default: stdout) minus MindSpore's C++ INFO/WARNING lines; the log files keep them."""
    sink = echo or _default_echo

    def write(line: str) -> None:
        if not _GLOG_NOISE.match(line):
            sink(line)

    return write


def _stop_scheduler(msrun_pid: int) -> None:
    """Terminate the scheduler child of msrun (after a worker failed; msrun has killed the workers)."""
    try:
        import psutil  # a dependency of MindSpore, which msrun belongs to
    except ImportError:
        return
    try:
        children = psutil.Process(msrun_pid).children()
    except psutil.Error:
        return
    for child in children:
        try:
            if child.environ().get("MS_ROLE") == "MS_SCHED":
                child.terminate()
        except psutil.Error:
            continue


def _interrupt(proc: subprocess.Popen, wait: float = 15.0) -> None:
    """SIGINT makes msrun kill its workers, scheduler and log tails; if it hangs, kill its process group
    (msrun runs in a session of its own; the workers it started are in theirs)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        proc.wait()


def run_msrun(cmd: Sequence[str], log_dir: Union[str, Path], *, timeout: Optional[float] = None,
              echo: Optional[Echo] = None) -> None:
    """Run an :func:`msrun_command`; echo its output (worker 0's log); raise :class:`LaunchError` on failure.

    msrun's own messages go to ``<log_dir>/msrun.log``. On a failure the error names the failing rank,
    its last error line and its log file. ``timeout`` (seconds) stops everything and fails.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    echo = _console_echo(echo)
    env = cmd.env() if isinstance(cmd, LaunchCommand) else dict(os.environ)
    failed = threading.Event()

    def watch(line: str) -> None:
        if "exit with exception" in line:
            failed.set()

    with open(log_dir / "msrun.log", "w", encoding="utf-8") as msrun_log:
        # A session of its own: Ctrl-C reaches msrun once, from us (below), not twice from the terminal.
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", bufsize=1, env=env, start_new_session=True)
        pumps = [threading.Thread(target=_pump, args=(proc.stdout, [echo]), daemon=True),
                 threading.Thread(target=_pump, args=(proc.stderr, [msrun_log.write, watch]), daemon=True)]
        for pump in pumps:
            pump.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        failed_at: Optional[float] = None
        scheduler_stopped = False
        try:
            while proc.poll() is None:
                time.sleep(0.2)
                if failed.is_set() and failed_at is None:
                    failed_at = time.monotonic()
                if (failed_at is not None and not scheduler_stopped
                        and time.monotonic() - failed_at > FAILURE_GRACE_SECONDS):
                    _stop_scheduler(proc.pid)
                    scheduler_stopped = True
                if deadline is not None and time.monotonic() > deadline:
                    _interrupt(proc)
                    raise LaunchError(f"distributed run timed out after {timeout:.0f} s and was stopped; "
                                      f"logs: {log_dir}")
        except KeyboardInterrupt:
            _interrupt(proc)
            raise
        finally:
            for pump in pumps:
                pump.join(5)
    if proc.returncode != 0 or failed.is_set():
        raise LaunchError(failure_message(log_dir, "worker_*.log", f"msrun exit code {proc.returncode}",
                                          extra=log_dir / "msrun.log"))


# ------------------------------------------------------------------------------------ reading logs

_GLOG = re.compile(r"^\[(WARNING|INFO|ERROR|DEBUG|CRITICAL)\]")
_GLOG_NOISE = re.compile(r"^\[(WARNING|INFO|DEBUG)\] [A-Z_]+\(\d+")
_SECONDARY = re.compile(r"timed out|disconnect|heartbeat|connection|has been killed|other node", re.I)


def error_line(text: str) -> Optional[str]:
    """The last error a Python process printed: a traceback's exception line, or geoloc's ``error: ...``."""
    found = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("error: "):
            found = line[len("error: "):].strip()
        elif line.startswith("Traceback (most recent call last)"):
            for follow in lines[i + 1:]:
                if follow and not follow[0].isspace() and not _GLOG.match(follow):
                    found = follow.strip()
                    break
    if found and len(found) > 300:
        found = found[:297] + "..."
    return found


def _rank_of(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else 1 << 30


def failing_log(log_dir: Path, pattern: str) -> Optional[Tuple[Path, str]]:
    """The worker log that shows the first real error (secondary 'peer went away' errors rank last)."""
    found = []
    for path in sorted(log_dir.glob(pattern), key=_rank_of):
        try:
            line = error_line(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if line:
            found.append((bool(_SECONDARY.search(line)), _rank_of(path), path, line))
    if not found:
        return None
    _, _, path, line = min(found, key=lambda f: (f[0], f[1]))
    return path, line


def failure_message(log_dir: Path, pattern: str, what: str, extra: Optional[Path] = None) -> str:
    """One line: which rank failed, why, and where its log is."""
    hit = failing_log(log_dir, pattern)
    if hit is None:
        more = f"; launcher log: {extra}" if extra is not None else ""
        return (f"distributed run failed ({what}) and no worker log shows a Python error (killed by a signal, "
                f"e.g. out of memory?); logs: {log_dir}{more}")
    path, line = hit
    return f"distributed run failed: rank {_rank_of(path)}: {line}; its log: {path} (all logs: {log_dir})"


# ------------------------------------------------------------------------------------- rank table

def _terminate_all(procs: Sequence[subprocess.Popen], wait: float = 10.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    end = time.monotonic() + wait
    for proc in procs:
        try:
            proc.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_rank_table(child_argv: Sequence[str],
                   table: Union[str, Path, RankTable, Sequence[Mapping[str, str]]],
                   log_dir: Union[str, Path], *, server: Union[None, int, str] = None,
                   timeout: Optional[float] = None, echo: Optional[Echo] = None) -> None:
    """Start one process per device of this server (the HCCL rank-table way) and wait for all of them.

    ``table`` is a rank-table path (validated here), a :class:`RankTable`, or the per-process
    environments from :func:`rank_env`. Each process writes ``<log_dir>/worker_<RANK_ID>.log``; the
    lowest rank's output is also echoed. When one fails, the others are stopped and the error names the
    failing rank's log.
    """
    if isinstance(table, (str, Path)):
        envs = rank_env(load_rank_table(table), table, server)
    elif isinstance(table, RankTable):
        envs = rank_env(table, table.path, server)
    else:
        envs = [dict(e) for e in table]
    if not envs:
        raise LaunchError("the rank table lists no device on this server")
    interpreter, rest = _split_interpreter(child_argv)
    cmd = [interpreter, *rest]
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    echo = _console_echo(echo)
    procs: List[subprocess.Popen] = []
    files = []
    pumps = []
    try:
        for index, env in enumerate(envs):
            log = open(log_dir / f"worker_{env['RANK_ID']}.log", "w", encoding="utf-8")
            files.append(log)
            full_env = {**os.environ, **{k: str(v) for k, v in env.items()}}
            if index == 0:
                proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, errors="replace", bufsize=1)
                pump = threading.Thread(target=_pump, args=(proc.stdout, [log.write, echo]), daemon=True)
                pump.start()
                pumps.append(pump)
            else:
                proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            bad = [(env, code) for env, code in zip(envs, codes) if code not in (None, 0)]
            if bad:
                _terminate_all(procs)
                for pump in pumps:
                    pump.join(5)
                env, code = bad[0]
                raise LaunchError(failure_message(log_dir, "worker_*.log", f"rank {env['RANK_ID']} exit code {code}"))
            if all(code == 0 for code in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                _terminate_all(procs)
                raise LaunchError(f"rank-table run timed out after {timeout:.0f} s and was stopped; logs: {log_dir}")
            time.sleep(0.2)
        for pump in pumps:
            pump.join(5)
    except BaseException:
        _terminate_all(procs)
        raise
    finally:
        for log in files:
            log.close()


# ---------------------------------------------------------------------------------- inside a worker

@dataclass(frozen=True)
class WorkerRank:
    """How this process was launched: by which launcher, as which role and rank."""

    launcher: str  # "msrun", "rank_table" or "mpirun"
    role: str  # "worker" or "scheduler" (msrun's scheduler runs the same command but only coordinates)
    rank: Optional[int]  # None for the scheduler, or until init() on multi-node msrun without --node_rank
    size: int
    local_rank: Optional[int] = None

    @property
    def is_scheduler(self) -> bool:
        return self.role == "scheduler"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that shows progress and writes checkpoints."""
        return self.rank == 0 and not self.is_scheduler


def _int(value: Optional[str]) -> Optional[int]:
    return int(value) if value is not None and value.strip().lstrip("-").isdigit() else None


def worker_env_rank(environ: Optional[Mapping[str, str]] = None) -> Optional[WorkerRank]:
    """This process's place in a launched job, from the environment; None for a plain process.

    Read before MindSpore is initialised: msrun sets ``MS_ROLE`` (``MS_WORKER``/``MS_SCHED``),
    ``MS_WORKER_NUM``, ``MS_NODE_ID``/``RANK_ID`` and ``DEVICE_ID``; the rank-table launcher sets
    ``RANK_TABLE_FILE``, ``RANK_ID``, ``RANK_SIZE`` and ``DEVICE_ID``; mpirun sets ``OMPI_COMM_WORLD_*``.
    After ``mindspore.communication.init()``, ``get_rank()``/``get_group_size()`` are authoritative.
    """
    env = os.environ if environ is None else environ
    role = env.get("MS_ROLE")
    if role in ("MS_SCHED", "MS_WORKER") or env.get("MS_WORKER_NUM"):
        size = _int(env.get("MS_WORKER_NUM")) or _int(env.get("RANK_SIZE")) or 0
        if role == "MS_SCHED":
            return WorkerRank("msrun", "scheduler", None, size)
        rank = _int(env.get("RANK_ID"))
        if rank is None:
            rank = _int(env.get("MS_NODE_ID"))
        return WorkerRank("msrun", "worker", rank, size, _int(env.get("DEVICE_ID")))
    if env.get("RANK_TABLE_FILE") and env.get("RANK_ID") is not None:
        return WorkerRank("rank_table", "worker", _int(env.get("RANK_ID")), _int(env.get("RANK_SIZE")) or 0,
                          _int(env.get("DEVICE_ID")))
    if env.get("OMPI_COMM_WORLD_RANK") is not None:
        return WorkerRank("mpirun", "worker", _int(env.get("OMPI_COMM_WORLD_RANK")),
                          _int(env.get("OMPI_COMM_WORLD_SIZE")) or 0, _int(env.get("OMPI_COMM_WORLD_LOCAL_RANK")))
    return None
