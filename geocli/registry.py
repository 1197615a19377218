"""The model registry: model name -> backend, with capability tags.

A backend package (``geocli/models/<name>/__init__.py``) calls :func:`register` with a
:class:`ModelSpec`. Registration must not import MindSpore: the spec only names the module that holds
the backend class, which :func:`load_backend` imports when a command actually needs it. Presets are data
files, ``geocli/configs/<name>/<preset>.yaml``, discovered here rather than declared twice.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Dict, List, Optional, Tuple

from geocli.errors import UsageError

#: Every task a backend may support; a CLI group is named after each one.
TASKS = ("train", "eval", "export", "match", "retrieve", "demo")


@dataclass(frozen=True)
class Flag:
    """A shared command-line flag whose values a model understands, mapped onto one config key.

    ``geoloc train delf --stage attn`` is the override ``train.stage=attn`` when DELF declares
    ``flags={"stage": Flag("train.stage", ("tuning", "attn"), ("train",), "...")}``; the choices are
    validated before anything runs and offered by shell completion."""

    key: str
    choices: Tuple[str, ...]
    tasks: Tuple[str, ...]
    help: str = ""


@dataclass(frozen=True)
class DataCommand:
    """A ``geoloc data <kind> <name>`` command a backend brings (e.g. ``convert-mindrecord gldv2``).

    ``target`` is "module:function" of a Typer command function, imported only when the command runs
    or its help is shown."""

    kind: str
    name: str
    target: str
    summary: str


#: The ``geoloc data`` verbs a backend may add named commands to.
DATA_KINDS = ("convert-mindrecord", "synth", "npz-prep", "convert-weights")


@dataclass(frozen=True)
class ModelSpec:
    """What the CLI needs to know about a model without importing it."""

    name: str
    summary: str
    tasks: Tuple[str, ...]
    backend: str  # "package.module:ClassName"
    paper: str = ""
    hidden: bool = False  # internal models (tests, smoke checks) stay out of listings and `demo`
    default_preset: str = "default"
    extra: Dict[str, str] = field(default_factory=dict)
    #: flag name (without dashes) -> Flag, for the shared flags --stage, --setting, --dataset, --protocol, ...
    flags: Dict[str, Flag] = field(default_factory=dict)
    #: task -> "module:attr" of a typer.Typer app holding this model's own sub-commands of that task
    commands: Dict[str, str] = field(default_factory=dict)

    def supports(self, task: str) -> bool:
        return task in self.tasks

    @property
    def presets(self) -> List[str]:
        return list_presets(self.name)


_REGISTRY: Dict[str, ModelSpec] = {}
_DATA_COMMANDS: Dict[Tuple[str, str], DataCommand] = {}
_LOADED = False


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model; a declaration the CLI could not honour is refused here, naming the model."""
    unknown = set(spec.tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"model {spec.name!r} declares unknown tasks {sorted(unknown)}")
    for name, flag in spec.flags.items():
        if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
            raise ValueError(f"model {spec.name!r}: flag name {name!r} must be lower-case words joined by '-'")
        if not set(flag.tasks) <= set(spec.tasks):
            raise ValueError(f"model {spec.name!r}: flag --{name} names tasks it does not support: "
                             f"{sorted(set(flag.tasks) - set(spec.tasks))}")
    for task, target in spec.commands.items():
        if task not in spec.tasks or task == "demo" or ":" not in target:
            raise ValueError(f"model {spec.name!r}: commands[{task!r}] = {target!r} must be 'module:attr' for one "
                             f"of its tasks other than demo")
    _REGISTRY[spec.name] = spec
    return spec


def register_data_command(kind: str, name: str, target: str, summary: str) -> DataCommand:
    """Add ``geoloc data <kind> <name>``; called from a backend package's ``__init__`` (no heavy imports)."""
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown data command kind {kind!r}; known: {', '.join(DATA_KINDS)}")
    entry = DataCommand(kind, name, target, summary)
    _DATA_COMMANDS[(kind, name)] = entry
    return entry


def data_commands(kind: str) -> List[DataCommand]:
    """The registered ``geoloc data <kind> NAME`` commands, sorted by name."""
    _ensure_loaded()
    return [c for (k, _), c in sorted(_DATA_COMMANDS.items()) if k == kind]


def _ensure_loaded() -> None:
    """Import ``geocli.models`` once; its sub-packages register themselves (cheaply)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        importlib.import_module("geocli.models")


def names(task: Optional[str] = None, include_hidden: bool = False) -> List[str]:
    _ensure_loaded()
    return sorted(
        n
        for n, s in _REGISTRY.items()
        if (include_hidden or not s.hidden) and (task is None or s.supports(task))
    )


def find(name: str) -> Optional[ModelSpec]:
    """The spec registered under ``name`` (any case, hidden ones included), or None."""
    _ensure_loaded()
    return _REGISTRY.get(name.lower())


def _supporters(task: str) -> str:
    """The sentence naming the models of ``task``, or saying that none supports it yet (never an empty list)."""
    valid = names(task)
    return f"Models that support {task!r}: {', '.join(valid)}." if valid else f"No model supports {task!r} yet."


def get(name: str, task: Optional[str] = None) -> ModelSpec:
    """Look a model up by name; unknown names raise a usage error that lists the valid ones."""
    spec = find(name)
    if spec is None:
        close = difflib.get_close_matches(name.lower(), names(task), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        if task is None:
            listing = f"Valid models: {', '.join(names())}." if names() else "No model is registered."
        else:
            listing = _supporters(task).replace("Models that support", "Valid models for")
        raise UsageError(f"unknown model {name!r}.{hint} {listing}")
    if task is not None and not spec.supports(task):
        raise UsageError(f"model {spec.name!r} does not support {task!r}; it supports: {', '.join(spec.tasks)}. "
                         f"{_supporters(task)}")
    return spec


def load_backend(name: str, task: Optional[str] = None):
    """Import and instantiate the backend class of a model (this imports MindSpore)."""
    spec = get(name, task)
    module_name, _, class_name = spec.backend.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(spec)


def list_presets(model: str) -> List[str]:
    folder = resources.files("geocli") / "configs" / model
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def complete_model(incomplete: str, task: Optional[str] = None) -> List[str]:
    """Shell completion for model arguments: registered names (of ``task``) starting with what was typed."""
    return [n for n in names(task) if n.startswith(incomplete.lower())]
