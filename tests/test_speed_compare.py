"""benchmarks/compare_torch.py runs every PoseNet variant and prints the ratio table (smoke run, not timed).

Speed targets are printed by the benchmark, never asserted: timings on a shared CI machine would make
a timed test flaky. This checks that the comparison itself works from the repository: each twin builds,
trains a step and infers, geoloc's variant goes through the shared trainer and engine, and a missing
PyTorch is reported instead of crashing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_compare_torch_prints_every_variant_with_ratios(tmp_path):
    """Inference only: compiling the two MindSpore training graphs would cost about three quarters of this
    test's time (measured: 31 of 128 CPU s for inference alone), and the geoloc training step is the
    trainer's, which the end-to-end tests run; the training columns are exercised by running the benchmark
    itself (its figures are in README.md). SDNet, the smallest network: the same run on PoseNet at 224 px
    took 44 s of the suite (its plain MindSpore twin is built in the test below)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    cmd = [sys.executable, str(BENCH / "compare_torch.py"), "sdnet", "--batch", "4", "--rounds", "1",
           "--repeats", "1", "--threads", "2", "--only", "infer"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    table = "\n".join(lines)
    assert "SDNet" in lines[0] and "batch 4, 64x64, 2 threads" in lines[0]
    for label in ("geoloc --conv mindspore", "PyTorch twin", "geoloc --engine onnxruntime"):
        row = next(ln for ln in lines if ln.strip().startswith(label))
        assert "skipped" not in row, table
    torch_row = next(ln for ln in lines if ln.strip().startswith("PyTorch twin"))
    assert re.search(r"\d\.\d\dx", torch_row), table  # the inference ratio geoloc / PyTorch
    assert "geoloc --engine onnxruntime / PyTorch, inference" in table


def test_ratios_pair_the_rounds(monkeypatch):
    """A ratio is the median of the per-round ratios: a round where the machine slowed both sides alike
    does not tilt it, as it would tilt the ratio of the two medians."""
    monkeypatch.syspath_prepend(str(BENCH))
    import compare_torch

    def row(*train):
        r = compare_torch.Row("geoloc", "keep", None)
        r.times["train"] = list(train)
        return r

    # rounds 2 and 3 ran in a slow spell (everything took 3x); geoloc is 1.25x faster in every round
    geoloc, torch_twin = row(0.8, 2.4, 2.4), row(1.0, 3.0, 3.0)
    assert compare_torch.speed_ratio(geoloc, torch_twin, "train") == pytest.approx(1.25)
    assert compare_torch.speed_ratio(torch_twin, geoloc, "train") == pytest.approx(0.8)
    # rounds not paired (a variant timed fewer rounds): the ratio of the medians
    assert compare_torch.speed_ratio(row(1.0, 1.0), row(2.0, 2.0, 5.0), "train") == pytest.approx(2.0)
    assert compare_torch.speed_ratio(row(), torch_twin, "train") is None
    # a spell that hits one side of one round only (round 3's twin): still 1.25, where the ratio of the
    # medians (3.0 / 0.8) would say 3.75
    geoloc, torch_twin = row(0.8, 2.4, 0.8), row(1.0, 3.0, 3.0)
    assert compare_torch.speed_ratio(geoloc, torch_twin, "train") == pytest.approx(1.25)


def test_missing_pytorch_is_reported_not_raised(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    import twins

    with pytest.raises(twins.Unavailable, match=r"pip install -e '\.\[bench\]'"):
        twins.import_torch(2)


def test_every_twin_module_follows_the_interface(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import importlib

    import compare_torch

    for name in compare_torch.twin_modules():
        module = importlib.import_module(f"twins.{name}")
        assert isinstance(module.TITLE, str) and module.TITLE
        assert "geoloc" in module.VARIANTS and set(module.VARIANTS) <= set(compare_torch.ORDER), name
        assert callable(module.build)
    from twins import Options  # the header names the input each twin really runs

    opts = Options(batch=16, size=256, threads=2, seed=0)
    assert importlib.import_module("twins.creid").input_shape(opts) == "256x128"
    assert importlib.import_module("twins.vigor").input_shape(opts) == "256x512 panoramas, 256x256 tiles"


def test_every_twin_builds_its_mindspore_variants(monkeypatch):
    """Building wires geoloc's own network, trainer step and inference runner (nothing is compiled until
    called): this caught the DELF twin asking the engine for an export graph DELF does not have."""
    monkeypatch.syspath_prepend(str(BENCH))
    import importlib

    import compare_torch
    import twins

    for name in compare_torch.twin_modules():  # batch 4: Centroids-ReID's batch is P identities x K=4 images
        module = importlib.import_module(f"twins.{name}")
        for variant in ("geoloc", "mindspore"):  # the MindSpore variants (PoseNet has a plain MindSpore twin)
            if variant in module.VARIANTS:
                bench = module.build(variant, twins.Options(batch=4, size=64, threads=2))
                assert callable(bench.train) or callable(bench.infer), (name, variant)
