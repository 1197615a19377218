"""``geoloc data convert-mindrecord|synth|npz-prep|convert-weights NAME``: registry-driven data commands.

Each verb is a group whose children are the commands backends register with
:func:`geocli.registry.register_data_command` (``"module:function"`` of a Typer command function, imported
only when that command runs or shows its help). This module also holds the pieces such commands share:
a Rich progress factory and the MindRecord conversion table.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import typer

from geocli.cli._common import console, make_app

#: verb -> help of its group (its commands are the datasets that registered one).
KIND_HELP = {
    "convert-mindrecord": "Convert a dataset to MindRecord files for training; each dataset has its own options "
                          "(geoloc data convert-mindrecord NAME --help).\n\nExample:\n\n"
                          "  geoloc data convert-mindrecord cambridge --scene data/KingsCollege",
    "synth": "Write a small synthetic dataset in a real dataset's exact layout (demos and tests).\n\nExample:\n\n"
             "  geoloc data synth cambridge --out data/SyntheticPlaza",
    "npz-prep": "Pack a dataset into memory-mappable .npz/.npy arrays for fast training input.\n\nExample:\n\n"
                "  geoloc data npz-prep NAME --help",
    "convert-weights": "Convert published weights (PyTorch, TensorFlow) to MindSpore checkpoints.\n\nExample:\n\n"
                       "  geoloc data convert-weights NAME --help",
}


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A Rich progress bar per task on stderr: ``factory(label, total)`` returns ``advance(k)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console(stderr=True), transient=False)

    def factory(label: str, total: int) -> Callable[[int], None]:
        task = bar.add_task(label, total=total)
        return lambda k: bar.advance(task, k)

    with bar:
        yield factory


def print_conversion(report) -> None:
    """The result of a MindRecord conversion (``outputs``, ``rows``, ``up_to_date``, ``skipped_rows``)."""
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


def register(app: typer.Typer) -> None:
    """Add one registry-driven group per data verb to the ``data`` group."""
    from geocli.cli.plugins import DataKindGroup
    from geocli.registry import DATA_KINDS

    for kind in DATA_KINDS:
        app.add_typer(make_app(kind, KIND_HELP[kind], cls=DataKindGroup), name=kind)
