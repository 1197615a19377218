"""Centroids-ReID on this machine: training and embedding images/s, and query time against a large gallery
with and without centroids.

Training runs the shared trainer's compiled step (the backend's network, all four losses, Adam with the
L2 term and the centre SGD) on fixed random P x K batches, so data loading is excluded; embedding runs
the inference network (post-BN feature). Compilation is excluded (warm-up calls). The search part times
:func:`geocli.retrieval.search.topk_search` (exact, chunked) for ``--queries`` random unit queries
against ``--gallery`` random unit vectors of the network's feature size, and against one centroid per
identity (``--per-id`` images each), which is the paper's claim: a gallery of identities instead of images.
For the ratio to PyTorch, see ``benchmarks/compare_torch.py creid``.

    python benchmarks/creid.py [--size 256 128] [--ids 16] [--k 4] [--steps 5] [--gallery 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, repeats: int) -> float:
    fn()  # compile
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def search_times(dim: int, n_gallery: int, per_id: int, n_queries: int, top: int, seed: int = 0):
    from geocli.models.creid.centroids import by_identity
    from geocli.models.creid.scoring import l2_normalise
    from geocli.retrieval.search import topk_search

    rng = np.random.default_rng(seed)
    gallery = l2_normalise(rng.standard_normal((n_gallery, dim), dtype=np.float32))
    queries = l2_normalise(rng.standard_normal((n_queries, dim), dtype=np.float32))
    ids = n_gallery // per_id
    pids = rng.permutation(np.arange(n_gallery) % ids)  # per_id images of each identity, in gallery order
    build = timed(lambda: by_identity(gallery, pids), 1)  # what `retrieve --centroids true` does per call
    centroids = l2_normalise(by_identity(gallery, pids).features)
    full = timed(lambda: topk_search(queries, gallery, k=top, metric="l2"), 1)
    cent = timed(lambda: topk_search(queries, centroids, k=top, metric="l2"), 3)
    return full, cent, ids, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument("--ids", type=int, default=16, help="P identities per training batch")
    parser.add_argument("--k", type=int, default=4, help="K images per identity")
    parser.add_argument("--classes", type=int, default=751, help="training identities (Market: 751)")
    parser.add_argument("--infer-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps / inference batches")
    parser.add_argument("--width", type=int, default=64, help="ResNet50 base width (64 = ResNet50)")
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--per-id", type=int, default=4, help="gallery images per identity (for centroids)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-network", action="store_true", help="only the search timings")
    args = parser.parse_args()

    from geocli import config
    from geocli.runtime import context

    ctx = context.setup(Path(tempfile.mkdtemp(prefix="creid-bench-")), mode="graph", seed=0,
                        threads=args.threads, distributed=False)
    cfg = config.resolve("creid", "default", None, [f"data.size=[{args.size[0]},{args.size[1]}]",
                                                     f"model.width={args.width}"])
    rows = []
    dim = 32 * args.width
    if not args.skip_network:
        import mindspore as ms

        from geocli.models.creid.backend import build
        from geocli.models.creid.loss import CReIDLoss
        from geocli.runtime.plan import IndexedSource, OptimizerSpec, TrainPlan
        from geocli.runtime.trainer import Trainer

        rng = np.random.default_rng(0)
        batch = args.ids * args.k
        images = ms.Tensor(rng.standard_normal((batch, 3, *args.size)).astype(np.float32))
        labels = ms.Tensor(np.repeat(rng.choice(args.classes, args.ids, replace=False), args.k).astype(np.int32))
        net = build(cfg, args.classes, training=True)
        main_params = [p for p in net.trainable_params() if p.name != "centers"]
        o, lc = cfg["optim"], cfg["loss"]
        loss = CReIDLoss(net, args.k, margin=lc["margin"], epsilon=lc["label_smoothing"],
                         center_weight=lc["center_weight"], weight_decay=o["weight_decay"], decayed=main_params)
        def forward(x, y):  # a def, not a lambda: MindSpore's graph parser needs it on its own line
            return loss(x, y)

        plan = TrainPlan(network=net, forward=forward,
                         loss_names=["xent", "triplet", "center", "centroid", "l2"],
                         optimizers=[OptimizerSpec("main", main_params, kind="adam", lr=o["lr"]),
                                     OptimizerSpec("center", [net.centers], kind="sgd", lr=o["center_lr"])],
                         data=IndexedSource(batch, batch, lambda i, seed=0: ()), steps=1000)
        trainer = Trainer(plan, ctx)
        train_s = timed(lambda: [t.asnumpy() for t in trainer.step_fn(images, labels)], args.steps)
        rows.append(("train step", f"{batch} images", f"{batch / train_s:.1f} images/s"))
        infer = build(cfg)
        x = ms.Tensor(rng.standard_normal((args.infer_batch, 3, *args.size)).astype(np.float32))
        infer_s = timed(lambda: infer(x).asnumpy(), args.steps)
        rows.append(("embedding", f"{args.infer_batch} images", f"{args.infer_batch / infer_s:.1f} images/s"))
    full, cent, ids, build = search_times(dim, args.gallery, args.per_id, args.queries, args.top)
    rows.append(("search, full gallery", f"{args.gallery:,} x {dim}", f"{1000 * full / args.queries:.2f} ms/query"))
    rows.append(("search, centroids", f"{ids:,} x {dim}", f"{1000 * cent / args.queries:.2f} ms/query"))
    rows.append(("building the centroids", f"{args.gallery:,} -> {ids:,}", f"{build:.2f} s per retrieve call"))
    print(f"search: geocli.retrieval.search.topk_search (exact, NumPy, as `geoloc retrieve creid` uses), "
          f"{args.queries} queries, top {args.top}")
    print(f"Centroids-ReID, input {args.size[0]}x{args.size[1]}, width {args.width}, "
          f"threads {args.threads or 'all'}")
    for name, what, value in rows:
        print(f"  {name:<22} {what:<20} {value}")


if __name__ == "__main__":
    main()
