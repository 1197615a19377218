"""``geoloc export``: write MINDIR / ONNX / AIR and prove the exported graph computes what the network does.

After writing MINDIR the file is reloaded (``ms.load`` + ``nn.GraphCell``) and after ONNX it is run in
onnxruntime, on the same example input as the network; the largest absolute difference is returned
and must stay within ``tolerance``. AIR needs an Ascend device: on other targets it is refused up front
with that reason instead of MindSpore's internal error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Optional

import numpy as np

from geocli.errors import GeolocError, UsageError

FORMATS = {"mindir": ("MINDIR", ".mindir"), "onnx": ("ONNX", ".onnx"), "air": ("AIR", ".air")}


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: Optional[float]  # None when the check could not run (reason in ``note``)
    note: str = ""


@dataclass
class ExportGraph:
    """One graph a backend exports: ``name`` ("" for a model's single graph; e.g. "ground", "satellite")
    becomes a suffix of the file name, ``cell`` is the network in eval mode, ``inputs`` example arrays
    that fix the input shapes."""

    name: str
    cell: Any
    inputs: List[np.ndarray]


def _as_list(outputs) -> List[np.ndarray]:
    if isinstance(outputs, (tuple, list)):
        return [o.asnumpy() if hasattr(o, "asnumpy") else np.asarray(o) for o in outputs]
    return [outputs.asnumpy() if hasattr(outputs, "asnumpy") else np.asarray(outputs)]


def _max_diff(a: List[np.ndarray], b: List[np.ndarray]) -> float:
    if len(a) != len(b):
        raise GeolocError(f"exported graph returns {len(b)} outputs, the network {len(a)}")
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
               for x, y in zip(a, b))


def check_mindir(path: Path, inputs: List[np.ndarray]) -> List[np.ndarray]:
    import mindspore as ms
    from mindspore import nn

    graph = nn.GraphCell(ms.load(str(path)))
    return _as_list(graph(*[ms.Tensor(x) for x in inputs]))


def check_onnx(path: Path, inputs: List[np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort  # optional: only for the parity check (pip install onnxruntime)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {meta.name: x for meta, x in zip(session.get_inputs(), inputs)}
    return list(session.run(None, feed))


def parity(network, path: Path, fmt: str, inputs: List[np.ndarray]) -> float:
    """Largest absolute difference between ``network`` and its exported file ``path`` (ONNX run in
    onnxruntime, MINDIR reloaded in MindSpore) on ``inputs``. ImportError when onnxruntime is missing."""
    import mindspore as ms

    expected = _as_list(network(*[ms.Tensor(x) for x in inputs]))
    got = check_onnx(path, inputs) if fmt == "onnx" else check_mindir(path, inputs)
    return _max_diff(expected, got)


def require_format(fmt: str, device: str):
    """(MindSpore format name, file suffix) of ``fmt``; AIR only on Ascend, refused with the reason."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "air" and device != "ascend":
        raise UsageError("--format air needs an Ascend device (MindSpore writes AIR only with the Ascend "
                         f"backend; this process runs on {device}); export mindir or onnx here, or run on Ascend")
    return FORMATS[fmt]


def export_network(network, inputs: List[np.ndarray], fmt: str, out: Path, *, device: str = "cpu",
                   check: bool = True, tolerance: float = 1e-4, overwrite: bool = False) -> ExportResult:
    """Export ``network`` (in eval mode) for ``inputs``' shapes to ``out`` (suffix added if missing)."""
    import mindspore as ms

    fmt = fmt.lower()
    file_format, suffix = require_format(fmt, device)
    out = Path(out)
    path = out if out.suffix == suffix else out.with_name(out.name + suffix)
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    from geocli.runtime.blocked_conv import plain_convs

    plain_convs(network)  # a custom op cannot be exported: MindSpore's own convolutions, same Parameters
    network.set_train(False)
    tensors = [ms.Tensor(x) for x in inputs]
    stem = path.with_suffix("")
    try:
        ms.export(network, *tensors, file_name=str(stem), file_format=file_format)
    except Exception as exc:
        raise GeolocError(f"{file_format} export failed: {str(exc).splitlines()[0]}") from None
    if not path.is_file():
        raise GeolocError(f"{file_format} export wrote no {path}")
    if not check or fmt == "air":
        return ExportResult(path, fmt, None, "not checked")
    try:
        diff = parity(network, path, fmt, inputs)
    except ImportError:
        return ExportResult(path, fmt, None, "onnxruntime not installed: pip install onnxruntime to check")
    if not diff <= tolerance:
        raise GeolocError(f"{path}: exported graph differs from the network by {diff:.3g} (> {tolerance:g})")
    return ExportResult(path, fmt, diff)


def export(model: str, checkpoint: Optional[Path], fmt: str, *, out: Optional[Path] = None,
           overrides: Iterable[str] = (), device: Optional[str] = None, check: bool = True,
           tolerance: float = 1e-4, overwrite: bool = False) -> List[ExportResult]:
    """Library form of ``geoloc export``: load the checkpoint, export every graph of the model
    (``Backend.export_graphs``), check the parity of each."""
    from geocli import api, runs
    from geocli.runtime import context

    ctx = context.setup(Path("."), device=device, mode="graph", seed=0, distributed=False)
    require_format(fmt.lower(), ctx.device)  # refuse before loading the checkpoint
    loaded = api.load_model(model, checkpoint, overrides=overrides, task="export")
    if out is None:
        run = runs.run_dir_of_checkpoint(checkpoint) if checkpoint else None
        out = (run / "export" if run else Path("exports")) / model
    out = Path(out)
    results = []
    for graph in loaded.backend.export_graphs(loaded.cfg, loaded.network):
        target = out.with_name(f"{out.name}-{graph.name}") if graph.name else out
        results.append(export_network(graph.cell, graph.inputs, fmt, target, device=ctx.device, check=check,
                                      tolerance=tolerance, overwrite=overwrite))
    return results
