"""Inference engines for commands that embed many images (eval, retrieve, extraction).

``mindspore`` (the default) runs the network as it is. ``onnxruntime`` runs the network's exported
ONNX graph: the graph is exported once per (weights, config, graph, input shape), in a fresh
subprocess (a failed ONNX export leaves a MindSpore process unable to export anything else), checked
there against the network on the same input, and cached next to the checkpoint.

A backend opts in by listing the engine in its ``engines`` attribute (default: MindSpore only) and by
running its batches through :func:`runner`; nothing here imports MindSpore or onnxruntime at import.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from geocli.errors import GeolocError, UsageError

if TYPE_CHECKING:  # NumPy is imported where it is used: the CLI's --engine completion imports this module
    import numpy as np

ENGINES: Tuple[str, ...] = ("mindspore", "onnxruntime")
DEFAULT = "mindspore"


def check(engine: str) -> str:
    """The engine name, validated (for --engine)."""
    name = (engine or DEFAULT).lower()
    if name not in ENGINES:
        raise UsageError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return name


#: Tasks a backend's ``engines`` apply to unless it lists its own in ``engine_tasks``.
ENGINE_TASKS: Tuple[str, ...] = ("eval", "retrieve")


def supported(backend, task: str = "") -> Sequence[str]:
    """Engines a backend runs its inference on (its ``engines`` attribute; MindSpore by default); a
    ``task`` outside the backend's ``engine_tasks`` (eval and retrieve by default) runs on MindSpore only,
    so ``--engine`` is never accepted and then ignored."""
    if task and task not in getattr(backend, "engine_tasks", ENGINE_TASKS):
        return (DEFAULT,)
    return tuple(getattr(backend, "engines", (DEFAULT,)))


def require(backend, engine: str, task: str) -> str:
    """Refuse an engine the backend's ``task`` does not run on, with the engines it does run on."""
    name = check(engine)
    engines = supported(backend, task)
    if name not in engines:
        raise UsageError(f"--engine {name}: {backend.name} {task} runs on {', '.join(engines)} only")
    return name


# ---- runners: callables over NumPy batches ------------------------------------------------------------
def runner(engine: str, backend, cfg: Dict[str, Any], network, *, graph: str = "",
           batch_size: Optional[int] = None, threads: Optional[int] = None, checkpoint: Optional[Path] = None,
           cache_dir: Optional[Path] = None, tolerance: float = 1e-4,
           free_axes: Sequence[int] = ()) -> Callable[..., List[np.ndarray]]:
    """A function ``run(*arrays) -> list of NumPy outputs`` computing ``network`` (or the backend's
    export graph named ``graph``) on batches of any length.

    ``mindspore`` calls the network directly. ``onnxruntime`` runs the graph's ONNX export for a fixed
    batch of ``batch_size`` (see :func:`onnx_graph`); shorter batches are padded and the padding's
    outputs dropped, longer ones split, which assumes, as every inference graph here does, that each
    output row depends on its own input row only (eval-mode BatchNorm, no batch statistics).
    ``free_axes`` (e.g. ``(0, 2, 3)`` for any batch and image size) are left free in the ONNX file
    (:mod:`geocli.runtime.onnx_axes`); a free batch axis runs every batch whole.
    """
    import numpy as np

    name = check(engine)
    if name == DEFAULT:
        copy = inference_network(backend, cfg, network)
        return cell_runner(_graph(backend, cfg, copy, graph).cell, inference_copy=copy is not network)
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("--engine onnxruntime needs onnxruntime: pip install onnxruntime") from None
    path = onnx_graph(backend, cfg, network, graph=graph, batch_size=batch_size, checkpoint=checkpoint,
                      cache_dir=cache_dir, tolerance=tolerance, free_axes=free_axes)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or _ms_threads() or os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    # a session's pool threads spin after each run by default, on a core the next session's run needs:
    # VIGOR's ground and satellite sessions ran at 20.7 images/s spinning and 25.4 without here
    # (docs/performance.md, "onnxruntime's spinning pool threads")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    declared = session.get_inputs()[0].shape[0]
    fixed = declared if isinstance(declared, int) else None  # a free batch axis is a name

    def run(*arrays: np.ndarray) -> List[np.ndarray]:
        if fixed is None:
            return list(session.run(None, dict(zip(names, [np.ascontiguousarray(a) for a in arrays]))))
        n = len(arrays[0])
        chunks: List[List[np.ndarray]] = []
        for start in range(0, n, fixed):
            part = [np.ascontiguousarray(a[start:start + fixed]) for a in arrays]
            m = len(part[0])
            if m < fixed:
                part = [np.concatenate([a, np.zeros((fixed - m,) + a.shape[1:], a.dtype)]) for a in part]
            chunks.append([o[:m] for o in session.run(None, dict(zip(names, part)))])
        return [np.concatenate(outs) for outs in zip(*chunks)]

    run.path = path  # type: ignore[attr-defined]
    return run


def inference_network(backend, cfg: Dict[str, Any], network):
    """``network`` for MindSpore inference: when the backend sets ``fold_batchnorm = True``, a copy with
    every BatchNorm folded into the convolution before it (:mod:`geocli.nets.fold`; MindSpore's CPU graph
    does not fuse them), else ``network`` itself. ``network`` is never changed."""
    if not getattr(backend, "fold_batchnorm", False):
        return network
    from geocli.nets.fold import folded_copy

    return folded_copy(lambda: backend.build_network(cfg), network)


def cell_runner(cell, inference_copy: bool = False) -> Callable[..., List[np.ndarray]]:
    """``run(*arrays) -> list of NumPy outputs`` of a MindSpore cell, in eval mode.

    The cell's convolutions run on oneDNN's blocked layout when ``--conv`` says so
    (:func:`geocli.runtime.blocked_conv.apply`, in place, the same Parameters). ``inference_copy``: the
    cell is a copy made for this inference alone (:func:`inference_network`) and will never train, so
    the op may take its ReLUs and one-channel layers too, which leaves it without gradients."""
    import mindspore as ms

    from geocli.runtime import blocked_conv

    cell.set_train(False)
    blocked_conv.apply(cell, ms.get_context("device_target"), inference=inference_copy)

    def run(*arrays: np.ndarray) -> List[np.ndarray]:
        outputs = cell(*[ms.Tensor(a) for a in arrays])
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        return [o.asnumpy() for o in outputs]

    return run


def _ms_threads() -> Optional[int]:
    from geocli.runtime import context

    return context.configured_threads()


def _graph(backend, cfg, network, name: str):
    graphs = backend.export_graphs(cfg, network)
    for g in graphs:
        if g.name == name:
            return g
    raise UsageError(f"{backend.name} has no inference graph {name!r} (has: {', '.join(repr(g.name) for g in graphs)})")


# ---- the cached ONNX export --------------------------------------------------------------------------
def onnx_graph(backend, cfg: Dict[str, Any], network, *, graph: str = "", batch_size: Optional[int] = None,
               checkpoint: Optional[Path] = None, cache_dir: Optional[Path] = None,
               tolerance: float = 1e-4, free_axes: Sequence[int] = ()) -> Path:
    """The ONNX file of ``backend``'s export graph ``graph`` for ``network``'s current weights.

    Exported once per (weights, config, graph, input shapes, ``free_axes``) and cached: in ``cache_dir``,
    else in ``onnx/`` next to ``checkpoint``, else in ``$XDG_CACHE_HOME/geoloc/onnx``. The export runs in
    a fresh subprocess (a failed ONNX export leaves a MindSpore process unable to export anything else),
    which also checks the file in onnxruntime against the network on the same input (``tolerance``) and, when
    ``free_axes`` are freed, on an input of other sizes along them as well."""
    chosen = _graph(backend, cfg, network, graph)
    inputs = [_batched(x, batch_size) for x in chosen.inputs]
    free = sorted({int(a) for a in free_axes})
    key = _cache_key(backend.name, graph, inputs, cfg, network, free)
    size = "free" if free else f"b{len(inputs[0])}"
    stem = "-".join(filter(None, [backend.name, graph, size, key]))
    folder = _cache_folder(cache_dir, checkpoint)
    path = folder / f"{stem}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    import mindspore as ms

    with tempfile.TemporaryDirectory(prefix="geoloc-onnx-") as tmp:
        params, cfg_file, out = Path(tmp) / "params.ckpt", Path(tmp) / "config.json", Path(tmp) / "graph.onnx"
        ms.save_checkpoint(chosen.cell, str(params))  # the graph's own names: wrapping a network renames them
        cfg_file.write_text(json.dumps(cfg), encoding="utf-8")
        cmd = [sys.executable, "-m", "geocli.runtime.engine", "--model", backend.name, "--config", str(cfg_file),
               "--params", str(params), "--graph", graph, "--batch", str(len(inputs[0])), "--out", str(out),
               "--tolerance", repr(float(tolerance)), "--free-axes", ",".join(map(str, free))]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
            raise GeolocError(f"ONNX export of {backend.name} {graph or 'network'} for --engine onnxruntime failed: "
                              f"{lines[-1] if lines else 'no output'}")
        tmp_target = folder / f".{stem}.tmp-{os.getpid()}"
        shutil.copyfile(out, tmp_target)
        os.replace(tmp_target, path)
    return path


def _batched(x: np.ndarray, batch_size: Optional[int]) -> np.ndarray:
    import numpy as np

    if not batch_size or batch_size == len(x):
        return x
    return np.resize(x, (int(batch_size),) + x.shape[1:])  # repeats the example rows


def _cache_key(model: str, graph: str, inputs: List[np.ndarray], cfg: Dict[str, Any], network,
               free_axes: Sequence[int] = ()) -> str:
    import numpy as np

    from geocli import __version__

    digest = hashlib.blake2b(digest_size=8)
    shapes = [(x.shape, str(x.dtype)) for x in inputs]
    digest.update(json.dumps([__version__, model, graph, shapes, cfg] + ([list(free_axes)] if free_axes else []),
                             sort_keys=True, default=str).encode())
    for p in network.get_parameters():
        digest.update(p.name.encode())
        digest.update(np.ascontiguousarray(p.asnumpy()).tobytes())
    return digest.hexdigest()


def _cache_folder(cache_dir: Optional[Path], checkpoint: Optional[Path]) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if checkpoint is not None:
        folder = Path(checkpoint).resolve().parent / "onnx"
        if os.access(folder if folder.exists() else folder.parent, os.W_OK):
            return folder
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geoloc" / "onnx"


def _export_main(argv: Optional[Sequence[str]] = None) -> int:
    """The subprocess: rebuild the network, load the parent's weights, export and check one graph."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m geocli.runtime.engine")
    for flag in ("--model", "--config", "--params", "--graph", "--out"):
        parser.add_argument(flag, required=flag != "--graph", default="")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--free-axes", default="", help="comma-separated input axes to free, e.g. 0,2,3")
    args = parser.parse_args(argv)

    import mindspore as ms

    from geocli import registry
    from geocli.export import export_network
    from geocli.runtime import context

    context.setup(Path(args.out).parent, device="cpu", mode="graph", seed=0, distributed=False)
    cfg = json.loads(Path(args.config).read_text(encoding="utf-8"))
    backend = registry.load_backend(args.model)
    network = backend.build_network(cfg)
    network.set_train(False)
    # Load into the export graph, built the way the parent built it: a graph that wraps the network (as
    # an attribute of a wrapper cell) prefixes its parameter names, in the parent as here.
    chosen = _graph(backend, cfg, network, args.graph)
    not_loaded, unused = ms.load_param_into_net(chosen.cell, ms.load_checkpoint(args.params), strict_load=True)
    if not_loaded or unused:  # MindSpore only warns; an ONNX file of untrained weights must not be cached
        raise GeolocError(f"the rebuilt {args.model} graph does not match the parent's weights: "
                          f"{len(not_loaded)} parameters not loaded (e.g. {', '.join(not_loaded[:3])}), "
                          f"{len(unused)} unused (e.g. {', '.join(unused[:3])})")
    chosen.cell.set_train(False)
    inputs = [_batched(x, args.batch) for x in chosen.inputs]
    result = export_network(chosen.cell, inputs, "onnx", Path(args.out), check=True, tolerance=args.tolerance,
                            overwrite=True)
    axes = [int(a) for a in args.free_axes.split(",") if a.strip()]
    if axes:
        _free_and_check(chosen.cell, result.path, inputs, axes, args.tolerance)
    print(json.dumps({"path": str(result.path), "max_abs_diff": result.max_abs_diff, "note": result.note}))
    return 0


def _free_and_check(cell, path: Path, inputs: List[np.ndarray], axes: Sequence[int], tolerance: float) -> None:
    """Free ``axes`` of the ONNX file and prove it on an input of other sizes along them."""
    from geocli.export import parity
    from geocli.runtime.onnx_axes import free_input_axes, grown

    free_input_axes(path, axes)
    other = grown(inputs, axes)
    try:
        diff = parity(cell, path, "onnx", other)
    except Exception as exc:  # onnxruntime refusing the new sizes: a size is baked into the graph
        raise GeolocError(f"the exported graph does not run at other sizes along axes {list(axes)}: "
                          f"{str(exc).splitlines()[0]}") from None
    if not diff <= tolerance:
        raise GeolocError(f"the exported graph with axes {list(axes)} freed differs from the network at "
                          f"{[x.shape for x in other]} by {diff:.3g} (> {tolerance:g})")


if __name__ == "__main__":
    try:
        sys.exit(_export_main())
    except GeolocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
