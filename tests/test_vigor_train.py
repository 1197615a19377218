"""VIGOR training plumbing on a tiny synthetic dataset: stage 1 with mining -> stage 2 hand-over (global
step, Adam state, continuous decay), evaluation files, export parity, and a 2-worker msrun step."""

from __future__ import annotations

import dataclasses
from pathlib import Path
import json
import subprocess
import sys

import numpy as np
import pytest

from geocli import api, config

TINY = ["data.pano_hw=[64,128]", "data.sat_hw=[64,64]", "model.width=0.0625", "train.batch_size=2",
        "train.stage2_batch_size=2", "train.epochs_same_area=[2,1]", "train.iters_divisor=1000",
        "train.mining_start=1", "train.mining_top=5", "train.log_every=1", "eval.batch_size=8", "eval.chunk=5"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from geocli.data.synth.vigor import SynthSpec, synthesize

    root = tmp_path_factory.mktemp("vigor")
    synthesize(root / "data", SynthSpec(grid=4, panos_per_tile=1, tile_px=48, pano_hw=(32, 64)))
    return root


def test_stage_one_mines_then_stage_two_continues_the_global_step(tiny):
    from geocli import registry
    from geocli.errors import ConfigError
    from geocli.models.vigor.backend import lr_table
    from geocli.runtime import context
    from geocli.runtime.trainer import train

    backend = registry.load_backend("vigor")
    ctx = context.setup(tiny / "s1", mode="graph", seed=0, distributed=False)
    cfg = config.resolve("vigor", "default", None, TINY)
    plan = backend.train_plan(cfg, tiny / "data", ctx)
    assert plan.loss_names == ["triplet"] and plan.steps == 2  # 2 epochs of 1 iteration
    mining = plan.epoch_hooks[1]
    meta = {"model": "vigor", "preset": "default", "config": cfg}
    first = train(plan, ctx, meta=meta)
    assert first.step == 2
    assert mining.sampler.epoch == 1 and mining.sampler.mined.shape == (32, 5)  # mined from epoch 1 on
    assert set(mining.sampler.mined.ravel()) <= set(range(64))

    cfg2 = config.apply_overrides(cfg, ["train.stage=2"])
    ctx2 = dataclasses.replace(ctx, run_dir=tiny / "s2")
    plan2 = backend.train_plan(cfg2, tiny / "data", ctx2)
    assert plan2.loss_names == ["triplet", "iou", "offset"] and plan2.steps == 3
    with pytest.raises(ConfigError, match="--resume"):
        train(plan2, ctx2, meta=meta)  # stage 2 alone would restart the global step at 0
    plan2 = backend.train_plan(cfg2, tiny / "data", ctx2)
    second = train(plan2, ctx2, resume=first.last_checkpoint, meta=meta)
    assert second.step == 3 and set(second.losses) == {"loss", "triplet", "iou", "offset"}
    from geocli.runtime import checkpoint as ckpt

    params, saved = ckpt.load(second.last_checkpoint)
    steps = [v.asnumpy() for k, v in params.items() if k.endswith("global_step")]
    assert steps and int(np.ravel(steps[0])[0]) == 3  # Adam's step carried over from stage 1
    table = [v.asnumpy() for k, v in params.items() if k.endswith("learning_rate")]
    np.testing.assert_allclose(table[0], lr_table(cfg2, 3), rtol=1e-6)
    np.testing.assert_allclose(lr_table(cfg, 300001)[[0, 150000, 300000]], [1e-5, 1e-6, 1e-7], rtol=1e-5)


@pytest.fixture(scope="module")
def checkpoint(tiny):
    result = api.train("vigor", data=tiny / "data", out=tiny / "run",
                       overrides=TINY + ["train.recipe=one-stage", "train.steps=2"], quiet=True)
    return result.last_checkpoint


def test_eval_writes_recall_metres_and_the_curve(tiny, checkpoint, cli):
    out = tiny / "eval"
    result = cli("eval", "vigor", "--checkpoint", checkpoint, "--data", tiny / "data", "--out", out,
                 "--protocol", "port")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"r@1", "r@5", "r@10", "r@1%", "hit_rate", "median_m", "offset_median_m"} <= set(metrics)
    assert metrics["queries"] == 32 and metrics["tiles"] == 64
    assert (out / "accuracy_vs_threshold.png").stat().st_size > 1000
    assert len((out / "per_query.csv").read_text().splitlines()) == 33


@pytest.mark.parametrize("fmt", ["mindir", "onnx"])
def test_export_three_graphs_with_parity(tiny, checkpoint, fmt):
    """Ground and satellite branches and the offset head; ONNX (and MINDIR) in a fresh process."""
    out = tiny / f"export-{fmt}" / "vigor"
    proc = subprocess.run([sys.executable, "-m", "geocli", "export", "vigor", "--checkpoint", str(checkpoint),
                           "--format", fmt, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for part in ("ground", "satellite", "offset"):
        assert (out.parent / f"vigor-{part}.{fmt}").is_file()
    assert proc.stdout.count("max abs difference") == 3, proc.stdout
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(out.parent / "vigor-ground.onnx"))
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == [1, 3, 64, 128]  # height x width, not the port's swapped export


def test_two_workers_under_msrun(tiny, cli, ranks_agree):
    run = tiny / "dist"
    result = cli("train", "vigor", "--data", tiny / "data", "--out", run, "--distributed", "--workers", 2,
                 *[f"--set={s}" for s in TINY + ["train.recipe=one-stage", "train.steps=1", "train.batch_size=2"]])
    assert result.exit_code == 0, result.output
    assert ranks_agree(run)["group_size"] == 2


def test_one_panorama_per_batch_is_refused_before_training(tiny, cli):
    result = cli("train", "vigor", "--data", tiny / "data", "--out", tiny / "one",
                 *[f"--set={s}" for s in TINY + ["train.recipe=one-stage", "train.steps=1", "train.batch_size=1"]])
    assert result.exit_code != 0
    assert "train.batch_size=1" in result.output and "at least 2" in result.output


def test_retrieve_index_then_query(tiny, checkpoint, cli):
    index = tiny / "tiles.h5"
    result = cli("retrieve", "vigor", "index", "--checkpoint", checkpoint, "--data", tiny / "data", "--out", index)
    assert result.exit_code == 0, result.output
    assert "64 tiles (64 added)" in result.output
    again = cli("retrieve", "vigor", "index", "--checkpoint", checkpoint, "--data", tiny / "data", "--out", index)
    assert "(0 added)" in again.output  # incremental
    panos = sorted((tiny / "data" / "Seattle" / "panorama").iterdir())[:2]
    out = tiny / "query"
    result = cli("retrieve", "vigor", "query", "--satellite-index", index, "--checkpoint", checkpoint, "--top", 3,
                 "--out", out, "--", *panos)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 2 and all(len(r["top"]) == 3 for r in rows)
    for r in rows:
        assert Path(r["picture"]).stat().st_size > 1000
        lat, lon = r["tile_centre"]
        assert abs(r["refined"][0] - lat) < 1e-3 and abs(r["refined"][1] - lon) < 1e-3  # within a tile


def test_onnxruntime_engine_gives_mindspore_descriptors_and_recall(tiny, checkpoint, cli):
    """``--engine onnxruntime`` for eval and the retrieve index: the cached ONNX branches give MindSpore's
    descriptors within the export bound, hence the same ranking."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra (pip install -e '.[dev]')")
    from geocli.retrieval.store import FeatureStore

    stacks = {}
    for engine in ("mindspore", "onnxruntime"):
        index = tiny / f"tiles-{engine}.h5"
        result = cli("retrieve", "vigor", "index", "--checkpoint", checkpoint, "--data", tiny / "data",
                     "--out", index, "--engine", engine)
        assert result.exit_code == 0, result.output
        with FeatureStore(index, "r") as store:
            stacks[engine] = store.stack_global("global")
    assert stacks["mindspore"][0] == stacks["onnxruntime"][0]
    np.testing.assert_allclose(stacks["onnxruntime"][1], stacks["mindspore"][1], atol=1e-4)
    assert sorted(p.name for p in (Path(checkpoint).parent / "onnx").glob("*.onnx")) == \
        sorted(p.name for p in (Path(checkpoint).parent / "onnx").glob("vigor-satellite-*.onnx"))

    metrics = {}
    for engine in ("mindspore", "onnxruntime"):
        out = tiny / f"eval-{engine}"
        result = cli("eval", "vigor", "--checkpoint", checkpoint, "--data", tiny / "data", "--out", out,
                     "--engine", engine)
        assert result.exit_code == 0, result.output
        metrics[engine] = json.loads((out / "metrics.json").read_text())["metrics"]
    for key in ("r@1", "r@5", "r@10", "hit_rate"):
        assert metrics["onnxruntime"][key] == metrics["mindspore"][key], key
    assert abs(metrics["onnxruntime"]["median_m"] - metrics["mindspore"]["median_m"]) < 1e-6
    assert {p.name.split("-")[1] for p in (Path(checkpoint).parent / "onnx").glob("*.onnx")} == {"ground", "satellite"}
