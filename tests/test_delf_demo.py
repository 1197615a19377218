"""The synthetic retrieval benchmark (Oxford5k layout) and `geoloc demo delf` end to end."""

import numpy as np
import pytest

from geocli.errors import DataError


def test_synthetic_retrieval_set_is_an_oxford_layout(tmp_path):
    from geocli.data.synth.landmarks_retrieval import RetrievalSpec, synthesize_retrieval
    from geocli.metrics.oxford import load_oxford_gt
    from geocli.models.delf.protocol import load_eval_set

    spec = RetrievalSpec(landmarks=2, views=3, queries=2, distractors=2, size=48)
    summary = synthesize_retrieval(tmp_path / "bench", spec)
    assert summary["images"] == 8 and summary["queries"] == 4 and not summary["skipped"]
    evalset = load_eval_set("oxford5k", tmp_path / "bench")
    assert len(evalset.db_names) == 8 and len(evalset.queries) == 4
    queries = load_oxford_gt(tmp_path / "bench" / "gt")
    for q in queries:
        assert q.image.startswith(q.landmark + "_") and q.image not in q.good
        assert len(q.good) == 2 and all(g.startswith(q.landmark + "_") for g in q.good)
        assert q.box[:2] == (0.0, 0.0) and q.ok == [] and q.junk == []
    assert synthesize_retrieval(tmp_path / "bench", spec)["skipped"]
    with pytest.raises(DataError, match="other settings"):
        synthesize_retrieval(tmp_path / "bench", RetrievalSpec(landmarks=3, views=3, size=48))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        synthesize_retrieval(tmp_path / "other", spec)


def test_random_ranking_floor_is_the_expected_ap():
    from geocli.models.delf.demo import random_map
    from geocli.models.delf.protocol import EvalQuery, EvalSet

    names = [f"im{i}" for i in range(20)]
    queries = [EvalQuery("q1", "im0", None, good=["im1", "im2"]), EvalQuery("q2", "im3", None, good=["im4"])]
    floor = random_map(EvalSet("x", names, [], queries, {}), trials=400)
    assert 3 < floor < 20  # a couple of positives among 19: AP of a random order is small, never 0
