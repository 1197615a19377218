"""The root ``geoloc`` app: global flags, the command groups, ``env``, ``models`` and ``demo``."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from geocli import __version__
from geocli.cli._common import State, make_app, report_unexpected

app = make_app(
    "geoloc",
    "Geo-localization and image retrieval on MindSpore: VIGOR, DELF, PoseNet, SDNet, Centroids-ReID.\n\n"
    "Examples:\n\n"
    "  geoloc demo                       # every model on built-in synthetic data\n\n"
    "  geoloc data download oxford5k     # fetch, verify and extract a dataset\n\n"
    "  geoloc train posenet --data data/KingsCollege --preset kingscollege\n\n"
    "  geoloc eval posenet --data data/KingsCollege --checkpoint runs/.../last.ckpt",
    root=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"geoloc {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[Optional[bool], typer.Option("--version", "-V", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print results and errors.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: more).")] = 0,
) -> None:
    State.debug = debug
    State.verbosity = -1 if quiet else verbose


def _register_groups() -> None:
    from geocli.cli import data, demo, env, tasks

    app.add_typer(data.app, name="data")
    tasks.register(app)
    env.register(app)
    demo.register(app)


_register_groups()


def run() -> None:
    """Console-script entry point: usage and domain errors are handled inside the app; anything else
    is a bug and still gets one line (and exit code 1) instead of a raw traceback."""
    try:
        app(prog_name="geoloc")
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - last-resort handler of the process
        if isinstance(exc, KeyboardInterrupt):
            raise SystemExit(130) from None
        raise SystemExit(report_unexpected(exc)) from None
