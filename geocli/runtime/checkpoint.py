"""Self-describing, atomically written checkpoints.

A geoloc checkpoint is a MindSpore ``.ckpt`` (protobuf, no pickle) holding the network's parameters
under their own names, every optimizer's state under ``optimizer/<name>/<param>``, and one string entry
``geoloc_meta``: JSON with the model, preset, resolved config, step, epoch, package version, label maps
and preprocessing. So a checkpoint alone is enough to evaluate, export or resume, and the step is never
guessed from a file name (a MindCV complaint).

Saves go to a temporary file in the same folder, then ``os.replace``: a kill mid-save never leaves a
truncated checkpoint under the real name.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from geocli import __version__
from geocli.errors import CheckpointError

META_KEY = "geoloc_meta"
OPT_PREFIX = "optimizer/"
STEP_FILE = re.compile(r"^step_(\d+)\.ckpt$")


def save(path: Path, network, optimizer_state: Sequence[Any] = (), meta: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``network`` (+ optimizer state parameters + meta) to ``path`` atomically; returns ``path``."""
    import mindspore as ms

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries: List[Dict[str, Any]] = [{"name": p.name, "data": p} for p in network.get_parameters()]
    entries += [{"name": OPT_PREFIX + p.name, "data": p} for p in optimizer_state]
    meta = dict(meta or {})
    meta.setdefault("geoloc_version", __version__)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.ckpt")
    try:
        ms.save_checkpoint(entries, str(tmp), append_dict={META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load(path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Read a checkpoint: (parameters by name, meta dict). Foreign checkpoints get an empty meta."""
    import mindspore as ms

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        params = ms.load_checkpoint(str(path))
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError with long messages
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({str(exc).splitlines()[0]})") from None
    raw = params.pop(META_KEY, None)
    meta = json.loads(raw) if isinstance(raw, str) else {}
    return params, meta


def read_meta(path: Path) -> Dict[str, Any]:
    return load(path)[1]


def split_optimizer_state(params: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Separate network parameters from ``optimizer/<param>`` entries (prefix removed)."""
    net: Dict[str, Any] = {}
    opt: Dict[str, Any] = {}
    for name, value in params.items():
        if name.startswith(OPT_PREFIX):
            opt[name[len(OPT_PREFIX):]] = value
        else:
            net[name] = value
    return net, opt


def load_into(network, params: Dict[str, Any], source: Path, strict: bool = True) -> List[str]:
    """Copy ``params`` into ``network``; with ``strict`` every network parameter must be present and
    shaped alike, except dropout draw counters (absent from older checkpoints and converted weights:
    they stay at 0). Returns the names of checkpoint entries that were not used."""
    import mindspore as ms

    from geocli.nets.dropout import is_draw_counter

    own = {p.name: p for p in network.get_parameters()}
    missing = [n for n in own if n not in params and not is_draw_counter(n)]
    if strict and missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise CheckpointError(f"{source}: missing parameters {', '.join(missing[:3])}{more}; "
                              "is it a checkpoint of this model and preset?")
    for name, p in own.items():
        if name in params and tuple(params[name].shape) != tuple(p.shape):
            raise CheckpointError(f"{source}: parameter {name} has shape {tuple(params[name].shape)}, "
                                  f"the network expects {tuple(p.shape)}")
    not_loaded, _ = ms.load_param_into_net(network, {k: v for k, v in params.items() if k in own}, strict_load=False)
    not_loaded = [n for n in not_loaded if n in params]
    if strict and not_loaded:
        raise CheckpointError(f"{source}: could not load {', '.join(not_loaded[:3])}")
    return [n for n in params if n not in own]


def load_optimizer_state(own: Sequence[Any], state: Dict[str, Any], source: Path) -> None:
    """Copy saved optimizer state into the parameters ``own`` (every one must be in the checkpoint)."""
    import mindspore as ms

    for param in own:
        if param.name not in state:
            raise CheckpointError(f"{source}: optimizer state lacks {param.name}; "
                                  "resume needs a checkpoint written by the same training setup")
        value = state[param.name]
        param.set_data(ms.Tensor(value.asnumpy(), dtype=param.dtype))


def step_checkpoints(folder: Path) -> List[Path]:
    """``step_<n>.ckpt`` files in a folder, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def prune(folder: Path, keep: int) -> None:
    """Delete the oldest ``step_<n>.ckpt`` beyond ``keep`` (only files this trainer wrote)."""
    if keep <= 0:
        return
    for old in step_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
