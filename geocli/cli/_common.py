"""Shared pieces of every command group: the app factory, option aliases and the error map.

Every group is built by :func:`make_app`, so ``-h``, ``no_args_is_help`` and the error handling are the
same everywhere. The root group's :class:`GeolocGroup` turns a :class:`~geocli.errors.GeolocError`
into one line on stderr and its exit code (1, or 2 for usage errors), Ctrl-C into exit code 130, and
shows a traceback (without local variables) only under ``--debug``.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from geocli.errors import GeolocError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class State:
    """Process-wide CLI switches set by the root callback (``--debug``, ``-q``, ``-v``)."""

    debug = False
    verbosity = 0  # -1 quiet, 0 normal, 1+ verbose


def error_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def report_error(message: str) -> None:
    error_console().print(f"[bold red]error:[/] {message}", markup=True, emoji=False)


class DescribedGroup(TyperGroup):
    """A group whose sub-command names complete with their whole one-line summary (zsh and fish show it,
    shortened by geocli.completion.one_line) instead of Typer's 45-character cut without an ellipsis."""

    def shell_complete(self, ctx, incomplete: str):
        items = super().shell_complete(ctx, incomplete)
        for item in items:
            cmd = None if item.value.startswith("-") else self.get_command(ctx, item.value)
            if cmd is not None and (cmd.short_help or cmd.help):
                item.help = cmd.short_help or cmd.help
        return items


class GeolocGroup(DescribedGroup):
    """Root click group that maps domain errors to exit codes instead of tracebacks."""

    def _main_shell_completion(self, ctx_args, prog_name, complete_var=None) -> None:
        from geocli.completion import use_one_line_help

        use_one_line_help()
        return super()._main_shell_completion(ctx_args, prog_name, complete_var)

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except GeolocError as exc:
            if State.debug:
                traceback.print_exc()
            report_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_console().print("interrupted", style="yellow")
            raise typer.Exit(130) from None


def report_unexpected(exc: BaseException) -> int:
    """A bug, not a user error: one line (full traceback with --debug), exit code 1."""
    if State.debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    else:
        report_error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
    return 1


def make_app(name: str, help: str, *, root: bool = False, cls: Optional[type] = None, **kwargs) -> typer.Typer:
    """The one way every command group is created (``cls``: a registry-driven group of geocli.cli.plugins)."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        context_settings=CONTEXT_SETTINGS,
        pretty_exceptions_enable=False,
        pretty_exceptions_show_locals=False,
        add_completion=root,
        rich_markup_mode="rich",
        cls=cls or (GeolocGroup if root else DescribedGroup),
        **kwargs,
    )


def console(stderr: bool = False):
    """A Rich console that respects ``-q`` (quiet output still shows errors)."""
    from rich.console import Console

    return Console(stderr=stderr, quiet=State.verbosity < 0 and not stderr, highlight=False)


def typed_argument(ctx: typer.Context, name: str, index: int = 0) -> Optional[str]:
    """A positional argument already on the line, for a completer of a later option.

    While completing an option's value (``geoloc data download cambridge --parts K<TAB>``) the parser
    stops at the option that lacks its value before it assigns positional arguments, so
    ``ctx.params[name]`` is None; the words it left over are still in ``ctx.args``."""
    value = (ctx.params or {}).get(name)
    if value is None and len(ctx.args) > index:
        value = ctx.args[index]
    return value


def complete_demo_model(ctx: typer.Context, incomplete: str) -> List[str]:
    """Models with a demo, minus the ones already on the line (``geoloc demo delf <TAB>``)."""
    from geocli.registry import complete_model as _complete

    typed = set((ctx.params or {}).get("models") or [])
    return [n for n in _complete(incomplete, "demo") if n not in typed]


def resolve_config(model: str, preset: str, config: Optional[Path], sets: Optional[List[str]]):
    from geocli import config as cfgmod
    from geocli import registry

    spec = registry.get(model)
    return spec, cfgmod.resolve(spec.name, preset or spec.default_preset, config, sets or [])


def print_config_and_exit(cfg) -> None:
    from geocli import config as cfgmod

    sys.stdout.write(cfgmod.dump(cfg))
    raise typer.Exit(0)
