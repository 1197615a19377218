"""VIGOR throughput on this machine: training panoramas/s (stage-2 step: panorama + positive + semi-positive
tile, all three losses, Adam) and descriptor images/s of each branch, geoloc against its PyTorch twin
(benchmarks/twins/vigor.py), interleaved round by round in one process so machine load hits both alike.
Compilation is excluded (warm-up calls); data loading is excluded (fixed random batches).

    python benchmarks/vigor.py [--batch 8] [--size 64] [--rounds 3] [--repeats 2] [--threads 2]

``--size`` is the tile side; panoramas are size x 2 size (the reference trains at 320 / 320 x 640).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def _timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    from geocli.runtime import context
    from twins import Options, Unavailable
    from twins import vigor as twin

    context.setup(Path(tempfile.mkdtemp(prefix="bench-vigor-")), mode="graph", seed=0, threads=args.threads,
                  distributed=False)
    opts = Options(batch=args.batch, size=args.size, threads=args.threads)
    benches = {}
    for variant in twin.VARIANTS:
        try:
            benches[variant] = twin.build(variant, opts)
        except Unavailable as exc:
            print(f"{variant}: skipped ({exc})")
    for bench in benches.values():  # warm-up / compile
        bench.train()
        bench.infer()
    times = {v: {"train": [], "infer": []} for v in benches}
    for _ in range(args.rounds):
        for variant, bench in benches.items():
            times[variant]["train"].append(_timed(bench.train, args.repeats))
            times[variant]["infer"].append(_timed(bench.infer, args.repeats))
    print(f"VIGOR, batch {args.batch}, tile {args.size} px, panorama {args.size}x{2 * args.size}, "
          f"{args.threads} threads, median of {args.rounds} rounds")
    rates = {}
    for variant in benches:
        train = args.batch / statistics.median(times[variant]["train"])
        infer = 2 * args.batch / statistics.median(times[variant]["infer"])  # ground + satellite images
        rates[variant] = (train, infer)
        print(f"  {variant:8s} training {train:8.2f} panoramas/s   descriptors {infer:8.2f} images/s")
    if "torch" in rates:
        g, t = rates["geoloc"], rates["torch"]
        print(f"  geoloc / PyTorch: training {g[0] / t[0]:.2f}x, descriptors {g[1] / t[1]:.2f}x")


if __name__ == "__main__":
    main()
