"""Inference engines for commands that embed many images (eval, retrieve, extraction).

``mindspore`` (the default) runs the network as it is. ``onnxruntime`` runs the network's exported
ONNX graph: the graph is exported once per (weights, config, graph, input shape), in a fresh
subprocess (a failed ONNX export leaves a MindSpore process unable to export anything else), checked
there against the network on the same input, and cached next to the checkpoint.

A backend opts in by listing the engine in its ``engines`` attribute (default: MindSpore only) and by
running its batches through :func:`runner`; nothing here imports MindSpore or onnxruntime at import.
"""

from __future__ import annotations

from typing import Sequence, Tuple

from geocli.errors import UsageError

ENGINES: Tuple[str, ...] = ("mindspore", "onnxruntime")
DEFAULT = "mindspore"


def check(engine: str) -> str:
    """The engine name, validated (for --engine)."""
    name = (engine or DEFAULT).lower()
    if name not in ENGINES:
        raise UsageError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return name


def supported(backend) -> Sequence[str]:
    """Engines a backend runs its inference on (its ``engines`` attribute; MindSpore by default)."""
    return tuple(getattr(backend, "engines", (DEFAULT,)))


def require(backend, engine: str, task: str) -> str:
    """Refuse an engine the backend's ``task`` does not run on, with the engines it does run on."""
    name = check(engine)
    if name not in supported(backend):
        raise UsageError(f"--engine {name}: {backend.name} {task} runs on {', '.join(supported(backend))} only")
    return name
