"""Twin networks for benchmarks/compare_torch.py: one module per geoloc model (see that script's
docstring for the interface). These types are shared by the script and every twin module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


class Unavailable(Exception):
    """A variant cannot run in this environment; the message says what to install."""


@dataclass
class Options:
    batch: int
    size: int
    threads: int
    seed: int = 0


@dataclass
class Bench:
    train: Optional[Callable[[], object]] = None  # one training step on a fixed batch of ``batch`` images
    infer: Optional[Callable[[], object]] = None  # one inference batch of ``batch`` images
    note: str = ""


def import_torch(threads: int):
    """PyTorch with ``threads`` intra-op threads, or :class:`Unavailable` naming the extra to install."""
    try:
        import torch
    except ImportError:
        raise Unavailable("PyTorch is not installed: pip install -e '.[bench]'") from None
    torch.set_num_threads(threads)
    return torch


# ---- the geoloc side, shared by every twin module -------------------------------------------------------
def geoloc_train(network, forward, loss_names, optimizers, batch, prefix: str = "twin"):
    """One step of the shared trainer's compiled step (``Trainer.step_fn``) on the fixed NumPy ``batch``.

    ``forward(*batch) -> (total, *terms)`` and ``optimizers`` (``OptimizerSpec`` list) are the backend's,
    exactly as its ``train_plan`` builds them; data loading is left out."""
    import tempfile
    from pathlib import Path

    import mindspore as ms

    from geocli.runtime.plan import IndexedSource, RunContext, TrainPlan
    from geocli.runtime.trainer import Trainer

    plan = TrainPlan(network=network, forward=forward, loss_names=list(loss_names), optimizers=list(optimizers),
                     data=IndexedSource(1, 1, lambda idx, seed: (), drop_last=False), steps=100_000)
    trainer = Trainer(plan, RunContext(run_dir=Path(tempfile.mkdtemp(prefix=f"{prefix}-"))))
    tensors = [ms.Tensor(a) for a in batch]

    def train():
        return [t.asnumpy() for t in trainer.step_fn(*tensors)]

    return train


def engine_runner(engine: str, backend, cfg, network, opts: Options, graph: str = ""):
    """``geocli.runtime.engine.runner`` as eval/retrieve call it, with ONNX files in a fresh temporary
    cache; :class:`Unavailable` when onnxruntime is asked for and not installed."""
    import tempfile
    from pathlib import Path

    from geocli.runtime import engine as engines

    if engine == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise Unavailable("onnxruntime is not installed: pip install onnxruntime") from None
    return engines.runner(engine, backend, cfg, network, graph=graph, batch_size=opts.batch, threads=opts.threads,
                          cache_dir=Path(tempfile.mkdtemp(prefix="twin-onnx-")))


def geoloc_infer(engine: str, backend, cfg, network, batch, opts: Options, graph: str = ""):
    """One inference batch through ``geocli.runtime.engine.runner`` (what eval/retrieve run)."""
    run = engine_runner(engine, backend, cfg, network, opts, graph)

    def infer():
        return run(*batch)

    return infer
