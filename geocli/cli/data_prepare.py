"""``geoloc data convert-mindrecord/synth DATASET``: turn datasets into training formats, or make demo data.

Both commands dispatch on a DATASET argument through a small table (name -> "module:function" and a
one-line description), so adding a dataset is one entry plus its library function; the library
modules are imported only when a command runs (no MindSpore for ``--help``).
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import typer
from typing_extensions import Annotated

from geocli.cli._common import CONTEXT_SETTINGS, console
from geocli.cli.options import OverwriteOpt
from geocli.errors import UsageError


@dataclass(frozen=True)
class Entry:
    target: str  # "module:function"
    summary: str
    options: Tuple[str, ...] = field(default=())  # optional flags this dataset understands

    def load(self) -> Callable:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


#: convert-mindrecord: function(source, out, *, overwrite, skip_bad, progress) -> report
CONVERTERS: Dict[str, Entry] = {
    "cambridge": Entry("geocli.data.cambridge_mindrecord:convert",
                       "Cambridge Landmarks scene (dataset_train.txt, dataset_test.txt, seqN/frameNNNNN.png) "
                       "-> train/test.mindrecord with image bytes + float32[7] pose"),
}

#: synth: function(out, *, overwrite, progress, **options) -> summary dict
SYNTHESIZERS: Dict[str, Entry] = {
    "cambridge": Entry("geocli.data.synth.cambridge:generate",
                       "rendered plaza scene in the Cambridge Landmarks layout (PoseNet demo data)",
                       ("frames", "width", "height", "seed")),
}


def _lookup(table: Dict[str, Entry], name: str, what: str) -> Entry:
    entry = table.get(name.lower())
    if entry is None:
        raise UsageError(f"{what} {name!r}: choose one of {', '.join(sorted(table))}")
    return entry


def _complete(table: Dict[str, Entry]):
    return lambda incomplete: [n for n in sorted(table) if n.startswith(incomplete.lower())]


@contextmanager
def _progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A Rich progress bar per task: ``factory(label, total)`` returns ``advance(k)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console(stderr=True), transient=False)

    def factory(label: str, total: int) -> Callable[[int], None]:
        task = bar.add_task(label, total=total)
        return lambda k: bar.advance(task, k)

    with bar:
        yield factory


def convert_mindrecord(
    dataset: Annotated[str, typer.Argument(help=f"Dataset format: {', '.join(sorted(CONVERTERS))}.",
                                           autocompletion=_complete(CONVERTERS), show_default=False)],
    scene: Annotated[Path, typer.Option("--scene", "--source", help="Dataset folder to convert (for cambridge: "
                                        "one scene, e.g. data/KingsCollege).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: <scene>/mindrecord).",
                                                show_default=False)] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip malformed rows and missing or unreadable "
                                           "images, listing each, instead of stopping at the first.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert a dataset to MindRecord files for training; finished files are skipped on re-runs.

    Examples:

      geoloc data convert-mindrecord cambridge --scene data/KingsCollege

      geoloc data convert-mindrecord cambridge --scene data/Street --skip-bad --out /fast/street-mr
    """
    convert = _lookup(CONVERTERS, dataset, "DATASET").load()
    with _progress() as progress:
        report = convert(scene, out, overwrite=overwrite, skip_bad=skip_bad, progress=progress)
    _print_conversion(report)


def _print_conversion(report) -> None:
    from rich.table import Table

    con = console()
    for problem in report.skipped_rows:
        con.print(f"[yellow]skipped[/] {problem}", markup=True, highlight=False)
    table = Table(title="MindRecord conversion")
    for column in ("split", "rows", "file", "status"):
        table.add_column(column)
    for split, path in report.outputs.items():
        done = split in report.up_to_date
        rows = "" if done else str(report.rows.get(split, ""))
        table.add_row(split, rows, str(path), "up to date (--overwrite redoes it)" if done else "written")
    con.print(table)


def synth(
    dataset: Annotated[str, typer.Argument(help=f"Dataset layout: {', '.join(sorted(SYNTHESIZERS))}.",
                                           autocompletion=_complete(SYNTHESIZERS), show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the dataset to.", show_default=False)],
    frames: Annotated[Optional[int], typer.Option("--frames", help="Frames per sequence (cambridge; default 120).",
                                                  show_default=False, min=2)] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Image width (cambridge; default 160).",
                                                 show_default=False, min=16)] = None,
    height: Annotated[Optional[int], typer.Option("--height", help="Image height (cambridge; default 90).",
                                                  show_default=False, min=16)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Scene seed (default 0).", show_default=False)] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a small synthetic dataset in a real dataset's exact layout (for demos and tests).

    Examples:

      geoloc data synth cambridge --out data/SyntheticPlaza

      geoloc data synth cambridge --out /tmp/plaza --frames 40 --width 96 --height 54
    """
    entry = _lookup(SYNTHESIZERS, dataset, "DATASET")
    given = {k: v for k, v in (("frames", frames), ("width", width), ("height", height), ("seed", seed))
             if v is not None}
    stray = sorted(set(given) - set(entry.options))
    if stray:
        raise UsageError(f"--{stray[0]} does not apply to {dataset} (it takes: "
                         f"{', '.join('--' + o for o in entry.options) or 'no options'})")
    with _progress() as progress:
        summary = entry.load()(out, overwrite=overwrite, progress=progress, **given)
    con = console()
    state = "already there (--overwrite renders it again)" if summary.get("skipped") else "written"
    counts = ", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool))
    con.print(f"{dataset}: {summary['path']} {state}; frames: {counts}")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to the ``data`` group."""
    app.command("convert-mindrecord", context_settings=CONTEXT_SETTINGS, no_args_is_help=True)(convert_mindrecord)
    app.command("synth", context_settings=CONTEXT_SETTINGS, no_args_is_help=True)(synth)
