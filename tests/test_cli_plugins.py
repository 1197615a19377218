"""The CLI's plug-in surface: per-model commands with declared flags, model sub-command apps, data
commands from the registry, and messages for tasks or verbs nothing supports yet."""

import re
import sys

import pytest

from geocli import registry
from geocli.registry import DataCommand, Flag, ModelSpec


@pytest.fixture
def plugin(monkeypatch):
    """A visible model with its own retrieve sub-commands and an eval flag, plus a data command."""
    registry.names()
    monkeypatch.delitem(sys.modules, "cli_plugin_fixture", raising=False)
    spec = ModelSpec(name="zz_plugin", summary="Plug-in test model.", tasks=("train", "retrieve"), backend="x:Y",
                     flags={"stage": Flag("train.stage", ("one", "two"), ("train",), "Stage.")},
                     commands={"retrieve": "cli_plugin_fixture:retrieve_app"})
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    entry = DataCommand("npz-prep", "zz_data", "cli_plugin_fixture:npz_prep", "count text files")
    monkeypatch.setitem(registry._DATA_COMMANDS, ("npz-prep", "zz_data"), entry)
    return spec


def test_model_flag_becomes_an_override_and_set_has_the_last_word(cli):
    result = cli("train", "toy", "--schedule", "cosine", "--print-config")
    assert result.exit_code == 0, result.output
    assert "schedule: cosine" in result.output
    result = cli("train", "toy", "--schedule", "cosine", "--set", "optim.schedule=poly", "--print-config")
    assert "schedule: poly" in result.output


def test_hyphenated_flag_on_eval_is_typed_by_the_config(cli, tmp_path):
    result = cli("eval", "toy", "--test-size", "16", "--checkpoint", tmp_path / "none.ckpt")
    assert result.exit_code == 1 and "checkpoint not found" in result.stderr  # got past flag validation


@pytest.mark.parametrize("args,fragment", [
    (("train", "toy", "--schedule", "sometimes"), "--schedule 'sometimes': toy train takes one of constant"),
    (("eval", "toy", "--test-size", "17", "--checkpoint", "x"), "--test-size '17': toy eval takes one of 16, 64"),
    (("match", "toy", "a.png", "b.png"), "model 'toy' does not support 'match'"),
])
def test_bad_flag_values_and_tasks_are_one_line_usage_errors(cli, args, fragment):
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_flag_only_exists_for_its_tasks(cli):
    result = cli("eval", "toy", "--schedule", "cosine", "--checkpoint", "x")
    assert result.exit_code == 2 and "--schedule" in result.output


def test_a_task_nobody_supports_says_so(cli, monkeypatch):
    registry.names()
    for name, spec in list(registry._REGISTRY.items()):
        if spec.supports("match"):
            monkeypatch.delitem(registry._REGISTRY, name)
    result = cli("match", "delf", "a.png", "b.png")
    assert result.exit_code == 2
    assert "No model supports 'match' yet" in result.stderr and "Valid models: ." not in result.stderr
    assert "No model supports 'match' yet" in cli("match", "--help").output


def test_unknown_model_lists_the_models_of_that_task(cli):
    result = cli("train", "posenett")
    assert result.exit_code == 2
    assert "unknown model 'posenett'. Did you mean 'posenet'?" in result.stderr
    listed = result.stderr.split("Valid models for 'train': ")[1].rstrip(".\n").split(", ")
    assert listed == registry.names("train")


def test_model_sub_commands_are_imported_only_when_resolved(cli, plugin, tmp_path):
    listing = cli("retrieve", "--help")
    assert "zz_plugin" in listing.output and "Plug-in test model." in listing.output
    assert "cli_plugin_fixture" not in sys.modules
    help_text = cli("retrieve", "zz_plugin", "--help").output
    assert "index" in help_text and "query" in help_text
    assert "cli_plugin_fixture" in sys.modules

    features = tmp_path / "f.txt"
    features.write_text("abd\nabc\nxyz\nab\n")
    result = cli("retrieve", "zz_plugin", "index", "--features", features, "--out", tmp_path / "i.txt")
    assert result.exit_code == 0, result.output
    result = cli("retrieve", "zz_plugin", "query", "abcz", "--index", tmp_path / "i.txt", "--top", "2")
    assert result.exit_code == 0 and result.output.split() == ["abc", "ab"]
    result = cli("retrieve", "zz_plugin", "index", "--features", tmp_path / "missing", "--out", tmp_path / "j")
    assert result.exit_code == 1 and "missing: no such feature file" in result.stderr
    assert cli("retrieve", "zz_plugin", "nosuch").exit_code == 2


def test_generic_flags_of_a_plugin_model(cli, plugin):
    result = cli("train", "zz_plugin", "--stage", "three")
    assert result.exit_code == 2 and "--stage 'three': zz_plugin train takes one of one, two" in result.stderr


def test_data_commands_come_from_the_registry(cli, plugin, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    assert "zz_data" in cli("data", "npz-prep", "--help").output
    result = cli("data", "npz-prep", "zz_data", "--data", tmp_path, "--out", tmp_path / "n.txt")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "n.txt").read_text() == "2\n"
    again = cli("data", "npz-prep", "zz_data", "--data", tmp_path, "--out", tmp_path / "n.txt")
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    result = cli("data", "npz-prep", "ZZ_DATA", "--data", tmp_path, "--out", tmp_path / "m.txt")
    assert result.exit_code == 0  # dataset names are case-insensitive, like model names
    result = cli("data", "npz-prep", "nosuch")
    assert result.exit_code == 2 and "npz-prep 'nosuch': choose one of " in result.stderr
    assert "zz_data" in result.stderr.split("choose one of ")[1]


def test_an_empty_data_verb_says_no_dataset_supports_it(cli, monkeypatch):
    registry.names()
    for key in [k for k in registry._DATA_COMMANDS if k[0] == "convert-weights"]:
        monkeypatch.delitem(registry._DATA_COMMANDS, key)
    result = cli("data", "convert-weights", "resnet50")
    assert result.exit_code == 2
    assert "no dataset supports 'convert-weights' yet" in result.stderr
    assert "No dataset supports 'convert-weights' yet" in cli("data", "convert-weights", "--help").output


def test_a_flag_that_clashes_with_a_command_option_is_refused(monkeypatch):
    from geocli.cli import plugins, tasks

    spec = ModelSpec(name="zz_clash", summary="", tasks=("train",), backend="x:Y",
                     flags={"data": Flag("data.root", (), ("train",), "clashes with --data")})
    with pytest.raises(ValueError, match="zz_clash.*--data"):
        plugins.model_command("train", spec, tasks.GENERIC["train"])


def test_every_registered_model_builds_every_command():
    """A backend whose flags or sub-command target are broken fails here, named."""
    from geocli.cli import plugins

    for task in ("train", "eval", "export", "match", "retrieve"):
        group = plugins.ModelGroup(name=task)
        for name in group.names(include_hidden=True):
            assert group.command(name).name == name, (task, name)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"flags": {"Stage": Flag("train.stage", ("a",), ("train",))}}, "flag name 'Stage'"),
    ({"flags": {"stage": Flag("train.stage", ("a",), ("match",))}}, "--stage names tasks it does not support"),
    ({"commands": {"match": "m:app"}}, "commands['match']"),
    ({"commands": {"train": "no-colon"}}, "must be 'module:attr'"),
])
def test_registration_refuses_declarations_the_cli_cannot_honour(kwargs, fragment):
    spec = ModelSpec(name="zz_bad", summary="", tasks=("train",), backend="x:Y", **kwargs)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        registry.register(spec)
    assert registry.find("zz_bad") is None


def test_one_line_descriptions_for_zsh_and_fish():
    from geocli.completion import HELP_WIDTH, one_line

    assert one_line("Camera relocalisation: 6-DoF pose. More text here.") == "Camera relocalisation: 6-DoF pose"
    long = one_line("word " * 40)
    assert len(long) <= HELP_WIDTH and long.endswith("...") and "\n" not in long
    assert one_line("two\nlines") == "two lines" and one_line(None) == ""
