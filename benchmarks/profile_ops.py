"""Where a training step's time goes, by operator type: geoloc (MindSpore's profiler) beside its PyTorch
twin (torch.profiler), on the same fixed batch as ``benchmarks/compare_torch.py``.

    python benchmarks/profile_ops.py posenet                 # batch 16, 224 px, 2 threads, 3 profiled steps
    python benchmarks/profile_ops.py vigor --part infer --top 8

Each framework's own profiler times its kernels, so the two columns are comparable in their shares and,
on a quiet machine, in milliseconds. Operator names differ between the frameworks (MindSpore's
``Conv2DBackpropFilter`` is part of PyTorch's ``aten::convolution_backward``); the table lists each
side's own names, most expensive first, with their share of the profiled time.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from twins import Options  # noqa: E402

OpTimes = List[Tuple[str, float]]  # (operator type, milliseconds per profiled call), most expensive first


def profile_mindspore(fn, calls: int) -> OpTimes:
    from mindspore import Profiler

    out = Path(tempfile.mkdtemp(prefix="profile-ops-ms-"))
    profiler = Profiler(output_path=str(out))
    for _ in range(calls):
        fn()
    profiler.analyse()
    table = next(out.rglob("cpu_op_type_info_*.csv"), None)
    if table is None:
        raise SystemExit(f"MindSpore's profiler wrote no cpu_op_type_info table under {out}")
    with open(table, newline="") as handle:
        rows = [(r["op_type"], float(r["total_compute_time"]) / calls) for r in csv.DictReader(handle)]
    return sorted(rows, key=lambda r: -r[1])


def profile_torch(fn, calls: int) -> OpTimes:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    totals = {}
    for event in prof.key_averages():
        totals[event.key] = event.self_cpu_time_total / 1000.0 / calls  # us -> ms
    del torch
    return sorted(totals.items(), key=lambda r: -r[1])


def _print(title: str, ours: OpTimes, theirs: OpTimes, top: int) -> None:
    total_ours, total_theirs = sum(t for _, t in ours), sum(t for _, t in theirs)
    print(f"\n{title}")
    print(f"  {'geoloc (MindSpore) op':34s}{'ms/call':>9s}{'share':>7s}    {'PyTorch op':34s}{'ms/call':>9s}{'share':>7s}")
    for i in range(top):
        left = f"  {ours[i][0][:34]:34s}{ours[i][1]:9.1f}{ours[i][1] / total_ours:7.0%}" if i < len(ours) else " " * 52
        right = (f"    {theirs[i][0][:34]:34s}{theirs[i][1]:9.1f}{theirs[i][1] / total_theirs:7.0%}"
                 if i < len(theirs) else "")
        print(left + right)
    print(f"  {'all kernels':34s}{total_ours:9.1f}{'':7s}    {'all ops (self time)':34s}{total_theirs:9.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a twin module in benchmarks/twins (posenet, vigor, sdnet, creid, delf)")
    parser.add_argument("--part", choices=("train", "infer"), default="train")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--calls", type=int, default=3, help="profiled calls, after two warm-up calls")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)

    from geocli.runtime import context

    context.setup(Path(tempfile.mkdtemp(prefix="profile-ops-")), mode="graph", seed=0, threads=args.threads,
                  distributed=False)
    module = importlib.import_module(f"twins.{args.model}")
    defaults = getattr(module, "DEFAULTS", {})
    opts = Options(batch=args.batch or defaults.get("batch", 16), size=args.size or defaults.get("size", 224),
                   threads=args.threads)
    tables = []
    for variant, profiler in (("geoloc", profile_mindspore), ("torch", profile_torch)):
        fn = getattr(module.build(variant, opts), args.part)
        if fn is None:
            raise SystemExit(f"the {variant} twin of {args.model} does not time {args.part!r}")
        fn()
        fn()
        tables.append(profiler(fn, args.calls))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    _print(f"{module.TITLE}: {args.part}, batch {opts.batch}, {opts.size} px, {opts.threads} threads, "
           f"{args.calls} profiled calls (load average {load:.1f})", tables[0], tables[1], args.top)


if __name__ == "__main__":
    main()
