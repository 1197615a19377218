"""``geoloc demo posenet``: render the synthetic plaza, convert it, train briefly, evaluate, and compare
with the trivial baseline of always predicting the mean training pose.

The demo owns its data folder: a scene it rendered earlier with other settings is rendered again, but
a folder holding anything else is never touched (the renderer refuses it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

from geocli.data import cambridge_mindrecord
from geocli.data.synth import cambridge as synth

#: The demo scene: 4 train and 2 test sequences of 150 frames at 112x63 (the demo trains on 64 px crops, so
#: larger frames only cost rendering time: 22 s for these against about 45 s at 160x90).
DEMO_SCENE = synth.SynthSpec(width=112, height=63, frames_per_sequence=150)


def prepare(data_dir: Path, scene: synth.SynthSpec = DEMO_SCENE) -> Dict[str, Any]:
    """Render (if missing) and convert (if not done) the demo scene; returns the render summary."""
    rerender = synth.scene_state(data_dir, scene) == "other"
    summary = synth.synthesize(data_dir, scene, overwrite=rerender)
    cambridge_mindrecord.convert(data_dir, overwrite=rerender)
    return summary


def run_demo(backend, data_dir: Path, out_dir: Path, ctx, *, runner: Optional[Callable] = None,
             preset: str = "demo", overrides: Iterable[str] = (),
             scene: synth.SynthSpec = DEMO_SCENE) -> Dict[str, Any]:
    """Returns the model's and the mean-pose baseline's median errors on the test sequences.

    ``runner(plan, ctx, meta=..., progress=...)`` runs the training plan; the default is the shared
    trainer. Progress goes to the run's log (``ctx.log``) every ``train.log_every`` steps."""
    from geocli import config
    from geocli.demo import train_demo_plan
    from geocli.api import write_metrics
    from geocli.nets.copies import inference_copy
    from geocli.runtime.runlog import default_logger

    log = default_logger(ctx.log)
    summary = prepare(data_dir, scene)
    log.info(f"posenet demo: plaza scene in {data_dir} ({summary['train']} train / {summary['test']} test frames)")
    cfg = config.resolve("posenet", preset, None, list(overrides))
    plan = backend.train_plan(cfg, data_dir, ctx)
    result = train_demo_plan("posenet", preset, cfg, plan, data_dir, ctx, runner)
    network = inference_copy(lambda: backend.build_network(cfg), plan.network)
    metrics = backend.evaluate(cfg, data_dir, network, Path(out_dir) / "eval", ctx)
    write_metrics(Path(out_dir) / "eval", "posenet", metrics, data=data_dir)
    return {
        "median_t_m": metrics["median_t_m"],
        "median_r_deg": metrics["median_r_deg"],
        "baseline_median_t_m": metrics["baseline_median_t_m"],
        "baseline_median_r_deg": metrics["baseline_median_r_deg"],
        "t_ratio_to_baseline": metrics["median_t_ratio_to_baseline"],
        "steps": getattr(result, "step", cfg["train"]["steps"]),
    }
