"""`geoloc train creid --distributed --workers 2`: two msrun CPU workers train the P x K recipe and agree."""

import re

import pytest


@pytest.mark.slow
def test_two_msrun_workers_train_creid(cli, tmp_path, ranks_agree):
    from geocli.runtime.launch import msrun_available

    assert msrun_available(), "msrun is installed with mindspore: the distributed path must be testable here"
    data = tmp_path / "synth"
    made = cli("data", "synth", "reid", "--out", data, "--train-ids", "8", "--test-ids", "2", "--cameras", "2",
               "--height", "64", "--width", "32")
    assert made.exit_code == 0, made.output
    result = cli("train", "creid", "--data", data, "--preset", "demo", "--out", tmp_path / "dist", "--distributed",
                 "--workers", 2, "--set", "model.width=8", "--set", "train.ids_per_batch=2", "--set", "train.steps=2",
                 "--set", "train.log_every=1")
    assert result.exit_code == 0, result.output + result.stderr
    meta = ranks_agree(tmp_path / "dist")
    assert meta["group_size"] == 2 and meta["step"] == 2 and meta["n_classes"] == 8


@pytest.mark.slow
def test_distributed_gallery_embedding_equals_one_process(cli, tmp_path):
    """`geoloc retrieve creid --distributed true --workers 2`: two msrun ranks each embed a shard of the
    gallery, merged into the HDF5 store; the store and the ranking equal single-process embedding."""
    import json

    import numpy as np

    from geocli.models.creid.features import read_store

    data = tmp_path / "synth"
    made = cli("data", "synth", "reid", "--out", data, "--train-ids", "2", "--test-ids", "3", "--cameras", "2",
               "--height", "64", "--width", "32")
    assert made.exit_code == 0, made.output
    gallery, query = data / "bounding_box_test", sorted((data / "query").glob("*.jpg"))[0]
    tiny = ["--set", "model.width=8", "--set", "data.size=[64,32]", "--set", "eval.batch_size=4", "--mode", "pynative"]

    def retrieve(name, *extra):
        result = cli("retrieve", "creid", query, "--gallery", gallery, "--features", tmp_path / f"{name}.h5",
                     "--top", 3, "--out", tmp_path / name, *tiny, *extra)
        assert result.exit_code == 0, result.output + result.stderr
        return json.loads((tmp_path / name / "results.json").read_text())

    one = retrieve("one")
    two = retrieve("two", "--distributed", "true", "--workers", 2)
    n_gallery = len([p for p in gallery.glob("*.jpg") if not p.name.startswith("-1")])
    assert two["feature_store"]["embedded"] == n_gallery == one["feature_store"]["embedded"]
    names1, f1, pids1, cams1 = read_store(tmp_path / "one.h5")
    names2, f2, pids2, cams2 = read_store(tmp_path / "two.h5")
    assert names1 == names2 and (pids1 == pids2).all() and (cams1 == cams2).all()
    np.testing.assert_allclose(f2, f1, rtol=1e-4, atol=1e-5 * float(np.abs(f1).max()))
    assert [r["gallery"] for r in two["queries"][0]["results"]] == [r["gallery"] for r in one["queries"][0]["results"]]
    parts = tmp_path / "two.h5.parts"
    assert not list(parts.glob("rank*.h5")) and not (parts / "job.json").exists()  # shards merged and removed
    logs = "".join(p.read_text() for p in (parts / "ranks").rglob("*.log"))
    shards = sorted(int(n) for n in re.findall(r"creid rank \d/2: embedded (\d+) of", logs))
    assert sum(shards) == n_gallery and len(shards) == 2 and shards[1] - shards[0] <= 1, logs[-2000:]

    again = retrieve("two", "--distributed", "true", "--workers", 2)  # nothing new: no msrun at all
    assert again["feature_store"] == {**two["feature_store"], "embedded": 0, "reused": n_gallery}
