"""``geoloc env`` (versions and device targets, for bug reports) and ``geoloc models`` (the registry).

``models`` never imports MindSpore; ``env`` imports it only in a child process (see
:mod:`geocli.envinfo`), so both stay usable when MindSpore itself is what is broken.
"""

from __future__ import annotations

import json
from typing import Optional

import typer
from typing_extensions import Annotated

from geocli.cli._common import CONTEXT_SETTINGS, console
from geocli.errors import UsageError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _complete_task(incomplete: str):
    from geocli.registry import TASKS

    return [t for t in TASKS if t.startswith(incomplete)]


def env(json_: JsonOpt = False) -> None:
    """Show Python, platform, geoloc, MindSpore and library versions, and which device targets work here.

    Attach its output to bug reports. A missing target says why (no device, no driver, no CANN, ...).

    Examples:

      geoloc env

      geoloc env --json > env.json
    """
    from geocli import envinfo

    info = envinfo.collect()
    if json_:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.table import Table

    table = Table(title="geoloc environment", show_header=False, title_justify="left")
    table.add_column("item", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    section = None
    for group, item, value in envinfo.rows(info):
        if section is not None and group != section:
            table.add_section()
        section = group
        style = "red" if str(value).startswith(("not available", "not usable", "FAILED")) else None
        table.add_row(item, str(value), style=style)
    console().print(table)


def models(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include hidden models (smoke-test models).")] = False,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Only models that support this task "
                                                "(train, eval, export, match, retrieve, demo).",
                                                show_default=False, autocompletion=_complete_task)] = None,
    json_: JsonOpt = False,
) -> None:
    """List the registered models with the tasks they support and their presets.

    Examples:

      geoloc models

      geoloc models --task retrieve --json
    """
    from geocli import registry

    if task is not None and task not in registry.TASKS:
        raise UsageError(f"--task {task!r}: choose one of {', '.join(registry.TASKS)}")
    specs = [registry.get(name) for name in registry.names(task, include_hidden=all_)]
    rows = [{"name": s.name, "summary": s.summary, "tasks": list(s.tasks), "presets": s.presets,
             "default_preset": s.default_preset, "paper": s.paper, "hidden": s.hidden} for s in specs]
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    con = console()
    if not rows:
        con.print("no models registered" + (f" for task {task!r}" if task else "")
                  + ("" if all_ else " (--all also lists hidden ones)"))
        return
    from rich.table import Table

    table = Table(title="registered models", title_justify="left")
    table.add_column("model", style="bold", no_wrap=True)
    table.add_column("tasks")
    table.add_column("presets (* default)")
    table.add_column("summary", overflow="fold")
    for row in rows:
        presets = ", ".join(p + ("*" if p == row["default_preset"] else "") for p in row["presets"]) or "-"
        name = row["name"] + (" (hidden)" if row["hidden"] else "")
        table.add_row(name, ", ".join(row["tasks"]), presets, row["summary"])
    con.print(table)


def register(app: typer.Typer) -> None:
    app.command("env", context_settings=CONTEXT_SETTINGS)(env)
    app.command("models", context_settings=CONTEXT_SETTINGS)(models)
