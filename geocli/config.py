"""Presets as data: load a model's preset, layer a ``--config`` file and ``--set`` overrides on top.

Every key a user may set exists in the model's ``default.yaml``; anything else is rejected with the
closest valid keys, because a silently ignored typo (``--set train.lr=...`` vs ``optim.lr``) wastes a
whole training run. Overrides are typed by the default value they replace: ``--set train.steps=1e3``
is refused for an integer key instead of becoming the string ``"1e3"``.
"""

from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import yaml

from geocli.errors import ConfigError
from geocli.fileio import atomic_write_text

Config = Dict[str, Any]
BASE_KEY = "_base_"


def _read_yaml(text: str, where: str) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def _preset_text(model: str, preset: str) -> Optional[str]:
    path = resources.files("geocli") / "configs" / model / f"{preset}.yaml"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def flat_keys(cfg: Config, prefix: str = "") -> List[str]:
    """All dotted leaf keys of a nested mapping, e.g. ``["optim.lr", "train.steps"]``."""
    keys: List[str] = []
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys.extend(flat_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _unknown_key(key: str, valid: Iterable[str], where: str) -> ConfigError:
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if not close:  # fall back to keys sharing the last component
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in valid if k.rsplit(".", 1)[-1] == leaf][:3]
    hint = f"; closest valid keys: {', '.join(close)}" if close else ""
    return ConfigError(f"{where}: unknown config key {key!r}{hint}")


def _coerce(key: str, new: Any, old: Any, where: str) -> Any:
    """Give ``new`` the type of the default ``old`` it replaces, or explain why it cannot."""
    if old is None or new is None:
        return new
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
    elif isinstance(old, int):
        if isinstance(new, int) and not isinstance(new, bool):
            return new
        if isinstance(new, float) and new.is_integer():
            return int(new)
    elif isinstance(old, float):
        if isinstance(new, (int, float)) and not isinstance(new, bool):
            return float(new)
    elif isinstance(old, str):
        return new if isinstance(new, str) else str(new)
    elif isinstance(old, list):
        if isinstance(new, list):
            return new
    elif isinstance(old, dict):
        if isinstance(new, dict):
            return new
    raise ConfigError(
        f"{where}: {key} expects {type(old).__name__} (default {old!r}), got {new!r}"
    )


def merge(base: Config, update: Config, where: str, prefix: str = "") -> Config:
    """Recursively merge ``update`` into a copy of ``base``; every key must already exist."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in out:
            raise _unknown_key(dotted, flat_keys(base, prefix), where)
        if isinstance(out[key], dict) and out[key] and isinstance(value, dict):
            out[key] = merge(out[key], value, where, dotted + ".")
        else:
            out[key] = _coerce(dotted, value, out[key], where)
    return out


def with_defaults(cfg: Config, defaults: Config) -> Config:
    """A copy of ``cfg`` with every key it lacks taken from ``defaults`` (recursively); its own values win.

    A checkpoint stores the config it was trained with, which lacks the keys added to the model since
    (e.g. DELF's ``export`` section). Without them ``--set export.size=...`` would be refused as unknown.
    Filled from the model's ``default.yaml``, whose values for a new key keep the earlier behaviour, as
    the backends' own fallbacks (``cfg["model"].get("width", 1.0)``) do."""
    out = copy.deepcopy(cfg)
    for key, value in defaults.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = with_defaults(out[key], value)
    return out


def available_presets(model: str) -> List[str]:
    from geocli.registry import list_presets

    return list_presets(model)


def load_preset(model: str, preset: str = "default") -> Config:
    """The model's ``default.yaml`` with the named preset merged over it (presets may chain via _base_)."""
    default_text = _preset_text(model, "default")
    if default_text is None:
        raise ConfigError(f"model {model!r} ships no default preset (geocli/configs/{model}/default.yaml)")
    defaults = _read_yaml(default_text, f"preset {model}/default")
    if preset == "default":
        return defaults
    chain: List[Config] = []
    name = preset
    while name != "default":
        text = _preset_text(model, name)
        if text is None:
            valid = available_presets(model)
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown preset {name!r} for {model}.{hint} Valid presets: {', '.join(valid)}.")
        data = _read_yaml(text, f"preset {model}/{name}")
        name = data.pop(BASE_KEY, "default")
        chain.append(data)
        if len(chain) > 10:
            raise ConfigError(f"preset {model}/{preset}: _base_ chain too long (a cycle?)")
    cfg = defaults
    for data in reversed(chain):
        cfg = merge(cfg, data, f"preset {model}/{preset}")
    return cfg


def parse_override(text: str) -> tuple:
    """``"optim.lr=1e-4"`` -> ``("optim.lr", 0.0001)``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optim.lr=1e-4")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key before '=' is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads "1e-4" as a string (no dot); accept it as the float the user meant.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") or value.lower() in ("inf", "nan") else value
        except ValueError:
            pass
    return key, value


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    out = copy.deepcopy(cfg)
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        node = out
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise _unknown_key(key, flat_keys(cfg), "--set")
            if depth == len(parts) - 1:
                node[part] = _coerce(key, value, node[part], "--set")
            else:
                node = node[part]
    return out


def resolve(
    model: str,
    preset: str = "default",
    config_file: Optional[Path] = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Preset, then ``--config FILE``, then ``--set`` overrides, in that order of precedence."""
    cfg = load_preset(model, preset)
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config {path}: file not found")
        data = _read_yaml(path.read_text(encoding="utf-8"), str(path))
        data.pop(BASE_KEY, None)
        cfg = merge(cfg, data, str(path))
    return apply_overrides(cfg, overrides)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)


def save(cfg: Config, path: Path) -> Path:
    return atomic_write_text(path, dump(cfg))


def get(cfg: Config, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
