"""``geoloc demo [MODEL]``: the main job on built-in demo data."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from geocli.cli._common import CONTEXT_SETTINGS, complete_demo_model, console
from geocli.cli.options import ConvOpt, DeviceOpt, OutputOpt
from geocli.errors import GeolocError


def demo(
    models: Annotated[Optional[List[str]], typer.Argument(
        help="Models to run (default: all).", autocompletion=complete_demo_model, show_default=False)] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where demo data is generated and "
                        "cached (default: ~/.cache/geoloc/demo).", show_default=False)] = None,
    out: OutputOpt = None,
    device: DeviceOpt = None,
    conv: ConvOpt = None,
) -> None:
    """Generate synthetic data, train briefly, evaluate: every model (or the ones named), one table.

    Examples:

      geoloc demo

      geoloc demo posenet --data-dir /tmp/geoloc-demo

      geoloc demo vigor --conv blocked
    """
    from rich.table import Table

    from geocli.cli.tasks import choose_conv
    from geocli.demo import run_demos

    choose_conv(conv, device)
    con = console()
    outcomes = run_demos(models, data_dir, out, device,
                         on_start=lambda name: con.rule(f"demo: {name}"))
    table = Table(title="geoloc demo")
    for col in ("model", "status", "time", "what it measured"):
        table.add_column(col)
    for o in outcomes:
        figures = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in o.figures.items())
        style = {"ok": "green", "failed": "red"}.get(o.status, "yellow")
        table.add_row(o.model, f"[{style}]{o.status}[/]", f"{o.seconds:.0f} s" if o.seconds else "-",
                      figures or o.message)
    con.print(table)
    if any(o.status == "failed" for o in outcomes):
        raise GeolocError("a demo failed (see the table above)")


def register(app: typer.Typer) -> None:
    app.command("demo", context_settings=CONTEXT_SETTINGS)(demo)
