"""A Rich progress bar for long embedding runs (stderr, transient), or nothing for short ones."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def bar(label: str, total: int, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """``with bar("gallery", n) as advance: advance(k)``; silent when ``quiet`` or stderr is no terminal."""
    import sys

    if quiet or not sys.stderr.isatty():
        yield lambda k: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    with progress:
        task = progress.add_task(label, total=total)
        yield lambda k: progress.advance(task, k)
