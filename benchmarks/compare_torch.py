"""geoloc's networks against the same networks in PyTorch (and plain MindSpore), side by side.

Every timed variant runs in THIS process, one after the other and interleaved round by round, with the
same batch, image size and thread count, so machine load hits all of them alike; the table reports the
median images/s of the rounds and the ratio of geoloc to each twin (> 1: geoloc is faster).

    python benchmarks/compare_torch.py                       # every model with a twin module
    python benchmarks/compare_torch.py posenet --batch 16 --size 224 --rounds 5
    python benchmarks/compare_torch.py posenet --only infer  # inference only

PyTorch is an optional extra: ``pip install -e '.[bench]'``. Without it the PyTorch rows are skipped
with that message; the MindSpore and onnxruntime rows still run.

Twin modules (one per model, ``benchmarks/twins/<model>.py``)
--------------------------------------------------------------
A module is found by its file name and must define::

    TITLE: str                       # one line, e.g. "PoseNet (GoogLeNet-BN, three regressors)"
    DEFAULTS: dict                   # optional: {"batch": 16, "size": 224} used when not given
    VARIANTS: tuple of str           # which of "geoloc", "mindspore", "torch", "onnxruntime" it offers
                                     # ("geoloc" is required; it is the numerator of every ratio)
    def build(variant: str, opts: Options) -> Bench

``build`` imports what it needs lazily (torch only inside the "torch" variant) and returns a
:class:`twins.Bench` whose callables run ONE training step / ONE inference batch and block until the result
is on the host (``.asnumpy()``, ``.item()``, or the NumPy outputs of onnxruntime). ``train`` or ``infer``
may be None when a variant does not time that part. The geoloc variant must use the shared code paths a
user runs: the backend's network and loss and ``geocli.runtime.trainer.Trainer.step_fn`` for
training, the backend's inference network (or ``geocli.runtime.engine.runner``) for inference, on fixed
random batches (data loading is excluded everywhere). Twins copy the layer shapes, loss, optimizer and
clipping of the geoloc network, written as a user of that framework would write them. Raise
``twins.Unavailable("reason")`` when a variant cannot run here (a missing package); the table then prints
the reason in place of the figures.

Threads: MindSpore's CPU thread count is set once for the process (``--threads``, default all cores);
PyTorch gets ``torch.set_num_threads`` and onnxruntime ``intra_op_num_threads`` with the same value.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from twins import Bench, Options, Unavailable  # noqa: E402  (the interface every twin module uses)

ORDER = ("geoloc", "mindspore", "torch", "onnxruntime")
LABELS = {"geoloc": "geoloc (MindSpore)", "mindspore": "plain MindSpore twin", "torch": "PyTorch twin",
          "onnxruntime": "geoloc --engine onnxruntime"}


@dataclass
class Row:
    variant: str
    bench: Optional[Bench]
    reason: str = ""
    times: Dict[str, List[float]] = field(default_factory=lambda: {"train": [], "infer": []})


def twin_modules() -> List[str]:
    import twins

    return sorted(m.name for m in pkgutil.iter_modules(twins.__path__) if not m.name.startswith("_"))


def _time(fn: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run_model(name: str, args) -> None:
    module = importlib.import_module(f"twins.{name}")
    defaults = getattr(module, "DEFAULTS", {})
    opts = Options(batch=args.batch or defaults.get("batch", 16), size=args.size or defaults.get("size", 224),
                   threads=args.threads, seed=0)
    parts = ("train", "infer") if args.only == "both" else (args.only,)
    rows: List[Row] = []
    for variant in ORDER:
        if variant not in module.VARIANTS or (args.variants and variant not in args.variants):
            continue
        try:
            bench = module.build(variant, opts)
        except Unavailable as exc:
            rows.append(Row(variant, None, str(exc)))
            continue
        for part in parts:  # compile and warm up outside the timed rounds
            fn = getattr(bench, part)
            if fn is not None:
                fn()
                fn()
        rows.append(Row(variant, bench))
    for _ in range(args.rounds):  # interleaved: every variant once per round
        for part in parts:
            for row in rows:
                fn = getattr(row.bench, part) if row.bench else None
                if fn is not None:
                    row.times[part].append(_time(fn, args.repeats))
    _report(module.TITLE, opts, parts, rows, args)


def _rate(row: Row, part: str, batch: int) -> Optional[float]:
    times = row.times[part]
    return batch / statistics.median(times) if times else None


def _report(title: str, opts: Options, parts, rows: List[Row], args) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{title}: batch {opts.batch}, {opts.size}x{opts.size}, {opts.threads} threads, "
          f"median of {args.rounds} interleaved rounds x {args.repeats} calls "
          f"(load average {load:.1f} on {os.cpu_count()} cores)")
    base = next((r for r in rows if r.variant == "geoloc" and r.bench), None)
    header = f"  {'':30s}" + "".join(f"{p + ' img/s':>13s}{'geoloc/x':>10s}" for p in parts)
    print(header)
    for row in rows:
        line = f"  {LABELS[row.variant]:30s}"
        if row.bench is None:
            print(line + f"  skipped: {row.reason}")
            continue
        for part in parts:
            rate = _rate(row, part, opts.batch)
            ref = _rate(base, part, opts.batch) if base else None
            if rate is None:
                line += f"{'-':>13s}{'':>10s}"
            else:
                ratio = "" if row is base or ref is None else f"{ref / rate:.2f}x"
                line += f"{rate:13.1f}{ratio:>10s}"
        if row.bench.note:
            line += f"  ({row.bench.note})"
        print(line)
    onnx = next((r for r in rows if r.variant == "onnxruntime" and r.bench), None)
    torch_row = next((r for r in rows if r.variant == "torch" and r.bench), None)
    if onnx and torch_row and "infer" in parts:
        print(f"  onnxruntime / PyTorch inference: {_rate(onnx, 'infer', opts.batch) / _rate(torch_row, 'infer', opts.batch):.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="twin modules to run (default: all in benchmarks/twins)")
    parser.add_argument("--batch", type=int, default=None, help="images per step / inference batch")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the median is reported)")
    parser.add_argument("--repeats", type=int, default=3, help="calls per variant and round")
    parser.add_argument("--only", choices=("both", "train", "infer"), default="both")
    parser.add_argument("--variants", nargs="*", choices=ORDER, default=None, help="subset of variants")
    args = parser.parse_args(argv)

    import tempfile

    from geocli.runtime import context

    context.setup(Path(tempfile.mkdtemp(prefix="compare-torch-")), mode="graph", seed=0, threads=args.threads,
                  distributed=False)
    available = twin_modules()
    for name in args.models or available:
        if name not in available:
            parser.error(f"no twin module benchmarks/twins/{name}.py (have: {', '.join(available)})")
        run_model(name, args)


if __name__ == "__main__":
    main()
