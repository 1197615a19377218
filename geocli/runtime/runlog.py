"""Run logging: a plain log file per rank, Rich console output on rank 0, metrics as JSON lines.

Per-rank plain files exist because a distributed failure is usually on one rank only, and Rich output
from several processes interleaved in one terminal is unreadable.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional


class RunLogger:
    def __init__(self, run_dir: Path, rank: int = 0, quiet: bool = False, console=None):
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.quiet = quiet
        self.log_dir = self.run_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.log_dir / f"rank{rank}.log", "a", encoding="utf-8")
        self._console = console

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, quiet=self.quiet or self.rank != 0, highlight=False)
        return self._console

    def info(self, message: str, *, show: bool = True) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._file.write(f"{stamp} rank{self.rank} {message}\n")
        self._file.flush()
        if show:
            self.console.print(message, markup=False)

    def metrics(self, step: int, values: Dict[str, Any], kind: str = "train") -> None:
        """Append one JSON line to ``metrics.jsonl`` (rank 0) and the rank's plain log."""
        record = {"kind": kind, "step": step, **{k: _plain(v) for k, v in values.items()}}
        self.info(json.dumps(record), show=False)
        if self.rank == 0:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class NullLogger(RunLogger):
    """A logger that writes nothing (library use without a run folder)."""

    def __init__(self):  # noqa: D401 - intentionally no files
        self.rank, self.quiet, self._console = 0, True, None

    def info(self, message: str, *, show: bool = True) -> None:
        pass

    def metrics(self, step: int, values: Dict[str, Any], kind: str = "train") -> None:
        pass

    def close(self) -> None:
        pass


def default_logger(log: Optional[RunLogger]) -> RunLogger:
    return log if log is not None else NullLogger()
