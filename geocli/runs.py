"""Run folders: ``runs/<model>-<preset>-<timestamp>/`` named from the preset (presets are data)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from geocli.errors import UsageError

RUNS_ROOT = Path("runs")


def new_run_dir(model: str, preset: str, out: Optional[Path] = None, root: Optional[Path] = None) -> Path:
    """``out`` if given, else a fresh timestamped folder (never an existing one): under ``runs/`` as
    ``<model>-<preset>-<time>``, or inside ``root`` (a run folder) as ``<preset>-<time>``."""
    if out is not None:
        return Path(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if root is not None:
        base = Path(root) / f"{preset}-{stamp}"
    else:
        base = RUNS_ROOT / "-".join(p for p in (model, preset, stamp) if p)
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def latest_run(model: str, preset: str) -> Optional[Path]:
    """The newest ``runs/<model>-<preset>-*`` folder that holds a ``checkpoints/last.ckpt``."""
    if not RUNS_ROOT.is_dir():
        return None
    candidates = [p for p in RUNS_ROOT.glob(f"{model}-{preset}-*") if (p / "checkpoints" / "last.ckpt").is_file()]
    return max(candidates, key=lambda p: (p / "checkpoints" / "last.ckpt").stat().st_mtime, default=None)


def resolve_resume(resume: str, model: str, preset: str, out: Optional[Path]) -> Path:
    """``--resume auto`` -> the last checkpoint of ``--out`` or of the newest matching run; else a path."""
    if resume != "auto":
        path = Path(resume)
        if path.is_dir():
            path = path / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise UsageError(f"--resume {resume}: no checkpoint there (give a .ckpt file, a run folder or 'auto')")
        return path
    run = Path(out) if out is not None else latest_run(model, preset)
    last = run / "checkpoints" / "last.ckpt" if run is not None else None
    if last is None or not last.is_file():
        where = f"in {out}" if out is not None else f"under {RUNS_ROOT}/{model}-{preset}-*"
        raise UsageError(f"--resume auto: no checkpoints/last.ckpt {where}; start without --resume")
    return last


def run_dir_of_checkpoint(path: Path) -> Optional[Path]:
    """The run folder a checkpoint was written in (``<run>/checkpoints/x.ckpt``), if it is one."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None
