"""``geoloc demo creid``: draw the synthetic pedestrians, train briefly, evaluate against the untrained
network, and finish with the picture of ranked galleries.

The demo owns its data folder: a set it drew earlier with other settings is redrawn, but a folder
holding anything else is never touched (the generator refuses it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

from geocli.data.synth import reid as synth

#: The demo set: 64 training and 32 test identities, 4 cameras, Market's 128x64 images.
DEMO_SET = synth.ReidSynthSpec(train_ids=64, test_ids=32, cameras=4, per_camera=2)


def prepare(data_dir: Path, spec: synth.ReidSynthSpec = DEMO_SET) -> Dict[str, int]:
    redraw = synth.state(data_dir, spec) == "other"
    return synth.synthesize(data_dir, spec, overwrite=redraw)


def run_demo(backend, data_dir: Path, out_dir: Path, ctx, *, runner: Optional[Callable] = None,
             preset: str = "demo", overrides: Iterable[str] = (),
             spec: synth.ReidSynthSpec = DEMO_SET) -> Dict[str, Any]:
    """Returns rank-1 / mAP of the trained and the untrained network (full gallery and centroids) and
    the path of the ranked-gallery picture."""
    from geocli import config
    from geocli.demo import train_demo_plan
    from geocli.api import write_metrics
    from geocli.models.creid.backend import build, inference_copy
    from geocli.models.creid.retrieve import run_retrieval
    from geocli.runtime.runlog import default_logger

    log = default_logger(ctx.log)
    counts = prepare(data_dir, spec)
    log.info(f"creid demo: synthetic pedestrians in {data_dir} ({counts})")
    cfg = config.resolve("creid", preset, None, list(overrides))
    untrained = backend.evaluate(cfg, data_dir, build(cfg), None, ctx)
    plan = backend.train_plan(cfg, data_dir, ctx)
    result = train_demo_plan("creid", preset, cfg, plan, data_dir, ctx, runner)
    network = inference_copy(cfg, plan.network)
    eval_dir = Path(out_dir) / "eval"
    metrics = backend.evaluate(cfg, data_dir, network, eval_dir, ctx)
    metrics.update({f"untrained_{k}": v for k, v in untrained.items() if k.endswith(("rank1", "mAP"))})
    write_metrics(eval_dir, "creid", metrics, data=data_dir)
    all_queries = sorted((Path(data_dir) / "query").glob("*.jpg"))
    queries = all_queries[::max(len(all_queries) // 6, 1)][:6]  # six queries spread over the identities
    retrieve_cfg = {**cfg, "retrieve": {**cfg["retrieve"], "gallery": str(Path(data_dir) / "bounding_box_test"),
                                        "features": str(Path(out_dir) / "gallery.h5")}}
    shown = run_retrieval(retrieve_cfg, queries, network, Path(out_dir) / "retrieve", ctx, top_k=8)
    return {
        "rank1": metrics["rank1"], "mAP": metrics["mAP"],
        "centroids_rank1": metrics.get("centroids_rank1"), "centroids_mAP": metrics.get("centroids_mAP"),
        "untrained_rank1": untrained["rank1"], "untrained_mAP": untrained["mAP"],
        "steps": getattr(result, "step", plan.steps),
        "picture": shown["picture"],
    }
