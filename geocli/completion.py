"""Shell completion scripts for bash, zsh and fish, kept in ``completions/`` and generated from the app.

Regenerate after upgrading Typer or renaming the program: ``python -m geocli.completion --write``
(``--check`` only compares; ``python -m geocli.completion bash`` prints one script).

**What the scripts do, and why this shape.** Each script is Typer's completion protocol for the program
name ``geoloc``: on TAB the shell runs ``geoloc`` with ``_GEOLOC_COMPLETE=complete_<shell>`` and the
words typed so far, and the app answers from its live command tree. Compared with a static script
produced by walking ``typer.main.get_command(app)`` this gives the better result:

* it can never fall behind the installed version: a new command, option or model needs no regeneration
  (the committed files change only when Typer's protocol or the program name does, which the test in
  ``tests/test_completions.py`` catches);
* values come from the code that checks them: each task's models come from :func:`geocli.registry.names`
  (hidden models left out), ``--preset`` offers the presets of the model on the line (the model is the
  command, see :mod:`geocli.cli.plugins`), a model's flags offer their declared choices, and commands,
  options and their help are the ones ``--help`` shows; paths are left to the shell's file completion;
* zsh and fish show one short line per value (:func:`use_one_line_help`): Typer renders descriptions
  through Rich at the terminal width, and a wrapped description broke the entry in both shells;
* it is fast enough: a TAB imports neither MindSpore nor NumPy (``tests/test_completions.py`` checks
  every round trip, including each model's own sub-commands). A static script would answer in
  milliseconds, but would still have to call ``geoloc`` for model names and presets, and would go stale
  with every option added.

They are the scripts ``geoloc --show-completion`` prints and ``geoloc --install-completion`` installs
(which edits your shell's rc file); the committed copies are for packagers and for installing by hand:

* bash: ``cp completions/geoloc.bash ~/.local/share/bash-completion/completions/geoloc``
  (or ``source`` it from ``~/.bashrc``)
* zsh: copy ``completions/_geoloc`` into a folder on ``$fpath`` before ``compinit`` runs
* fish: ``cp completions/geoloc.fish ~/.config/fish/completions/``
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

PROG_NAME = "geoloc"
#: Shell -> file name in ``completions/`` (the names each shell's completion loader looks for).
FILES: Dict[str, str] = {"bash": "geoloc.bash", "zsh": "_geoloc", "fish": "geoloc.fish"}
#: ``completions/`` of a source checkout (an installed wheel has none: pass ``--dir``).
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "completions"
REGENERATE = "python -m geocli.completion --write"


#: zsh and fish show a description beside each value; longer ones are cut at the first sentence or here.
HELP_WIDTH = 56


def one_line(text: str) -> str:
    """A value's description for a completion menu: one line (Typer renders it through Rich at the
    terminal width, and a wrapped line would end the entry early in fish and split it in zsh)."""
    text = " ".join((text or "").split())
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
    return first if len(first) <= HELP_WIDTH else first[: HELP_WIDTH - 3].rstrip(" ,;:(") + "..."


def use_one_line_help() -> None:
    """Make Typer's zsh and fish answers describe each value in one short line.

    Typer registers its completion classes each time the app is built; this registers subclasses that
    shorten each item's help first, and is called just before a completion request is answered. It uses
    Typer's (version-pinned) internal classes; if they move, completion still works with Typer's help."""
    try:
        from typer._click.shell_completion import add_completion_class
        from typer._completion_classes import FishComplete, ZshComplete
    except ImportError:  # pragma: no cover - a future Typer
        return
    for base in (ZshComplete, FishComplete):
        cls = type(f"OneLine{base.__name__}", (base,), {"format_completion": _short_format(base)})
        add_completion_class(cls, base.name)


def _short_format(base):
    def format_completion(self, item):
        if item.help:
            item.help = one_line(item.help)
        return base.format_completion(self, item)

    return format_completion


def complete_var(prog_name: str = PROG_NAME) -> str:
    """The environment variable that switches the app into completion mode (Typer's naming rule)."""
    return "_{}_COMPLETE".format(prog_name.replace("-", "_").upper())


def script(shell: str, prog_name: str = PROG_NAME) -> str:
    """The completion script for ``shell``: Typer's own, behind a header that says how to install it."""
    from typer.completion import get_completion_script

    if shell not in FILES:
        raise ValueError(f"unsupported shell {shell!r}: choose {', '.join(FILES)}")
    body = get_completion_script(prog_name=prog_name, complete_var=complete_var(prog_name), shell=shell)
    header = (f"# {shell} completion for {prog_name}: on TAB the shell asks `{prog_name}` itself, so commands,\n"
              f"# options, model names and presets always match the installed version.\n"
              f"# Generated by `{REGENERATE}`; do not edit. Install: see geocli/completion.py.\n")
    first, _, rest = body.partition("\n")
    if first.startswith("#compdef"):  # zsh autoloads only files whose first line is #compdef
        return f"{first}\n{header}{rest.lstrip(chr(10))}\n"
    return f"{header}{body}\n"


def stale(directory: Path = DEFAULT_DIR) -> List[str]:
    """Files in ``directory`` that are missing or differ from what :func:`script` generates now."""
    out = []
    for shell, name in FILES.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != script(shell):
            out.append(str(path))
    return out


def write(directory: Path = DEFAULT_DIR) -> List[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shell, name in FILES.items():
        path = directory / name
        path.write_text(script(shell), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geocli.completion",
                                     description="Generate geoloc's shell completion scripts.")
    parser.add_argument("shell", nargs="?", choices=sorted(FILES), help="print this shell's script")
    parser.add_argument("--write", action="store_true", help="(re)write every script into --dir")
    parser.add_argument("--check", action="store_true", help="exit 1 if a script in --dir is stale")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"default: {DEFAULT_DIR}")
    args = parser.parse_args(argv)
    if args.shell:
        sys.stdout.write(script(args.shell))
        return 0
    if args.write:
        for path in write(args.dir):
            print(f"wrote {path}")
        return 0
    if args.check:
        outdated = stale(args.dir)
        for path in outdated:
            print(f"stale: {path} (run `{REGENERATE}`)", file=sys.stderr)
        return 1 if outdated else 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
