"""The plug-in surface of the CLI: command groups whose children come from the registry.

``geoloc train|eval|export|match|retrieve`` are :class:`ModelGroup` s: each registered model that
supports the task is a child command, built on demand from the task's generic function (minus its
``model`` argument) plus the model's own declared flags (:class:`geocli.registry.Flag`), or, when the
model declares ``commands={task: "module:app"}``, the model's own Typer app of sub-commands.
``geoloc data convert-mindrecord|synth|npz-prep|convert-weights`` are :class:`DataKindGroup` s whose
children are :func:`geocli.registry.data_commands`.

Why a group per task rather than one command with a MODEL argument: the option list, the help and the
shell completion of ``geoloc train delf`` then belong to DELF (its presets, its ``--stage`` choices),
and a backend adds its own options and sub-commands without touching this package. Nothing here
imports a backend: a model's command is built from its :class:`~geocli.registry.ModelSpec`, and a
``module:attr`` target is imported only when that one command is resolved (run, completed or helped).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable, Dict, List, Optional, Tuple

import typer
from typer.core import TyperCommand, TyperGroup
from typing_extensions import Annotated

from geocli.cli._common import CONTEXT_SETTINGS, DescribedGroup
from geocli.errors import UsageError


def load_target(target: str, what: str):
    """Import ``"module:attr"`` (a backend's app or command function); a broken target is a bug report."""
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"{what}: cannot load {target!r} ({type(exc).__name__}: {exc})") from exc


def command_from_function(func: Callable, name: str, *, hidden: bool = False) -> TyperCommand:
    """A click command built by Typer from one annotated function (the same way ``app.command`` does)."""
    app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False,
                      context_settings=CONTEXT_SETTINGS)
    app.command(name, context_settings=CONTEXT_SETTINGS, no_args_is_help=_needs_args(func), hidden=hidden)(func)
    return typer.main.get_command(app)


def group_from_app(app: typer.Typer, name: str, *, help: str, hidden: bool = False) -> TyperGroup:
    """The click group of a backend's Typer app, named after the model (always a group, even with one command)."""
    group = typer.main.get_group(app)
    group.name = name
    group.short_help = help
    group.help = group.help or help
    group.hidden = hidden
    group.no_args_is_help = True
    return group


def _needs_args(func: Callable) -> bool:
    """``no_args_is_help`` only for commands that cannot run without arguments."""
    params = inspect.signature(func).parameters.values()
    return any(p.default is inspect.Parameter.empty for p in params)


class RegistryGroup(DescribedGroup):
    """A group whose children are computed on demand.

    :meth:`get_command` (listings, help, completion of the child's name) returns a cheap command that
    carries the child's one-line summary; :meth:`resolve_command` (running, helping or completing inside
    a child) builds the real one, which may import the child's module. Subclasses say which names exist
    and how a child is built."""

    #: Shown instead of an empty command list, e.g. "no model supports 'match' yet".
    def empty_message(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def names(self, include_hidden: bool = False) -> List[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def summary(self, name: str) -> Optional[Tuple[str, bool]]:  # pragma: no cover - overridden
        """(one-line help, hidden) of a child, or None when there is no such child."""
        raise NotImplementedError

    def build(self, name: str) -> typer.core.TyperCommand:  # pragma: no cover - overridden
        raise NotImplementedError

    def unknown(self, name: str) -> UsageError:  # pragma: no cover - overridden
        raise NotImplementedError

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._built: Dict[str, object] = {}
        self._base_help = self.help or ""

    # -- listing ---------------------------------------------------------------------------------
    def list_commands(self, ctx) -> List[str]:
        return self.names()

    def get_command(self, ctx, cmd_name: str):
        if cmd_name in self._built:
            return self._built[cmd_name]
        info = self.summary(cmd_name)
        if info is None:
            return None
        text, hidden = info
        return TyperCommand(cmd_name, help=text, short_help=text, hidden=hidden)

    def format_help(self, ctx, formatter) -> None:
        if not self.names():
            self.help = f"{self._base_help}\n\n{self.empty_message()}."
        return super().format_help(ctx, formatter)

    # -- resolving -------------------------------------------------------------------------------
    def command(self, name: str):
        """The real child command (built once per process), or a UsageError saying what exists."""
        if name not in self._built:
            if self.summary(name) is None:
                raise self.unknown(name)
            self._built[name] = self.build(name)
        return self._built[name]

    def resolve_command(self, ctx, args: List[str]):
        name = args[0]
        if name.startswith("-"):  # an option of the group itself (or a typo of one): the parser says which
            return super().resolve_command(ctx, args)
        try:
            cmd = self.command(name)
        except UsageError:
            if ctx.resilient_parsing:  # shell completion: offer the valid names instead of failing
                return None, None, args[1:]
            raise
        except RuntimeError:
            if ctx.resilient_parsing:
                return None, None, args[1:]
            raise
        return name, cmd, args[1:]


class ModelGroup(RegistryGroup):
    """``geoloc <task>``: one child per registered model supporting the task (the group's name)."""

    @property
    def task(self) -> str:
        return self.name

    def empty_message(self) -> str:
        return f"No model supports {self.task!r} yet"

    def names(self, include_hidden: bool = False) -> List[str]:
        from geocli import registry

        return registry.names(self.task, include_hidden=include_hidden)

    def summary(self, name: str):
        from geocli import registry

        spec = registry.find(name)
        if spec is None or not spec.supports(self.task):
            return None
        return spec.summary, spec.hidden

    def unknown(self, name: str) -> UsageError:
        from geocli import registry

        try:
            registry.get(name, self.task)
        except UsageError as exc:
            return exc
        return UsageError(f"model {name!r} cannot run {self.task!r}")  # pragma: no cover - summary() agreed

    def build(self, name: str):
        from geocli import registry
        from geocli.cli import tasks

        spec = registry.get(name, self.task)
        target = spec.commands.get(self.task)
        if target:
            app = load_target(target, f"{spec.name} {self.task} commands")
            return group_from_app(app, spec.name, help=spec.summary, hidden=spec.hidden)
        return model_command(self.task, spec, tasks.GENERIC[self.task])


class DataKindGroup(RegistryGroup):
    """``geoloc data <kind>``: one child per dataset that registered a command of this kind."""

    @property
    def kind(self) -> str:
        return self.name

    def _entries(self):
        from geocli import registry

        return {c.name: c for c in registry.data_commands(self.kind)}

    def empty_message(self) -> str:
        return f"No dataset supports {self.kind!r} yet"

    def names(self, include_hidden: bool = False) -> List[str]:
        return sorted(self._entries())

    def summary(self, name: str):
        entry = self._entries().get(name.lower())
        return None if entry is None else (entry.summary, False)

    def unknown(self, name: str) -> UsageError:
        names = self.names()
        if not names:
            return UsageError(f"{self.kind} {name!r}: no dataset supports {self.kind!r} yet")
        return UsageError(f"{self.kind} {name!r}: choose one of {', '.join(names)}")

    def command(self, name: str):
        return super().command(name.lower())

    def build(self, name: str):
        entry = self._entries()[name]
        func = load_target(entry.target, f"data {self.kind} {name}")
        cmd = command_from_function(func, name)
        cmd.short_help = entry.summary
        return cmd


# -- per-model commands of the generic tasks ----------------------------------------------------------


def flag_param_name(flag: str) -> str:
    return "flag_" + flag.replace("-", "_")


def _flag_completer(choices: Tuple[str, ...]):
    def complete(incomplete: str) -> List[str]:
        return [c for c in choices if c.startswith(incomplete)]

    return complete


def _preset_completer(model: str):
    def complete(incomplete: str) -> List[str]:
        from geocli.registry import list_presets

        return [p for p in list_presets(model) if p.startswith(incomplete)]

    return complete


def flag_overrides(spec, task: str, values: Dict[str, Optional[str]]) -> List[str]:
    """``--set`` overrides for the given flag values; a value outside the declared choices is a usage error."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        flag = spec.flags[name]
        if flag.choices and value not in flag.choices:
            raise UsageError(f"--{name} {value!r}: {spec.name} {task} takes one of {', '.join(flag.choices)}")
        out.append(f"{flag.key}={value}")
    return out


def task_flags(spec, task: str) -> Dict[str, object]:
    return {name: flag for name, flag in spec.flags.items() if task in flag.tasks}


def _option_names(annotation) -> List[str]:
    """The flags of an ``Annotated[..., typer.Option(...)]`` (in ``Annotated``, Typer keeps the first
    name in ``default``)."""
    names = []
    for meta in getattr(annotation, "__metadata__", ()):
        names += [d for d in [getattr(meta, "default", None), *(getattr(meta, "param_decls", None) or ())]
                  if isinstance(d, str) and d.startswith("-")]
    return names


def model_command(task: str, spec, generic: Callable) -> TyperCommand:
    """``geoloc <task> <model>``: ``generic(model, **options)`` with the model bound, its presets offered
    by ``--preset`` and its declared flags added as options that become ``--set`` overrides."""
    sig = inspect.signature(generic, eval_str=True)
    params = [p for name, p in sig.parameters.items() if name != "model"]
    own = {p.name for p in params}
    own_flags = {d for p in params for d in _option_names(p.annotation)} | set(CONTEXT_SETTINGS["help_option_names"])
    flags = task_flags(spec, task)
    presets = None
    for i, p in enumerate(params):
        if p.name == "preset":
            presets = ", ".join(spec.presets) or spec.default_preset
            params[i] = p.replace(default=spec.default_preset, annotation=Annotated[str, typer.Option(
                "--preset", "-p", help=f"Preset of {spec.name}: {presets}.",
                autocompletion=_preset_completer(spec.name))])
    for name, flag in flags.items():
        if f"--{name}" in own_flags or flag_param_name(name) in own:
            raise ValueError(f"model {spec.name!r} declares flag --{name}, which `geoloc {task}` already has")
        choices = "|".join(flag.choices)
        params.append(inspect.Parameter(
            flag_param_name(name), inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[Optional[str], typer.Option(
                f"--{name}", help=flag.help + (f" (sets {flag.key})" if flag.key else ""),
                metavar=f"[{choices}]" if choices else "TEXT", show_default=False,
                autocompletion=_flag_completer(tuple(flag.choices)), rich_help_panel=f"{spec.name} options")]))

    def callback(**kwargs):
        values = {name: kwargs.pop(flag_param_name(name)) for name in flags}
        extra = flag_overrides(spec, task, values)
        if extra:  # flags first, so an explicit --set still has the last word
            kwargs["set_"] = extra + list(kwargs.get("set_") or [])
        return generic(spec.name, **kwargs)

    callback.__signature__ = sig.replace(parameters=params)
    callback.__annotations__ = {p.name: p.annotation for p in params}
    callback.__name__ = f"{task}_{spec.name}"
    callback.__doc__ = _model_doc(generic, spec, task, flags)
    return command_from_function(callback, spec.name, hidden=spec.hidden)


def _model_doc(generic: Callable, spec, task: str, flags) -> str:
    """The generic docstring with the model's name, presets and flags filled into its examples."""
    presets = [p for p in spec.presets if p != spec.default_preset]
    text = inspect.getdoc(generic) or ""
    text = text.replace("MODEL", spec.name).replace("PRESET", presets[0] if presets else spec.default_preset)
    if flags:
        name, flag = next(iter(flags.items()))
        example = f"geoloc {task} {spec.name} --{name} {flag.choices[0] if flag.choices else 'VALUE'}"
        text += f"\n\n  {example}"
    return text
