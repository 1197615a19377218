"""Shell completion as a user's shell gets it: the completion protocol of bash, zsh and fish, driven with
partial words, for every registered model (a new backend is covered without a new test).

Three layers: (1) the whole matrix in-process (fast: the same protocol code the installed command runs);
(2) the installed ``geoloc`` console script for each shell and model (what the shells really execute);
(3) a real bash sourcing the committed script. Plus: the committed scripts are not stale, and a
completion round trip imports no MindSpore.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from geocli import completion, registry
from geocli.cli import plugins
from geocli.cli.main import app

REPO = Path(__file__).resolve().parents[1]
SHELLS = ("bash", "zsh", "fish")
BINDIR = Path(sys.executable).parent
GENERIC_TASKS = ("train", "eval", "export", "match", "retrieve")


# -- the protocol --------------------------------------------------------------------------------------


def protocol_env(shell: str, line: str, fish_action: str = "get-args") -> dict:
    """The environment each committed script sets before running ``geoloc`` (see completions/)."""
    env = {completion.complete_var(): f"complete_{shell}"}
    if shell == "bash":  # COMP_WORDS is the words joined by spaces; COMP_CWORD the index of the current one
        words = line.split(" ")
        env.update(COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    else:
        env["_TYPER_COMPLETE_ARGS"] = line
    if shell == "fish":
        env["_TYPER_COMPLETE_FISH_ACTION"] = fish_action
    return env


def parse(shell: str, out: str) -> list:
    """The offered values from each shell's answer format (None for zsh's "complete files")."""
    if shell == "bash":
        return [w for w in out.split("\n") if w]
    if shell == "fish":
        return [w.split("\t")[0] for w in out.split("\n") if w]
    out = out.strip()
    if out == "_files":
        return None
    assert out.startswith("_arguments '*: :((") and out.endswith("))'"), out
    body = out[len("_arguments '*: :(("):-len("))'")]
    values = []
    for row in body.split("\n"):
        match = re.match(r'"((?:[^"]|"")*)"', row)
        assert match, row
        values.append(match.group(1).replace('""', '"').replace("\\\\:", ":"))
    return values


def complete_raw(shell: str, line: str):
    """In-process: what the app answers to TAB after ``line`` (None: zsh is told to complete files)."""
    result = CliRunner().invoke(app, [], env=protocol_env(shell, line), prog_name="geoloc")
    assert result.exit_code == 0, result.output
    return parse(shell, result.output)


def complete(shell: str, line: str) -> list:
    """The values offered after ``line`` (none: [])."""
    return complete_raw(shell, line) or []


def complete_installed(shell: str, line: str, fish_action: str = "get-args"):
    """The installed console script, as the shell runs it: (completed process, seconds)."""
    env = {**os.environ, **protocol_env(shell, line, fish_action)}
    start = time.perf_counter()
    proc = subprocess.run([str(BINDIR / "geoloc")], capture_output=True, text=True, timeout=60, env=env)
    return proc, time.perf_counter() - start


def empty_or_files(shell: str, values) -> bool:
    """No value offered, so the shell completes file names (bash -o default, zsh _files, fish is-args)."""
    return values is None if shell == "zsh" else values == []


# -- what is registered --------------------------------------------------------------------------------


def _model_cases():
    """(task, model, what) for every registered model and task with a CLI command."""
    cases = []
    for name in registry.names(include_hidden=True):
        spec = registry.get(name)
        for task in GENERIC_TASKS:
            if spec.supports(task):
                cases.append((task, name))
    return cases


MODEL_CASES = _model_cases()
MODELS = registry.names(include_hidden=True)


def _shells_in_turn(cases):
    """Each case paired with one shell, the shells taking turns. Every shell still meets every kind of
    command, and each shell's protocol has its own full tests; the full product cost 31 s of the suite."""
    return [(SHELLS[i % len(SHELLS)], *case) for i, case in enumerate(cases)]


def _command(task: str, model: str):
    return plugins.ModelGroup(name=task).command(model)


def _options(cmd) -> set:
    return {o for p in cmd.params for o in getattr(p, "opts", [])}


# -- in-process matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("task", GENERIC_TASKS)
def test_model_names_complete_per_task_with_prefix(shell, task):
    visible = registry.names(task)
    assert complete(shell, f"geoloc {task} ") == visible
    for name in visible:
        assert name in complete(shell, f"geoloc {task} {name[:2]}")
    assert "toy" not in complete(shell, f"geoloc {task} t")  # hidden models stay out of completion


@pytest.mark.parametrize("shell,task,model", _shells_in_turn(MODEL_CASES))
def test_each_model_command_completes_its_presets_flags_and_options(shell, task, model):
    spec = registry.get(model)
    cmd = _command(task, model)
    line = f"geoloc {task} {model}"
    if isinstance(cmd, typer.core.TyperGroup):  # the model's own sub-commands
        subs = sorted(n for n, c in cmd.commands.items() if not c.hidden)
        assert sorted(complete(shell, f"{line} ")) == subs
        for sub in subs:
            assert sub in complete(shell, f"{line} {sub[:1]}")
        return
    options = _options(cmd)
    if "--preset" in options:
        assert "--preset" in complete(shell, f"{line} --pre")
        assert complete(shell, f"{line} --preset ") == spec.presets
        for preset in spec.presets:
            offered = complete(shell, f"{line} --preset {preset[:2]}")
            assert preset in offered and all(p.startswith(preset[:2]) for p in offered), offered
    for flag_name, flag in plugins.task_flags(spec, task).items():
        assert f"--{flag_name}" in complete(shell, f"{line} --{flag_name[:2]}")
        for choice in flag.choices:
            offered = complete(shell, f"{line} --{flag_name} {choice[:1]}")
            assert choice in offered and all(c.startswith(choice[:1]) for c in offered), offered
        if flag.choices:
            assert complete(shell, f"{line} --{flag_name} ") == list(flag.choices)
    if "--device" in options:
        assert complete(shell, f"{line} --device c") == ["cpu"]
    if "--engine" in options:
        assert complete(shell, f"{line} --engine on") == ["onnxruntime"]
    if "--format" in options:
        assert complete(shell, f"{line} --format o") == ["onnx"]
    if "--mode" in options:
        assert complete(shell, f"{line} --mode py") == ["pynative"]
    for path_option in ("--data", "--checkpoint", "--config", "--out"):
        if path_option in options:  # files complete as files
            assert empty_or_files(shell, complete_raw(shell, f"{line} {path_option} ")), path_option


@pytest.mark.parametrize("shell", SHELLS)
def test_data_verbs_and_source_names_complete(shell):
    for kind in registry.DATA_KINDS:
        names = [c.name for c in registry.data_commands(kind)]
        assert complete(shell, f"geoloc data {kind} ") == names
        for name in names:
            assert name in complete(shell, f"geoloc data {kind} {name[:2]}")
    from geocli.data.catalog import load_catalog

    sources = load_catalog().names()
    for verb in ("download", "verify"):
        assert complete(shell, f"geoloc data {verb} ") == sources
        assert all(s.startswith("ox") for s in complete(shell, f"geoloc data {verb} ox"))
    scenes = load_catalog().get("cambridge").parts["names"]
    assert complete(shell, "geoloc data download cambridge --parts ") == scenes  # the source typed before
    offered = complete(shell, f"geoloc data verify cambridge data/cambridge --parts {scenes[0]},S")
    assert offered == [f"{scenes[0]},{n}" for n in scenes if n.startswith("S")]
    assert "convert-mindrecord" in complete(shell, "geoloc data con")
    assert "cambridge" in complete(shell, "geoloc data synth ca")


@pytest.mark.parametrize("shell", SHELLS)
def test_commands_and_global_options_complete(shell):
    assert complete(shell, "geoloc mod") == ["models"]
    assert complete(shell, "geoloc tr") == ["train"]
    assert "--debug" in complete(shell, "geoloc --de")
    assert complete(shell, "geoloc models --task re") == ["retrieve"]
    assert complete(shell, "geoloc demo ") == registry.names("demo")
    if len(registry.names("demo")) > 1:
        first = registry.names("demo")[0]
        assert complete(shell, f"geoloc demo {first} ") == registry.names("demo")[1:]


def test_model_sub_commands_complete(monkeypatch):
    """A model that brings its own sub-commands (ModelSpec.commands) completes them and their options."""
    registry.names()
    spec = registry.ModelSpec(name="zz_plugin", summary="Plug-in test model.", tasks=("retrieve",),
                              backend="x:Y", commands={"retrieve": "cli_plugin_fixture:retrieve_app"})
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    for shell in SHELLS:
        assert complete(shell, "geoloc retrieve zz_") == ["zz_plugin"]
        assert complete(shell, "geoloc retrieve zz_plugin ") == ["index", "query"]
        assert complete(shell, "geoloc retrieve zz_plugin q") == ["query"]
        assert "--top" in complete(shell, "geoloc retrieve zz_plugin query abc --to")
        assert complete(shell, "geoloc retrieve zz_plugin query abc --device a") == ["ascend"]
        assert empty_or_files(shell, complete_raw(shell, "geoloc retrieve zz_plugin index --features "))


# -- the installed command, as each shell runs it ------------------------------------------------------


needs_script = pytest.mark.skipif(not (BINDIR / "geoloc").exists(),
                                  reason="needs the geoloc console script next to this interpreter (pip install -e .)")


def _preset_line(model: str):
    """A partial --preset word for the model's first task taking presets (None if it has no presets)."""
    spec = registry.get(model)
    presets = spec.presets
    for task in ("train", "eval"):
        if spec.supports(task) and presets and not spec.commands.get(task):
            preset = presets[-1]
            return f"geoloc {task} {model} --preset {preset[:2]}", preset
    return None


@needs_script
@pytest.mark.parametrize("shell,model", _shells_in_turn([(m,) for m in MODELS]))
def test_installed_command_completes_presets_and_flags(shell, model):
    case = _preset_line(model)
    if case is None:
        pytest.skip(f"{model} has no command taking --preset")
    line, preset = case
    proc, _ = complete_installed(shell, line)
    assert proc.returncode == 0, proc.stderr
    assert preset in parse(shell, proc.stdout), proc.stdout
    spec = registry.get(model)
    for task in GENERIC_TASKS:
        flags = plugins.task_flags(spec, task) if spec.supports(task) and not spec.commands.get(task) else {}
        for name, flag in flags.items():
            if flag.choices:
                proc, _ = complete_installed(shell, f"geoloc {task} {model} --{name} {flag.choices[-1][:1]}")
                assert flag.choices[-1] in parse(shell, proc.stdout), (task, name, proc.stdout)
                break
        else:
            continue
        break


@needs_script
def test_installed_command_leaves_files_to_the_shell():
    line = "geoloc train posenet --data "
    bash, _ = complete_installed("bash", line)
    assert bash.returncode == 0 and bash.stdout.strip() == ""  # the script's `complete -o default` lists files
    zsh, _ = complete_installed("zsh", line)
    assert zsh.stdout.strip() == "_files"
    fish, _ = complete_installed("fish", line, fish_action="is-args")
    assert fish.returncode == 1  # fish's --condition fails, so its own file completion runs
    fish, _ = complete_installed("fish", "geoloc train posenet --preset ", fish_action="is-args")
    assert fish.returncode == 0


HEAVY = ("mindspore", "numpy", "torch", "onnxruntime", "faiss", "cv2", "h5py")
#: The generic path, plus every model's own sub-command app (its commands module must stay light).
ROUND_TRIPS = [("geoloc train posenet --device c", ["cpu"])] + [
    (f"geoloc {task} {name} ", None) for name in MODELS for task in registry.get(name).commands]


@needs_script
@pytest.mark.parametrize("line,expected", ROUND_TRIPS, ids=[line.strip() for line, _ in ROUND_TRIPS])
def test_completion_round_trip_imports_nothing_heavy(line, expected):
    """Importing MindSpore would cost seconds per TAB; -X importtime lists every module the round trip loads."""
    env = {**os.environ, **protocol_env("bash", line)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", str(BINDIR / "geoloc")], capture_output=True,
                          text=True, timeout=120, env=env)
    seconds = time.perf_counter() - start
    offered = proc.stdout.split()
    assert offered == expected if expected else offered, proc.stdout + proc.stderr[-2000:]
    modules = {row.split("|")[-1].strip() for row in proc.stderr.splitlines() if row.startswith("import time")}
    assert not {m for m in modules if m.split(".")[0] in HEAVY}, line
    print(f"{line!r}: {seconds:.3f} s with -X importtime, {len(modules)} modules")


def test_completed_values_are_the_checked_ones():
    from geocli import export
    from geocli.cli import options
    from geocli.runtime import context, engine

    assert options.DEVICES == tuple(context.DEVICES)
    assert set(options.FORMATS) == set(export.FORMATS)
    assert complete("bash", "geoloc eval posenet --engine ") == list(engine.ENGINES)


# -- the committed scripts in the real shells ---------------------------------------------------------

#: zsh: the committed script runs for real; _arguments/_files (which need an interactive completion
#: widget) are replaced by functions that print what zsh would offer, after zsh's own quote removal.
ZSH_PROBE = r"""
compdef() { : }
source %(script)s
_arguments() {
  local inner=${1#\*: :\(\(}; inner=${inner%%\)\)}
  local -a items; eval "items=( $inner )"
  local item; for item in $items; do print -r -- "${item%%%%:*}"; done
}
_files() { print -r -- "<files>" }
probe() { words=("${(@z)1}"); [[ $1 == *' ' ]] && words+=(''); CURRENT=${#words}; _geoloc_completion; print -- "<end>" }
"""


def real_shell(shell: str, lines: list) -> list:
    """Complete each line in the real shell with the committed script: a list of offered values per line
    ("<files>" where the shell falls back to file names)."""
    exe = shutil.which(shell)
    if exe is None or not (BINDIR / "geoloc").exists():
        pytest.skip(f"needs {shell} and the geoloc console script next to this interpreter")
    script = REPO / "completions" / completion.FILES[shell]
    quoted = [line.replace("'", "'\\''") for line in lines]
    if shell == "bash":
        body = [f"source {script}"]
        for line in lines:
            words = line.split(" ")
            body.append("COMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + f"); COMP_CWORD={len(words) - 1}; "
                        "_geoloc_completion geoloc; printf '%s\\n' \"${COMPREPLY[@]}\"; echo '<end>'")
        argv = [exe, "--norc", "-c", "\n".join(body)]
    elif shell == "zsh":
        body = ZSH_PROBE % {"script": script} + "\n".join(f"probe '{q}'" for q in quoted)
        argv = [exe, "-f", "-c", body]
    else:
        body = [f"source {script}"] + [f"complete -C '{q}'; echo '<end>'" for q in quoted]
        argv = [exe, "--no-config", "-c", "; ".join(body)]
    env = {**os.environ, "PATH": f"{BINDIR}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    answers = out.stdout.split("<end>\n")[:-1]
    assert len(answers) == len(lines), out.stdout
    return [[row.split("\t")[0] for row in answer.split("\n") if row] for answer in answers]


def _flag_lines():
    """One partial flag value per model that declares a flag with choices: (line, expected value)."""
    cases = []
    for model in MODELS:
        spec = registry.get(model)
        for task in GENERIC_TASKS:
            if not spec.supports(task) or spec.commands.get(task):
                continue
            flags = [(n, f) for n, f in plugins.task_flags(spec, task).items() if f.choices]
            if flags:
                name, flag = flags[0]
                cases.append((f"geoloc {task} {model} --{name} {flag.choices[-1][:1]}", flag.choices[-1]))
                break
    return cases


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_script_completes_in_the_real_shell(shell, tmp_path):
    (tmp_path / "scene-data").mkdir()
    flag_cases = _flag_lines()
    lines = ["geoloc tr", "geoloc train ", "geoloc train posenet --preset k",
             f"geoloc train posenet --data {tmp_path}/scene-d"] + [line for line, _ in flag_cases]
    answers = real_shell(shell, lines)
    assert "train" in answers[0]
    assert answers[1] == registry.names("train")
    assert answers[2] == [p for p in registry.list_presets("posenet") if p.startswith("k")]
    files = {"bash": [], "zsh": ["<files>"], "fish": [f"{tmp_path}/scene-data/"]}[shell]
    assert answers[3] == files  # bash: nothing, so its `complete -o default` lists the files
    for (line, expected), answer in zip(flag_cases, answers[4:]):
        assert expected in answer, (line, answer)


# -- the committed scripts -----------------------------------------------------------------------------


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


def test_cli_import_does_not_import_mindspore():
    code = "import geocli.cli.main, sys; print('mindspore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["models", "--all"], ["--show-completion", "bash"],
                                  ["train", "--help"], ["retrieve", "--help"], ["data", "synth", "--help"]])
def test_fast_paths_do_not_import_mindspore(args):
    code = ("import sys\nfrom geocli.cli.main import app\n"
            f"try:\n    app({args!r}, prog_name='geoloc')\nexcept SystemExit:\n    pass\n"
            "print('MS_IMPORTED', 'mindspore' in sys.modules)")
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert "MS_IMPORTED False" in out.stdout, out.stdout + out.stderr
