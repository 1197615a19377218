"""SDNet throughput on this machine: training pairs/s (the shared trainer's compiled step: both branches,
Lower, decoder, the full loss, three Adam groups) and descriptor patches/s (one branch, eval mode),
on fixed random batches (no data loading), graph mode, compilation excluded (warm-up calls).
For the ratio to a PyTorch twin run ``python benchmarks/compare_torch.py sdnet``.

    python benchmarks/sdnet.py [--batch 64] [--steps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64,
                        help="pairs per training step / patches per inference batch")
    parser.add_argument("--steps", type=int, default=5, help="timed steps / batches")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from geocli.runtime.context import setup

    threads = args.threads or os.cpu_count() or 1
    setup(Path("."), device="cpu", mode="graph", seed=0, threads=threads, distributed=False)
    from posenet import timed  # warm-up twice, then the mean of the timed calls
    from twins import Options
    from twins.sdnet import geoloc_bench

    bench = geoloc_bench(Options(batch=args.batch, size=64, threads=threads))
    step = timed(bench.train, args.steps)
    infer = timed(bench.infer, args.steps)
    print(f"SDNet, {threads} threads: training {args.batch / step:.1f} pairs/s ({step * 1000:.0f} ms/step of "
          f"{args.batch}); descriptors {args.batch / infer:.1f} patches/s "
          f"({infer * 1000:.0f} ms/batch of {args.batch})")


if __name__ == "__main__":
    main()
