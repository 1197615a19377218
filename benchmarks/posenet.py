"""PoseNet throughput at 224x224 on this machine: training and inference images per second (graph mode).

Training runs the shared trainer's compiled step (forward through all three regressors, the port's loss,
Adagrad with weight decay, per-tensor gradient clipping) on fixed random batches, so the number excludes
data loading; inference runs the inference network (main regressor only) through geocli.runtime.engine,
as eval and retrieve do. Compilation is excluded: the first calls are warm-up. The same variants are
compared with PyTorch and plain MindSpore in benchmarks/compare_torch.py.

    python benchmarks/posenet.py [--train-batch 16] [--infer-batch 16] [--steps 8] [--onnx]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def timed(fn, repeats: int) -> float:
    fn()  # compile
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--infer-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps / inference batches")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--onnx", action="store_true", help="also time --engine onnxruntime inference")
    args = parser.parse_args()

    from geocli import config
    from geocli.runtime import context

    ctx = context.setup(Path(tempfile.mkdtemp(prefix="posenet-bench-")), mode="graph", seed=0,
                        threads=args.threads, distributed=False)
    from twins import Options
    from twins.posenet import _geoloc, _onnxruntime

    crop = 224
    threads = ctx_threads()
    cfg = config.load_preset("posenet", "default")
    bench = _geoloc(Options(args.train_batch, crop, threads))
    train_s = timed(bench.train, args.steps)
    if args.infer_batch != args.train_batch:
        bench = _geoloc(Options(args.infer_batch, crop, threads))
    infer_s = timed(bench.infer, args.steps)
    single_s = timed(_geoloc(Options(1, crop, threads)).infer, args.steps)
    onnx_s = timed(_onnxruntime(Options(args.infer_batch, crop, threads)).infer, args.steps) if args.onnx else None
    print(f"PoseNet (default preset, {crop}x{crop}, {ctx.device}, graph mode, "
          f"{threads} threads, {cfg['optim']['kind']} + clip {cfg['optim']['clip_norm']})")
    print(f"  training   batch {args.train_batch:3d}: {args.train_batch / train_s:7.1f} images/s "
          f"({train_s * 1000:.0f} ms/step)")
    print(f"  inference  batch {args.infer_batch:3d}: {args.infer_batch / infer_s:7.1f} images/s")
    print(f"  inference  batch   1: {1 / single_s:7.1f} images/s ({single_s * 1000:.0f} ms/image)")
    if onnx_s is not None:
        print(f"  inference  batch {args.infer_batch:3d}: {args.infer_batch / onnx_s:7.1f} images/s with --engine onnxruntime")


def ctx_threads() -> int:
    from geocli.runtime import context

    return int(context._threads_set or 1)


if __name__ == "__main__":
    main()
