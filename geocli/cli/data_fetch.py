"""``geoloc data list/download/verify`` (the data engine): thin commands over geocli.data.

The library functions (``download_source``, ``verify_source``) return paths and reports; this module only
parses flags, draws the Rich table and the progress display, and turns a failed verification into exit 1.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from geocli.cli._common import State, console, typed_argument
from geocli.cli.options import OverwriteOpt


def _complete_source(incomplete: str) -> List[str]:
    from geocli.data.catalog import load_catalog

    try:
        return [n for n in load_catalog().names() if n.startswith(incomplete)]
    except Exception:  # noqa: BLE001 - completion must never crash the shell
        return []


def _complete_parts(ctx: typer.Context, incomplete: str) -> List[str]:
    """Named parts of the source already on the line (``--parts KingsCollege,Sh<TAB>``); ranges stay typed."""
    from geocli.data.catalog import load_catalog

    try:
        src = load_catalog().get(typed_argument(ctx, "name") or "")
    except Exception:  # noqa: BLE001 - unknown source or unreadable catalog: nothing to offer
        return []
    done, _, last = incomplete.rpartition(",")
    taken = set(done.split(",")) if done else set()
    prefix = f"{done}," if done else ""
    return [prefix + n for n in src.parts.get("names", []) if n.startswith(last) and n not in taken]


NameArg = Annotated[str, typer.Argument(help="Source name (`geoloc data list` shows them).",
                                        autocompletion=_complete_source, show_default=False)]
PartsOpt = Annotated[Optional[str], typer.Option(
    "--parts", help="Only these parts: numbers/ranges for gldv2 (0-499, 0-9,20) or names (KingsCollege,Street).",
    show_default=False, autocompletion=_complete_parts)]


class RichProgress:
    """One Rich display for all files: a total bar (bytes, rate, ETA) plus one bar per active file."""

    def __init__(self, stderr_console):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=stderr_console, transient=False)
        self.total = self.bar.add_task("[bold]total", total=None)
        self.files = {}
        self.lock = threading.Lock()

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def _sync(self) -> None:
        known = [t for t, _ in self.files.values()]
        self.bar.update(self.total, completed=sum(c for _, c in self.files.values()),
                        total=sum(t or 0 for t in known) if any(known) else None)

    def add(self, name: str):
        with self.lock:
            task = self.bar.add_task(name, total=None)
            self.files[task] = (None, 0)
        return task

    def set_total(self, task, total, completed):
        with self.lock:
            self.files[task] = (total, completed)
            self.bar.update(task, total=total, completed=completed)
            self._sync()

    def advance(self, task, nbytes):
        with self.lock:
            total, done = self.files[task]
            self.files[task] = (total, done + nbytes)
            self.bar.update(task, advance=nbytes)
            self._sync()

    def finish(self, task):
        with self.lock:
            self.bar.update(task, visible=False)


def _print_steps(out, src) -> None:
    out.print(f"[bold]{src.name}[/] needs a manual step ({src.homepage}):")
    for i, step in enumerate(src.steps, 1):
        out.print(f"  {i}. {step}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the commands of this module to the ``data`` group."""

    @app.command("list")
    def list_sources() -> None:
        """Every dataset and weight file: size, checksums, licence, automatic or manual (with the steps).

        Example: geoloc data list
        """
        from rich.table import Table

        from geocli.data.catalog import load_catalog

        cat = load_catalog()
        table = Table(title="geoloc data sources", show_lines=True)
        for col, ratio in (("source", 3), ("size", 2), ("access", 1), ("checksums", 1), ("licence", 3)):
            table.add_column(col, overflow="fold", ratio=ratio)
        for src in cat.sources.values():
            sizes = [f.get("size") for f in src.files if f.get("size")]
            size = src.size or (f"{sum(sizes):,} bytes" if sizes else "not published")
            access = "[yellow]manual[/]" if src.manual else "automatic"
            table.add_row(f"[bold]{src.name}[/]\n[dim]{src.title}[/]", size, access, src.checksum_summary(),
                          src.licence)
        out = console()
        out.print(table)
        for src in cat.sources.values():
            if src.checksum_note:
                out.print(f"[bold]{src.name}[/] checksums: {src.checksum_note}", highlight=False)
        for src in cat.sources.values():
            if src.manual:
                _print_steps(out, src)

    @app.command("download")
    def download(
        name: NameArg,
        dest: Annotated[Optional[Path], typer.Option(
            "--dest", help="Target folder (default data/NAME; data/ for cambridge, weights/ for weights).",
            show_default=False)] = None,
        parts: PartsOpt = None,
        jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Files downloaded in parallel.")] = 4,
        no_extract: Annotated[bool, typer.Option("--no-extract", help="Download and verify only.")] = False,
        mirror: Annotated[Optional[str], typer.Option("--mirror", metavar="URL",
                                                      help="Fetch from this base URL instead (URL paths are kept).",
                                                      show_default=False)] = None,
        delete_archives: Annotated[bool, typer.Option("--delete-archives",
                                                      help="Delete each archive after it is unpacked.")] = False,
        overwrite: OverwriteOpt = False,
    ) -> None:
        """Download, verify (checksum, size) and safely unpack a source; re-runs resume and skip finished work.

        Examples: geoloc data download oxford5k | geoloc data download gldv2 --parts 0-9 --jobs 8 --dest /big/gldv2
        """
        from geocli.data.catalog import load_catalog
        from geocli.data.download import Fetcher, default_dest, download_source
        from geocli.data.verify import verify_source
        from geocli.errors import UsageError

        if mirror and not mirror.startswith(("http://", "https://")):
            raise UsageError(f"--mirror {mirror!r}: give an http:// or https:// base URL")
        cat = load_catalog()
        src = cat.get(name)
        target = dest if dest is not None else default_dest(src)
        if src.manual:
            _print_steps(console(stderr=True), src)
        quiet = State.verbosity < 0
        progress = None if quiet or src.manual else RichProgress(console(stderr=True))
        with progress or nullcontext():
            out = download_source(src.name, target, parts=parts, jobs=jobs, extract=not no_extract, mirror=mirror,
                                  delete_archives=delete_archives, overwrite=overwrite, catalog=cat,
                                  fetcher=Fetcher(progress=progress))
        if (src.manual or src.verify) and not no_extract:
            _show_report(verify_source(src.name, out, parts=parts, catalog=cat))
        console().print(f"{src.name}: ready in {out}", soft_wrap=True)

    @app.command("verify")
    def verify(
        name: NameArg,
        path: Annotated[Path, typer.Argument(help="The dataset folder (the --dest of download).", show_default=False)],
        parts: PartsOpt = None,
    ) -> None:
        """Check a folder against the expected layout and counts; exit 1 when anything is missing or corrupt.

        Example: geoloc data verify cambridge data/cambridge --parts KingsCollege
        """
        from geocli.data.verify import verify_source

        _show_report(verify_source(name, path, parts=parts))
        console().print(f"{name}: {path} is complete", soft_wrap=True)


def _show_report(report) -> None:
    """Print the checks as a table; raise DataError (exit 1) naming the problems when any check failed."""
    from rich.table import Table

    from geocli.errors import DataError

    style = {"ok": "green", "missing": "red", "corrupt": "red", "mismatch": "yellow"}
    table = Table(title=f"{report.source}: {report.root}")
    for col in ("check", "status", "detail"):
        table.add_column(col, overflow="fold")
    for c in report.checks:
        table.add_row(c.rule, f"[{style[c.status]}]{c.status}[/]", c.detail)
    console(stderr=not report.ok).print(table)
    if not report.ok:
        raise DataError(f"{report.root} is incomplete for {report.source}: {len(report.problems)} of "
                        f"{len(report.checks)} checks failed (table above); download again or follow the steps "
                        f"in `geoloc data list`")
