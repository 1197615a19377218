"""Shell completion: committed scripts match the app, and MODEL completes to registered model names."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from geocli import completion, registry
from geocli.cli.main import app

REPO = Path(__file__).resolve().parents[1]


def test_committed_scripts_are_not_stale():
    outdated = completion.stale(REPO / "completions")
    assert not outdated, (f"stale completion scripts {outdated}: regenerate them with "
                          f"`{completion.REGENERATE}` and commit the result")


def test_root_app_offers_typer_completion_under_the_same_variable():
    params = {p.name for p in typer.main.get_command(app).params}
    assert {"install_completion", "show_completion"} <= params
    assert completion.complete_var() == "_GEOLOC_COMPLETE"
    assert completion.script("zsh").startswith("#compdef geoloc\n")
    with pytest.raises(ValueError, match="unsupported shell"):
        completion.script("tcsh")


def test_check_and_write_from_the_command_line(tmp_path, capsys):
    assert completion.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "python -m geocli.completion --write" in capsys.readouterr().err
    assert completion.main(["--write", "--dir", str(tmp_path)]) == 0
    assert completion.main(["--check", "--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_geoloc", "geoloc.bash", "geoloc.fish"]


@pytest.fixture
def extra_model(monkeypatch):
    """A visible model registered for the test, so completion is checked even before real models exist."""
    registry.names()  # load the real registry first
    spec = registry.ModelSpec(name="zz_testmodel", summary="test", tasks=("train", "eval"), backend="x:Y")
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    return spec.name


def _complete(shell, line):
    """What the app answers to TAB after ``line`` (typer's protocol, as the committed scripts call it)."""
    env = {completion.complete_var(): f"complete_{shell}", "_TYPER_COMPLETE_ARGS": line}
    if shell == "bash":
        words = line.split(" ")
        env.update(COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    if shell == "fish":
        env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    result = CliRunner().invoke(app, [], env=env, prog_name="geoloc")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_model_argument_completes_to_registered_names(extra_model, shell):
    out = _complete(shell, "geoloc train ")
    for name in registry.names("train"):
        assert name in out, (shell, out)
    assert "toy" not in out  # hidden models stay out of completion


def test_model_completion_filters_by_prefix_and_commands_complete(extra_model):
    assert _complete("bash", "geoloc train zz_").split() == ["zz_testmodel"]
    assert _complete("bash", "geoloc mod").split() == ["models"]
    assert "--preset" in _complete("bash", "geoloc train zz_testmodel --pre").split()


def test_committed_bash_script_completes_in_a_real_bash(tmp_path):
    bash = shutil.which("bash")
    bindir = Path(sys.executable).parent
    if bash is None or not (bindir / "geoloc").exists():
        pytest.skip("needs bash and the geoloc console script next to this interpreter")
    probe = (f"source {REPO / 'completions' / 'geoloc.bash'}; COMP_WORDS=(geoloc tr); COMP_CWORD=1; "
             "_geoloc_completion geoloc; printf '%s\\n' \"${COMPREPLY[@]}\"; "
             "COMP_WORDS=(geoloc train ''); COMP_CWORD=2; _geoloc_completion geoloc; "
             "printf 'M:%s\\n' \"${COMPREPLY[@]}\"")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([bash, "--norc", "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert "train" in lines
    models = sorted(line[2:] for line in lines if line.startswith("M:") and line != "M:")
    assert models == sorted(registry.complete_model(""))


def test_cli_import_does_not_import_mindspore():
    code = "import geocli.cli.main, sys; print('mindspore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["models", "--all"], ["--show-completion", "bash"]])
def test_fast_paths_do_not_import_mindspore(args):
    code = ("import sys\nfrom geocli.cli.main import app\n"
            f"try:\n    app({args!r}, prog_name='geoloc')\nexcept SystemExit:\n    pass\n"
            "print('MS_IMPORTED', 'mindspore' in sys.modules)")
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert "MS_IMPORTED False" in out.stdout, out.stdout + out.stderr
