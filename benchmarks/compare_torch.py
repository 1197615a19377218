"""geoloc's networks against the same networks in PyTorch (and plain MindSpore), side by side.

Every variant runs in its own worker process (built and warmed up once), and the script times them one
after the other, interleaved round by round, with the same batch, image size and thread count, so
machine load hits all of them alike; the table reports the median images/s of the rounds and, for the
ratio of geoloc to each twin (> 1: geoloc is faster), the median of the per-round ratios (see
:func:`speed_ratio`).

Why one process per variant: a framework's speed depends on the state of the process it runs in. Most
of all on glibc's allocator: by default it hands large freed blocks back to the kernel, so an eager
framework (PyTorch) page-faults its activations in again at every step, and how often it does depends on
what ran before in the same process (measured: the PyTorch SDNet twin trained at 53-63 images/s in a
fresh process and at 96 after the PoseNet twins had run in it). ``--malloc keep`` starts the workers
with glibc tunables that keep freed memory in the process (what jemalloc/tcmalloc users get); ``--malloc
default keep`` times both.

    python benchmarks/compare_torch.py                       # every model with a twin module
    python benchmarks/compare_torch.py posenet --batch 16 --size 224 --rounds 5
    python benchmarks/compare_torch.py posenet --only infer  # inference only
    python benchmarks/compare_torch.py sdnet --malloc default keep

PyTorch is an optional extra: ``pip install -e '.[bench]'``. Without it the PyTorch rows are skipped
with that message; the MindSpore and onnxruntime rows still run.

Twin modules (one per model, ``benchmarks/twins/<model>.py``)
--------------------------------------------------------------
A module is found by its file name and must define::

    TITLE: str                       # one line, e.g. "PoseNet (GoogLeNet-BN, three regressors)"
    DEFAULTS: dict                   # optional: {"batch": 16, "size": 224} used when not given
    def input_shape(opts) -> str     # optional: the input the header names, when not size x size
    VARIANTS: tuple of str           # which of "geoloc", "mindspore", "torch", "onnxruntime" it offers
                                     # ("geoloc" is required; it is the numerator of every ratio; the
                                     # "blocked" variant, geoloc with --conv blocked, comes with it)
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

Threads: MindSpore's CPU thread count is set once per worker (``--threads``, default all cores);
PyTorch gets ``torch.set_num_threads`` and onnxruntime ``intra_op_num_threads`` with the same value.
The PyTorch worker never imports MindSpore.
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

from twins import Options, Unavailable  # noqa: E402  (the interface every twin module uses)

from geocli.errors import GeolocError  # noqa: E402

ORDER = ("geoloc", "blocked", "mindspore", "torch", "onnxruntime")
LABELS = {"geoloc": "geoloc --conv mindspore", "blocked": "geoloc --conv blocked (auto)",
          "mindspore": "plain MindSpore twin", "torch": "PyTorch twin", "onnxruntime": "geoloc --engine onnxruntime"}
#: glibc tunables per --malloc mode: "keep" stops glibc from unmapping and trimming freed memory.
MALLOC = {"default": None,
          "keep": "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"}


@dataclass
class Row:
    variant: str
    malloc: str
    worker: Optional["Worker"]
    reason: str = ""
    note: str = ""
    times: Dict[str, List[float]] = field(default_factory=lambda: {"train": [], "infer": []})


def twin_modules() -> List[str]:
    import twins

    return sorted(m.name for m in pkgutil.iter_modules(twins.__path__) if not m.name.startswith("_"))


def offered(module) -> tuple:
    """The module's variants, and "blocked" (geoloc with --conv blocked) wherever it offers "geoloc"."""
    return tuple(module.VARIANTS) + (("blocked",) if "geoloc" in module.VARIANTS else ())


def _time(fn: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _serve(conn, name: str, variant: str, opts: Options, parts) -> None:
    """Worker process: build one variant, compile and warm it up, then time calls on request."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    try:
        module = importlib.import_module(f"twins.{name}")
        if variant != "torch":  # the PyTorch worker never loads MindSpore
            import tempfile

            from geocli.runtime import blocked_conv, context

            # "geoloc" times MindSpore's convolutions; "blocked" is geoloc with --conv blocked, which is
            # what the default (auto) runs wherever the op can be built (the trainer and the inference
            # runners swap the convolutions)
            blocked_conv.choose("blocked" if variant == "blocked" else "mindspore")
            context.setup(Path(tempfile.mkdtemp(prefix="compare-torch-")), mode="graph", seed=0,
                          threads=opts.threads, distributed=False)
        bench = module.build("geoloc" if variant == "blocked" else variant, opts)
        for part in parts:  # compile and warm up outside the timed rounds
            fn = getattr(bench, part)
            if fn is not None:
                fn()
                fn()
    except Unavailable as exc:
        conn.send(("unavailable", str(exc)))
        return
    except GeolocError as exc:  # e.g. --conv blocked cannot be compiled here (no g++)
        conn.send(("unavailable", str(exc)))
        return
    except Exception as exc:  # reported in the table; the script then exits non-zero
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", bench.note))
    while True:
        request = conn.recv()
        if request is None:
            return
        part, repeats = request
        fn = getattr(bench, part)
        conn.send(None if fn is None else _time(fn, repeats))


class Worker:
    """One variant in its own process (see the module docstring for why)."""

    def __init__(self, name: str, variant: str, opts: Options, parts, malloc: str):
        import multiprocessing as mp

        spawn = mp.get_context("spawn")
        self.conn, child = spawn.Pipe()
        saved = os.environ.get("GLIBC_TUNABLES")
        if MALLOC[malloc]:  # read by glibc when the worker starts: set it only around the start
            os.environ["GLIBC_TUNABLES"] = MALLOC[malloc]
        try:
            self.proc = spawn.Process(target=_serve, args=(child, name, variant, opts, tuple(parts)), daemon=True)
            self.proc.start()
        finally:
            if saved is None:
                os.environ.pop("GLIBC_TUNABLES", None)
            else:
                os.environ["GLIBC_TUNABLES"] = saved
        child.close()

    def hello(self):
        """("ready", note) | ("unavailable", reason) | ("failed", reason), once the worker is warmed up."""
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join()
            return "failed", f"worker exited with code {self.proc.exitcode}"

    def time(self, part: str, repeats: int) -> Optional[float]:
        self.conn.send((part, repeats))
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()


def run_model(name: str, args) -> bool:
    """Time one model's variants; False when a variant failed to build or run."""
    module = importlib.import_module(f"twins.{name}")
    defaults = getattr(module, "DEFAULTS", {})
    opts = Options(batch=args.batch or defaults.get("batch", 16), size=args.size or defaults.get("size", 224),
                   threads=args.threads, seed=0)
    parts = ("train", "infer") if args.only == "both" else (args.only,)
    rows: List[Row] = []
    ok = True
    try:
        for malloc in args.malloc:
            for variant in ORDER:
                if variant not in offered(module) or (args.variants and variant not in args.variants):
                    continue
                worker = Worker(name, variant, opts, parts, malloc)
                status, detail = worker.hello()
                if status != "ready":
                    worker.close()
                    ok = ok and status != "failed"
                    rows.append(Row(variant, malloc, None, detail if status == "unavailable" else f"FAILED: {detail}"))
                    continue
                rows.append(Row(variant, malloc, worker, note=detail))
        for _ in range(args.rounds):  # interleaved: every variant once per round
            for part in parts:
                for row in rows:
                    if row.worker is not None:
                        seconds = row.worker.time(part, args.repeats)
                        if seconds is not None:
                            row.times[part].append(seconds)
    finally:
        for row in rows:
            if row.worker is not None:
                row.worker.close()
    shape = getattr(module, "input_shape", lambda o: f"{o.size}x{o.size}")(opts)
    _report(module.TITLE, shape, opts, parts, rows, args)
    return ok


def _rate(row: Row, part: str, batch: int) -> Optional[float]:
    times = row.times[part]
    return batch / statistics.median(times) if times else None


def speed_ratio(num: Row, den: Row, part: str) -> Optional[float]:
    """How many times faster ``num`` ran ``part`` than ``den``: the median of the per-round ratios.

    Each round times the variants back to back, so a slow spell of the machine (other jobs, a neighbour
    on the host) slows both sides of a round's ratio alike; the ratio of the two medians would mix rounds
    from different spells. Rows timed in different numbers of rounds fall back to that ratio of medians."""
    a, b = num.times[part], den.times[part]
    if not a or not b:
        return None
    if len(a) == len(b):
        return statistics.median(tb / ta for ta, tb in zip(a, b))
    return statistics.median(b) / statistics.median(a)


def _report(title: str, shape: str, opts: Options, parts, rows: List[Row], args) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{title}: batch {opts.batch}, {shape}, {opts.threads} threads, "
          f"median of {args.rounds} interleaved rounds x {args.repeats} calls "
          f"(load average {load:.1f} on {os.cpu_count()} cores)")
    header = f"  {'':30s}" + "".join(f"{p + ' img/s':>13s}{'geoloc/x':>10s}" for p in parts)
    for malloc in args.malloc:
        group = [r for r in rows if r.malloc == malloc]
        print(f"  malloc: {malloc}" + (f" (GLIBC_TUNABLES={MALLOC[malloc]})" if MALLOC[malloc] else " (glibc's)"))
        print(header)
        base = next((r for r in group if r.variant == "geoloc" and r.worker), None)
        for row in group:
            line = f"  {LABELS[row.variant]:30s}"
            if row.worker is None:
                print(line + f"  skipped: {row.reason}")
                continue
            for part in parts:
                rate = _rate(row, part, opts.batch)
                ratio = speed_ratio(base, row, part) if base and row is not base else None
                if rate is None:
                    line += f"{'-':>13s}{'':>10s}"
                else:
                    line += f"{rate:13.1f}{'' if ratio is None else f'{ratio:.2f}x':>10s}"
            if row.note:
                line += f"  ({row.note})"
            print(line)
        torch_row = next((r for r in group if r.variant == "torch" and r.worker), None)
        for variant in ("blocked", "onnxruntime"):  # the alternatives against PyTorch, not against geoloc
            other = next((r for r in group if r.variant == variant and r.worker), None)
            for part in parts:
                ratio = speed_ratio(other, torch_row, part) if other and torch_row else None
                if ratio:
                    print(f"  {LABELS[variant]} / PyTorch, {'training' if part == 'train' else 'inference'}: "
                          f"{ratio:.2f}x")


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
    parser.add_argument("--malloc", nargs="+", choices=tuple(MALLOC), default=["default"],
                        help="glibc allocator policy of the workers: default, keep (freed memory stays in the "
                             "process), or both")
    args = parser.parse_args(argv)

    available = twin_modules()
    for name in args.models or available:
        if name not in available:
            parser.error(f"no twin module benchmarks/twins/{name}.py (have: {', '.join(available)})")
    failed = [name for name in args.models or available if not run_model(name, args)]
    if failed:
        sys.exit(f"a variant failed to build or run: {', '.join(failed)} (see the table)")


if __name__ == "__main__":
    main()
