"""``geoloc demo``: each model's demo on built-in synthetic data, and one table of what each measured.

Demo data is generated on first use into a cache folder and reused afterwards. Models that are not
implemented yet are listed as such (never faked).
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from geocli import registry
from geocli.errors import GeolocError

#: The five models geoloc is built for, in the order the demo runs them.
PLANNED = ("posenet", "sdnet", "creid", "delf", "vigor")


def train_demo_plan(model: str, preset: str, cfg: Dict, plan, data: Path, ctx, runner=None):
    """Run a demo's training plan with progress in the run's log every ``train.log_every`` steps.

    ``runner(plan, ctx, meta=..., progress=...)`` defaults to the shared trainer; tests pass their own.
    One helper for every backend's demo, so the demos differ only in their data and their evaluation."""
    from geocli.runtime.runlog import default_logger

    if runner is None:
        from geocli.runtime.trainer import train as runner
    log = default_logger(ctx.log)
    meta = {"model": model, "preset": preset, "config": cfg, "seed": cfg["seed"], "data": str(data)}
    every = max(cfg["train"]["log_every"], 1)

    def progress(step: int, total: int, values: Dict[str, float]) -> None:
        if step % every == 0 or step == total:
            log.info(f"{model} step {step}/{total} " + " ".join(f"{k}={v:.3f}" for k, v in values.items()))

    return runner(plan, ctx, meta=meta, progress=progress)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geoloc" / "demo"


@dataclass
class DemoOutcome:
    model: str
    status: str  # "ok", "failed", "not available"
    seconds: float = 0.0
    figures: Dict[str, object] = field(default_factory=dict)
    message: str = ""


def run_demos(models: Optional[Sequence[str]] = None, data_dir: Optional[Path] = None,
              out_dir: Optional[Path] = None, device: Optional[str] = None, on_start=None,
              keep_going: bool = True) -> List[DemoOutcome]:
    """Run the demo of each model (all planned ones by default); a failure of one does not stop the rest
    unless ``keep_going`` is False."""
    from geocli.api import _context

    available = set(registry.names("demo"))
    wanted = list(models) if models else list(PLANNED) + sorted(available - set(PLANNED))
    for name in wanted:
        if name not in available and name not in PLANNED:
            registry.get(name, "demo")  # raises the usual unknown-model / unsupported-task usage error
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    out_dir = Path(out_dir) if out_dir else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    outcomes: List[DemoOutcome] = []
    for name in wanted:
        if name not in available:
            outcomes.append(DemoOutcome(name, "not available", message="backend not implemented yet"))
            continue
        if on_start is not None:
            on_start(name)
        started = time.perf_counter()
        try:
            ctx = _context(out_dir / name, device, "graph", 0, None, quiet=False, distributed=False)
            figures = registry.load_backend(name).demo(data_dir / name, out_dir / name, ctx)
            outcomes.append(DemoOutcome(name, "ok", time.perf_counter() - started, dict(figures)))
        except GeolocError as exc:
            if not keep_going:
                raise
            outcomes.append(DemoOutcome(name, "failed", time.perf_counter() - started, message=str(exc)))
        except Exception as exc:  # a bug in one backend must not hide the others' results
            if not keep_going:
                raise
            traceback.print_exc()
            outcomes.append(DemoOutcome(name, "failed", time.perf_counter() - started,
                                        message=f"{type(exc).__name__}: {exc}"))
    return outcomes
