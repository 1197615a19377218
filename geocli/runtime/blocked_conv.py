"""Convolutions on oneDNN's blocked layout (``--conv``): MindSpore's CPU ``Conv2d`` swapped for a custom op.

Why: MindSpore 2.10's CPU Conv2D hands oneDNN plain NCHW memory, for which oneDNN runs im2col + GEMM;
PyTorch lets oneDNN pick an 8-channel blocked layout and its direct AVX2 kernels. The custom op in
``geocli/native/blocked_conv_op.cpp`` runs the same convolution, and its two gradients, through MindSpore's
own ``libdnnl.so.3`` with the layout left to oneDNN, reordering at its edges (docs/performance.md has the
measurements: the five networks up to 1.65x faster than on MindSpore's kernel, inference 0.94-1.38x PyTorch).

The op is compiled once per (source, MindSpore version) into ``$XDG_CACHE_HOME/geoloc/kernels``, with g++
and oneDNN's headers from the ``onednn-devel`` wheel (about 200 kB, ``pip download --no-deps``).

The choice (``--conv``, or ``GEOLOC_CONV`` in the environment, which msrun workers inherit):

* ``auto`` (default): on CPU, the blocked op, built on first use (about 5 s, once); where it cannot be
  built (no g++, no package index, another oneDNN), MindSpore's convolution, and the reason is recorded
  beside the op's path so later runs do not try again (``geoloc env`` shows it; ``--conv blocked`` retries);
* ``blocked``: the op, built when missing, or an error that says why it cannot be built;
* ``mindspore``: MindSpore's convolution always.

The op replaces ``nn.Conv2d`` cells in training networks (``geocli.runtime.trainer``) and in MindSpore
inference (``geocli.runtime.engine.cell_runner``), in place and with the same Parameter objects, so
checkpoints are unchanged. The same choice gives 1x1 stride-1 convolutions, which the op leaves alone, a
faster input gradient (``geocli.runtime.pointwise_conv``, MindSpore's own primitives otherwise). Inference
copies (``cell_runner(..., inference_copy=True)``) also put their one-channel layers on the op and the ReLU
after a convolution inside it (:func:`swap_convs`). Export graphs never hold the op: ``geocli.export`` puts
the ``nn.Conv2d`` (and ``nn.ReLU``) cells back first (ONNX and MINDIR cannot carry a custom op).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from geocli.errors import GeolocError, UsageError
from geocli.runtime import pointwise_conv

CHOICES: Tuple[str, ...] = ("auto", "blocked", "mindspore")
ENV = "GEOLOC_CONV"
THREADS_ENV = "GEOLOC_CONV_THREADS"
SOURCE = Path(__file__).resolve().parent.parent / "native" / "blocked_conv_op.cpp"
HEADERS_WHEEL = "onednn-devel==2026.1.0"
#: MindSpore's oneDNN is built with the threadpool runtime (``dnnl_version()->cpu_runtime``)
THREADPOOL_RUNTIME = 8


class Unbuildable(GeolocError):
    """The op cannot be built here (no compiler, no headers, another oneDNN build); the message says why."""


# ---- the choice --------------------------------------------------------------------------------------
def check(choice: Optional[str], source: str = "--conv") -> str:
    name = (choice or "auto").lower()
    if name not in CHOICES:
        raise UsageError(f"{source} {choice!r}: choose one of {', '.join(CHOICES)}")
    return name


def choose(choice: Optional[str]) -> str:
    """Set the process's choice (and its children's: msrun workers inherit the environment)."""
    name = check(choice)
    os.environ[ENV] = name
    return name


def chosen() -> str:
    """The current choice: ``GEOLOC_CONV`` (set by ``--conv``), else auto."""
    return check(os.environ.get(ENV), source=ENV)


# ---- building ----------------------------------------------------------------------------------------
class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


def mindspore_dnnl() -> Path:
    """MindSpore's own oneDNN library, checked to be a threadpool build of oneDNN 3."""
    import mindspore

    lib = Path(mindspore.__file__).parent / "lib" / "libdnnl.so.3"
    if not lib.is_file():
        raise Unbuildable(f"{lib}: MindSpore's oneDNN library not found")
    dnnl = ctypes.CDLL(str(lib))
    dnnl.dnnl_version.restype = ctypes.POINTER(_Version)
    v = dnnl.dnnl_version().contents
    if v.major != 3 or v.cpu_runtime != THREADPOOL_RUNTIME:
        raise Unbuildable(f"MindSpore's oneDNN is {v.major}.{v.minor}.{v.patch} with CPU runtime {v.cpu_runtime}; "
                          "the blocked convolutions need oneDNN 3.x built with the threadpool runtime (8)")
    return lib


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "geoloc" / "kernels"


def library_path(mindspore_version: Optional[str] = None) -> Path:
    """Where the op built from this source for this MindSpore (or ``mindspore_version``) lives, built or not."""
    if mindspore_version is None:
        import mindspore

        mindspore_version = mindspore.__version__
    key = hashlib.sha256(SOURCE.read_bytes() + mindspore_version.encode()).hexdigest()[:12]
    return cache_dir() / f"blocked_conv-{key}.so"


def headers(cache: Path) -> Path:
    """oneDNN's headers from the onednn-devel wheel (unpacked with geoloc's safe extraction), with their
    config set to a CPU-only threadpool build like MindSpore's."""
    from geocli.data.archive import extract

    unpacked = cache / "onednn-devel"
    found = sorted(unpacked.glob("*.data/data/include"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:  # concurrent builds (msrun workers) never mix
            # one retry and a 10 s timeout: offline, ``auto`` gives up in seconds rather than pip's minutes
            got = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--retries", "1",
                                  "--timeout", "10", HEADERS_WHEEL, "-d", tmp], capture_output=True, text=True)
            if got.returncode != 0:
                raise Unbuildable(f"pip download {HEADERS_WHEEL} failed (the blocked convolutions need oneDNN's "
                                  f"headers): {_one_line(got.stderr)}")
            wheel = next(Path(tmp).glob("onednn_devel-*.whl"))
            try:
                extract(wheel, Path(tmp) / "unpacked")
            except GeolocError as exc:
                raise Unbuildable(str(exc)) from None
            try:
                os.replace(Path(tmp) / "unpacked", unpacked)
            except OSError:  # another process unpacked them first: use theirs
                if not unpacked.is_dir():
                    raise
        found = sorted(unpacked.glob("*.data/data/include"))
        if not found:
            raise Unbuildable(f"{unpacked}: no include folder inside the {HEADERS_WHEEL} wheel")
    config = found[0] / "oneapi" / "dnnl" / "dnnl_config.h"
    text = config.read_text()
    edited = text
    for name, value in (("DNNL_CPU_THREADING_RUNTIME", "DNNL_RUNTIME_THREADPOOL"),
                        ("DNNL_CPU_RUNTIME", "DNNL_RUNTIME_THREADPOOL"),
                        ("DNNL_GPU_RUNTIME", "DNNL_RUNTIME_NONE"), ("DNNL_GPU_VENDOR", "DNNL_VENDOR_NONE")):
        edited = re.sub(rf"^#define {name} \S+$", f"#define {name} {value}", edited, flags=re.M)
    edited = re.sub(r"^#define DNNL_WITH_SYCL$", "/* #undef DNNL_WITH_SYCL */", edited, flags=re.M)
    if edited != text:  # idempotent: an interrupted edit is mended on the next build
        config.write_text(edited)
    return found[0]


def _one_line(text: str, keep: int = 400) -> str:
    """The end of a tool's output on one line (errors are one line; the end names the failure)."""
    return " ".join(text.split())[-keep:]


def failure_record(library: Path) -> Path:
    """Where a failed build of ``library`` leaves its reason (read by ``auto`` and ``geoloc env``)."""
    return library.with_suffix(".unbuildable")


def build(retry: bool = True) -> Path:
    """Compile the op for this MindSpore (once: later calls return the cached file).

    A failure is recorded (:func:`failure_record`) and raised as :class:`Unbuildable`; with
    ``retry=False`` (``auto``) a recorded failure is raised again without a new attempt, so a machine
    without a compiler or an index does not pay for the attempt on every run."""
    out = library_path()
    if out.is_file():
        return out
    record = failure_record(out)
    if not retry and record.is_file():
        raise Unbuildable(record.read_text().strip())
    try:
        _compile(out)
    except Unbuildable as exc:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(f"{exc}\n")
        raise
    record.unlink(missing_ok=True)
    return out


def needs_build(choice: str) -> bool:
    """Whether running under ``choice`` would compile the op now (not built, and for ``auto`` no failure
    recorded): the CLI then shows a spinner for the few seconds it takes."""
    if choice == "mindspore":
        return False
    out = library_path()
    return not out.is_file() and (choice == "blocked" or not failure_record(out).is_file())


def _compile(out: Path) -> None:
    if shutil.which("g++") is None:
        raise Unbuildable("g++ not found: the blocked convolutions are compiled on first use; install a C++ "
                          "compiler (Debian/Ubuntu: apt install g++) or run with --conv mindspore")
    dnnl = mindspore_dnnl()
    include = headers(out.parent)
    partial = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    cmd = ["g++", "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{include}", str(SOURCE), "-o", str(partial),
           str(dnnl), f"-Wl,-rpath,{dnnl.parent}", "-pthread"]
    got = subprocess.run(cmd, capture_output=True, text=True)
    if got.returncode != 0:
        partial.unlink(missing_ok=True)
        raise Unbuildable(f"compiling {SOURCE.name} failed: {_one_line(got.stderr)}")
    os.replace(partial, out)  # atomic: a concurrent worker sees the whole file or none


@lru_cache(maxsize=None)
def _loadable(path: str) -> bool:
    try:
        ctypes.CDLL(path)
        return True
    except OSError:
        return False


def active_library(device: str = "cpu") -> Optional[Path]:
    """The op to run under the current choice on ``device``, or None for MindSpore's convolution.

    Both ``blocked`` and ``auto`` build the op when it is missing; ``blocked`` raises
    :class:`Unbuildable` when it cannot be built or loaded, ``auto`` then returns None."""
    choice = chosen()
    if choice == "mindspore" or device.lower() != "cpu":
        return None
    try:
        path = build(retry=choice == "blocked")
    except Unbuildable:
        if choice == "blocked":
            raise
        return None
    if _loadable(str(path)):
        return path
    if choice == "blocked":
        raise Unbuildable(f"{path}: cannot be loaded; delete it to rebuild, or run with --conv mindspore")
    return None


def status(mindspore_version: Optional[str]) -> Dict[str, Optional[str]]:
    """For ``geoloc env``: the choice, where the op for ``mindspore_version`` is built (None: not yet), and
    why it could not be built (None: no failure recorded)."""
    try:
        choice = chosen()
    except UsageError as exc:
        choice = f"not usable: {exc}"
    path = library_path(mindspore_version) if mindspore_version else None
    record = failure_record(path) if path is not None else None
    return {"choice": choice, "library": str(path) if path is not None and path.is_file() else None,
            "failure": record.read_text().strip() if record is not None and record.is_file() else None}


# ---- the cell ----------------------------------------------------------------------------------------
def _pair(value) -> Tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def covered(conv, inference: bool = False) -> bool:
    """Whether the op takes ``conv``: a float32 NCHW ``nn.Conv2d`` with one group and zero padding, except
    1x1 stride-1 convolutions and, unless for ``inference`` only, single-channel inputs.

    1x1 stride-1 convolutions (:mod:`geocli.runtime.pointwise_conv` takes those) are a plain GEMM in either
    layout, and the op's reorders made them slower
    (benchmarks/blocked_conv.py: 0.96x / 0.99x inference, 0.94x / 0.85x with gradients, at ResNet50's
    shapes), while a strided 1x1 convolution gained 2.1x / 1.8x. A one-channel input fills one of the
    blocked layout's eight channel lanes: SDNet's 1->32 and 1->1 3x3 layers (batch 64, 64 px) took 21.0 and
    7.3 ms a training step on the op against 8.2 and 5.2 on MindSpore's kernel (docs/performance.md), while
    from two channels up the op broke even or won (4->16: 20.5 against 33.1 ms). Forward only, with its
    bias and the ReLU after it inside the op, the one-channel layer is faster on the op (:func:`_fuse_relus`)."""
    import mindspore as ms
    from mindspore import nn

    if type(conv) is not nn.Conv2d or conv.weight.dtype != ms.float32:
        return False
    pointwise = tuple(conv.kernel_size) == (1, 1) and _pair(conv.stride) == (1, 1)
    return (not pointwise and (conv.in_channels > 1 or inference) and conv.group == 1
            and conv.data_format == "NCHW" and conv.pad_mode in ("same", "valid", "pad")
            and getattr(conv, "padding_mode", "zeros") == "zeros")


def geometry(conv, relu: bool = False) -> np.ndarray:
    """The op's 10 int64 geometry values: same, stride h/w, dilation h/w, pad top/bottom/left/right, and
    whether the op applies a ReLU to its output (inference copies only: no gradient is defined for it)."""
    pads = (0, 0, 0, 0)
    if conv.pad_mode == "pad":
        pads = (conv.padding,) * 4 if isinstance(conv.padding, int) else tuple(conv.padding)
    return np.array([conv.pad_mode == "same", *_pair(conv.stride), *_pair(conv.dilation), *pads, relu], np.int64)


def output_hw(shape, kernel, g: np.ndarray) -> Tuple[int, int]:
    """Height and width of the convolution's output for input ``shape`` (MindSpore's arithmetic)."""
    out = []
    for i in range(2):
        size, stride, dilation = int(shape[2 + i]), int(g[1 + i]), int(g[3 + i])
        extent = (int(kernel[i]) - 1) * dilation + 1
        if g[0]:
            out.append(-(-size // stride))
        else:
            out.append((size + int(g[5 + 2 * i]) + int(g[6 + 2 * i]) - extent) // stride + 1)
    return out[0], out[1]


@lru_cache(maxsize=None)
def _cell_class(so: str):
    """The Cell class computing an ``nn.Conv2d``'s convolution through the op at ``so`` (gradients included)."""
    import mindspore as ms
    from mindspore import nn, ops

    backward_data = ops.Custom(f"{so}:ConvBwdData", out_shape=lambda x, dy, w, g: x,
                               out_dtype=lambda x, dy, w, g: x, func_type="aot")
    backward_weights = ops.Custom(f"{so}:ConvBwdWeights", out_shape=lambda x, dy, w, g: (w, [w[0]]),
                                  out_dtype=lambda x, dy, w, g: (x, x), func_type="aot")

    def bprop(x, w, b, g, out, dout):
        dw, db = backward_weights(x, dout, w, g)
        return backward_data(x, dout, w, g), dw, db, ops.zeros_like(g)

    class BlockedConv(nn.Cell):
        """``conv``'s convolution on oneDNN's blocked layout, with ``conv``'s own Parameters; with
        ``relu``, followed by a ReLU inside the op (inference only: the cell then has no gradient)."""

        def __init__(self, conv: nn.Conv2d, relu: bool = False):
            super().__init__()
            object.__setattr__(self, "plain", conv)  # kept for plain_convs(), outside the cell tree
            self.weight = conv.weight
            self.bias = conv.bias if conv.bias is not None else ms.Tensor(np.zeros(conv.out_channels, np.float32))
            g = geometry(conv, relu)
            self.geometry = ms.Tensor(g)
            out, kernel = conv.out_channels, conv.kernel_size
            self.op = ops.Custom(f"{so}:ConvFwd", out_shape=lambda x, w, b, _: (x[0], out, *output_hw(x, kernel, g)),
                                 out_dtype=lambda x, w, b, _: x, func_type="aot", bprop=None if relu else bprop)

        def construct(self, x):
            return self.op(x, self.weight, self.bias, self.geometry)

    return BlockedConv


def _replace(network, make) -> int:
    """Replace each child cell ``c`` of every cell of ``network`` for which ``make(c)`` is not None."""
    from mindspore import nn

    replaced = 0
    for _, parent in list(network.cells_and_names()):
        for key, child in list(parent.name_cells().items()):
            new = make(child)
            if new is not None:
                # into _cells directly: setattr and SequentialCell.__setitem__ rename the shared Parameters
                parent._cells[key] = new
                replaced += 1
        if isinstance(parent, nn.SequentialCell):
            parent.cell_list = list(parent._cells.values())  # what its construct runs
    return replaced


def swap_convs(network, so: Path, inference: bool = False) -> int:
    """Replace every ``nn.Conv2d`` of ``network`` that :func:`covered` accepts by the op (same Parameter
    objects, same parameter names); returns how many were replaced. With ``inference`` (a network that
    only ever runs forward), also the one-channel layers, and a ReLU after a convolution goes into the op
    (:func:`_fuse_relus`)."""
    cell_class = _cell_class(str(so))
    fused = _fuse_relus(network, cell_class) if inference else 0
    return fused + _replace(network, lambda c: cell_class(c) if covered(c, inference) else None)


def _fuse_relus(network, cell_class) -> int:
    """In each ``SequentialCell`` of ``network``, a convolution the op takes that is followed by an
    ``nn.ReLU`` (with only ``nn.Identity`` cells between: BatchNorms folded away) becomes the op with the
    ReLU inside, and the ReLU's place an identity that :func:`plain_convs` turns back into the ReLU.

    Why: the ReLU is then applied while the convolution's output is in cache instead of in a pass of its
    own over the whole activation. It pays where that activation is large: SDNet's one-channel 1->32
    layer (batch 64 at 64 px) took 5.5 ms on the op with its ReLU against 14.3 ms as MindSpore's Conv2D,
    BiasAdd and ReLU (docs/performance.md)."""
    from mindspore import nn

    replacements = {}  # id of a cell -> what takes its place
    for _, seq in network.cells_and_names():
        if not isinstance(seq, nn.SequentialCell):
            continue
        cells = list(seq._cells.values())
        for i, conv in enumerate(cells):
            j = i + 1
            while j < len(cells) and type(cells[j]) is nn.Identity:
                j += 1
            if covered(conv, inference=True) and j < len(cells) and type(cells[j]) is nn.ReLU:
                inside = nn.Identity()
                object.__setattr__(inside, "plain", cells[j])  # what plain_convs() puts back
                replacements[id(conv)], replacements[id(cells[j])] = cell_class(conv, relu=True), inside
    return _replace(network, lambda c: replacements.get(id(c))) // 2


def swap_pointwise(network) -> int:
    """Replace every 1x1 stride-1 ``nn.Conv2d`` of ``network`` by :mod:`geocli.runtime.pointwise_conv`'s cell
    (same Parameter objects and names); returns how many were replaced."""
    return _replace(network, pointwise_conv.replacement)


def plain_convs(network) -> int:
    """Undo :func:`swap_convs` and :func:`apply` (before an export); returns how many cells were put back."""
    return _replace(network, lambda c: c.__dict__.get("plain"))


def apply(network, device: str = "cpu", log=None, inference: bool = False) -> int:
    """Swap ``network``'s convolutions for the op, and its 1x1 stride-1 ones for
    :mod:`geocli.runtime.pointwise_conv`'s, when the current choice says so (see the module's docstring);
    returns how many were swapped. The op's thread pool follows ``--threads``. ``inference`` is for
    networks that never train (BatchNorm-folded inference copies): see :func:`swap_convs`."""
    so = active_library(device)
    if so is None:
        if log is not None and device.lower() == "cpu" and chosen() == "auto":
            log.info("convolutions on MindSpore's CPU kernel: the blocked op cannot be built here (geoloc env "
                     "says why; --conv blocked tries again)", show=False)
        elif log is not None and device.lower() != "cpu" and chosen() == "blocked":
            log.info(f"--conv blocked is for CPU: the network runs on {device} with MindSpore's convolutions")
        return 0
    from geocli.runtime.context import configured_threads

    os.environ.setdefault(THREADS_ENV, str(configured_threads() or os.cpu_count() or 1))
    swapped = swap_convs(network, so, inference)
    gemm = swap_pointwise(network)
    if log is not None and swapped + gemm:
        log.info(f"{swapped} convolutions on oneDNN's blocked layout, {gemm} 1x1 convolutions with one-GEMM input "
                 f"gradients (--conv {chosen()}; --conv mindspore to turn off)")
    return swapped + gemm


__all__ = ["CHOICES", "Unbuildable", "check", "choose", "chosen", "build", "needs_build", "failure_record",
           "active_library", "status", "covered", "swap_convs", "swap_pointwise", "plain_convs",
           "apply"]
