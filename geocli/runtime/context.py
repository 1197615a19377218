"""Set up MindSpore for one process: device target, execution mode, seed, threads, distributed init.

Everything that touches global MindSpore state happens here, once per process, so library functions
and tests can rely on one consistent order (device first, then mode, then communication).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import List, Optional

import numpy as np

from geocli.errors import UsageError
from geocli.runtime.plan import RunContext

DEVICES = ("cpu", "gpu", "ascend")
MODES = ("graph", "pynative")
_MS_NAMES = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}
_threads_set: Optional[int] = None


def available_devices() -> List[str]:
    """Targets MindSpore can use in this process, best first (Ascend, GPU, CPU)."""
    import mindspore.hal as hal

    found = []
    for name in ("ascend", "gpu", "cpu"):
        try:
            if hal.is_available(_MS_NAMES[name]):
                found.append(name)
        except Exception:  # a missing plugin raises on some builds instead of returning False
            continue
    return found


def pick_device(requested: Optional[str]) -> str:
    available = available_devices()
    if requested is None:
        return available[0] if available else "cpu"
    device = requested.lower()
    if device not in DEVICES:
        raise UsageError(f"--device {requested!r}: choose one of {', '.join(DEVICES)}")
    if device not in available:
        raise UsageError(
            f"--device {device}: MindSpore reports it unavailable here (available: {', '.join(available)}); "
            "`geoloc env` shows why"
        )
    return device


#: MindSpore's switch for running each launch on the thread that asks for it (see :func:`dispatch_inline`).
HOST_BLOCKING_ENV = "MS_DEV_HOST_BLOCKING_RUN"


def dispatch_inline(target: str) -> bool:
    """On a CPU target, run MindSpore's launches on the calling thread (``MS_DEV_HOST_BLOCKING_RUN=1``)
    unless the user chose otherwise; returns whether launches run inline.

    Why: MindSpore 2.10 hands every graph launch to its ``frontend_queue`` thread, and the caller waits
    for that queue in a loop with no pause, yield or sleep (``AsyncRQueue::Wait``). On a GPU or Ascend the
    kernels run on the device, but on the CPU that waiting thread keeps a core busy that the kernels'
    own thread pool needs: measured on this 2-core machine, SDNet's training step ran at 66 pairs/s with
    the queue and 107 with inline launches, and a 64->64 convolution's gradients on ``--conv blocked``
    took 33 ms instead of 17 (docs/performance.md). MindSpore reads the variable at its first launch,
    so this must run before any network does; :func:`setup` calls it first.
    """
    if target == "cpu":
        os.environ.setdefault(HOST_BLOCKING_ENV, "1")
    return os.environ.get(HOST_BLOCKING_ENV) == "1"


def seed_everything(seed: int) -> None:
    import mindspore as ms

    random.seed(seed)
    np.random.seed(seed % (2**32))
    ms.set_seed(seed)


def set_threads(threads: Optional[int]) -> None:
    """MindSpore accepts the CPU thread count once per process; later calls with the same value are no-ops."""
    global _threads_set
    threads = threads or os.cpu_count() or 1
    if _threads_set is not None:
        return
    import mindspore as ms

    ms.device_context.cpu.op_tuning.threads_num(int(threads))
    _threads_set = int(threads)


def configured_threads() -> Optional[int]:
    """The CPU thread count this process gave MindSpore (``--threads``), or None before setup; other
    thread pools (onnxruntime, faiss, data workers) follow it so one flag bounds the whole process."""
    return _threads_set


def is_distributed_worker() -> bool:
    """True in a process started by msrun, the rank-table launcher or mpirun."""
    from geocli.runtime.launch import worker_env_rank

    return worker_env_rank() is not None


_configured = False


def setup(run_dir: Path, device: Optional[str] = None, mode: str = "graph", seed: int = 0,
          threads: Optional[int] = None, distributed: Optional[bool] = None, log=None) -> RunContext:
    """Configure MindSpore and return the :class:`RunContext` of this process.

    ``distributed=None`` means: initialise communication if this process was started by a launcher.
    Calling it again in the same process only re-seeds (MindSpore's device and mode are global).
    """
    global _configured
    import mindspore as ms

    if mode not in MODES:
        raise UsageError(f"--mode {mode!r}: choose graph or pynative")
    target = pick_device(device)  # validates the name and availability on every call
    if not _configured:
        dispatch_inline(target)
        try:
            ms.set_device(_MS_NAMES[target])
            set_threads(threads)
        except RuntimeError:
            pass  # MindSpore already ran a kernel in this process (library use): checked below
        _configured = True
    current = ms.get_context("device_target").lower()
    if current != target:
        if device is None:
            target = current
        else:
            raise UsageError(f"MindSpore already runs on {current} in this process; cannot switch to "
                             f"{target}: choose the device before running any network")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    rank, size = 0, 1
    if distributed is None:
        distributed = is_distributed_worker()
    if distributed:
        rank, size = init_communication()
    seed_everything(seed)
    return RunContext(run_dir=Path(run_dir), device=target, mode=mode, seed=seed, rank=rank,
                      group_size=size, log=log)


_comm_ready = False


def init_communication():
    """Join the collective group once (mccl on CPU, nccl on GPU, hccl on Ascend) in data-parallel mode."""
    global _comm_ready
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    if not _comm_ready:
        init()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
        _comm_ready = True
    return get_rank(), get_group_size()
