"""Inference engine selection (geocli.runtime.engine) and the --engine parameter of the library API."""

from __future__ import annotations

import pytest

from geocli import api
from geocli.errors import UsageError
from geocli.runtime import engine


def test_engine_names_are_validated():
    assert engine.check("MindSpore") == "mindspore"
    assert engine.check("onnxruntime") == "onnxruntime"
    with pytest.raises(UsageError, match="--engine 'tensorrt'"):
        engine.check("tensorrt")


def test_api_refuses_unknown_engine_before_any_work(tmp_path):
    with pytest.raises(UsageError, match="--engine"):
        api.evaluate("posenet", None, out=tmp_path / "e", engine="tensorrt")
    with pytest.raises(UsageError, match="--engine"):
        api.infer("retrieve", "posenet", [], None, out=tmp_path / "r", engine="tensorrt")
    assert not (tmp_path / "e").exists() and not (tmp_path / "r").exists()


def test_backend_without_engines_attribute_runs_mindspore_only():
    class Plain:
        name = "plain"

    assert engine.supported(Plain()) == ("mindspore",)
    with pytest.raises(UsageError, match="plain eval runs on mindspore only"):
        engine.require(Plain(), "onnxruntime", "eval")


def test_an_engine_is_refused_for_a_task_that_would_ignore_it(cli, tmp_path):
    """SDNet's match runs on MindSpore only, so `--engine onnxruntime` there is an error, not a silent
    no-op; DELF's match extracts on either engine."""
    from geocli import registry

    with pytest.raises(UsageError, match="sdnet match runs on mindspore only"):
        engine.require(registry.load_backend("sdnet"), "onnxruntime", "match")
    assert engine.require(registry.load_backend("sdnet"), "onnxruntime", "eval") == "onnxruntime"
    assert engine.require(registry.load_backend("delf"), "onnxruntime", "match") == "onnxruntime"
    (tmp_path / "a.png").write_bytes(b"")
    result = cli("match", "sdnet", tmp_path / "a.png", tmp_path / "a.png", "--engine", "onnxruntime")
    assert result.exit_code != 0 and "sdnet match runs on mindspore only" in result.output + str(result.stderr)
