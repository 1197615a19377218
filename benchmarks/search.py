"""Retrieval speed: global top-k search (queries/s) and DELF-style local retrieval (s/query).

    python benchmarks/search.py                  # the reference sizes (about 2 min, ~3 GB RAM)
    python benchmarks/search.py --compare-ann    # also times cKDTree / brute force against faiss IVF

Global: a 100,000 x 1,024 float32 gallery, 1,000 queries, top-100 by inner product, NumPy backend.
Local: 5,000 synthetic images x 1,000 40-d features (5M descriptors, 800 MB), queries that are affine
views of database images (see geocli.retrieval.synthetic), faiss IVF-PQ votes then RANSAC of the top 100.
Timings go to stdout only; unit tests never assert on them.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from geocli.retrieval.ann import DescriptorIndex, default_cells
from geocli.retrieval.local import LocalIndex
from geocli.retrieval.search import topk_search
from geocli.retrieval.synthetic import make_local_set
from geocli.retrieval.verify import count_inliers


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _database_and_noisy_queries(n_data: int, dim: int, n_query: int, noise: float, seed: int):
    """Random unit vectors, and queries that are perturbed copies of known rows (the truth)."""
    rng = np.random.default_rng(seed)
    data = _unit(rng.standard_normal((n_data, dim), dtype=np.float32))
    truth = rng.choice(n_data, n_query, replace=False)
    queries = _unit(data[truth] + noise * rng.standard_normal((n_query, dim), dtype=np.float32))
    return data, truth, queries


def bench_global(n_gallery: int, dim: int, n_query: int, k: int) -> None:
    gallery, sources, queries = _database_and_noisy_queries(n_gallery, dim, n_query, 0.01, seed=0)
    topk_search(queries[:8], gallery, k=k)  # warm-up (BLAS threads, page faults)
    start = time.perf_counter()
    result = topk_search(queries, gallery, k=k)
    elapsed = time.perf_counter() - start
    print(f"global search: {n_gallery:,} x {dim} gallery, {n_query:,} queries, top-{k}: "
          f"{elapsed:.2f} s, {n_query / elapsed:,.0f} queries/s "
          f"(top-1 is the query's source: {np.mean(result.indices[:, 0] == sources):.0%})")


def bench_local(n_images: int, n_features: int, dim: int, n_queries: int, shortlist: int,
                nprobe) -> None:
    start = time.perf_counter()
    data = make_local_set(n_images, n_features, dim=dim, n_queries=n_queries, seed=0)
    print(f"local: generated {n_images:,} images x {n_features:,} x {dim}-d in "
          f"{time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    index = LocalIndex.build(data.db_descriptors, data.db_locations)
    print(f"local: {index.ann.kind} index over {len(index.ann):,} descriptors, "
          f"built in {time.perf_counter() - start:.1f} s")
    index.query(data.query_locations[0], data.query_descriptors[0], nprobe=nprobe, verify=shortlist)
    times, correct, inliers_true, inliers_other = [], 0, [], []
    for q, source in enumerate(data.query_sources):
        start = time.perf_counter()
        result = index.query(data.query_locations[q], data.query_descriptors[q], nprobe=nprobe,
                             verify=shortlist)
        times.append(time.perf_counter() - start)
        correct += int(result.images[0] == source)
        inliers_true.append(int(result.inliers[result.images == source].max(initial=0)))
        inliers_other.append(int(result.inliers[result.images != source].max(initial=0)))
    times = np.array(times)
    print(f"local retrieval: {n_queries} queries, {n_features} features each, verify top {shortlist}: "
          f"mean {times.mean():.3f} s/query, median {np.median(times):.3f}, max {times.max():.3f}; "
          f"top-1 correct {correct}/{n_queries}; inliers true image median {np.median(inliers_true):.0f}, "
          f"best wrong image max {max(inliers_other)}")


def bench_verification(n_images: int, n_pairs: int) -> None:
    """Worst case for the verification stage: every short-listed image has many putative
    correspondences and all of them are outliers, so RANSAC runs its full iteration budget."""
    rng = np.random.default_rng(2)
    pairs = [(rng.uniform(0, 640, (n_pairs, 2)), rng.uniform(0, 640, (n_pairs, 2)))
             for _ in range(n_images)]
    start = time.perf_counter()
    for query_xy, db_xy in pairs:
        count_inliers(query_xy, db_xy)
    print(f"verification worst case: {n_images} images x {n_pairs} outlier correspondences: "
          f"{time.perf_counter() - start:.3f} s")


def compare_ann(n_points: int, dim: int, n_query: int) -> None:
    """The measurement behind faiss IVF (geocli/retrieval/ann.py). Before the hand-written NumPy IVF was
    removed, this also timed it on the same data: see docs/delf.md for both sets of figures."""
    from scipy.spatial import cKDTree  # noqa: PLC0415 - only for this comparison

    data, truth, queries = _database_and_noisy_queries(n_points, dim, n_query, 0.05, seed=1)

    def report(label, seconds, found, n_timed=n_query):
        print(f"  {label:<28} {seconds * n_query / n_timed:7.2f} s per {n_query} query descriptors, "
              f"recall@1 {np.mean(found == truth[:n_timed]):.3f}")

    print(f"ANN comparison on {n_points:,} x {dim}-d unit descriptors (1-NN, bound 0.8):")
    start = time.perf_counter()
    found = topk_search(queries, data, k=1, metric="l2").indices[:, 0]
    report("brute force (topk_search)", time.perf_counter() - start, found)
    tree = cKDTree(data)
    n_timed = max(1, n_query // 10)  # exact cKDTree is slow: time a tenth, scale up
    for eps in (0.0, 1.0):
        start = time.perf_counter()
        _, idx = tree.query(queries[:n_timed], k=1, eps=eps, distance_upper_bound=0.8, workers=-1)
        report(f"cKDTree eps={eps}", time.perf_counter() - start, idx, n_timed)
    start = time.perf_counter()
    ann = DescriptorIndex.build(data, kind="ivf", n_cells=default_cells(len(data)))
    print(f"  faiss IndexIVFFlat ({default_cells(len(data))} cells): built in {time.perf_counter() - start:.1f} s")
    for nprobe in (4, 8, 16):
        start = time.perf_counter()
        _, rows = ann.search(queries, k=1, nprobe=nprobe, max_distance=0.8)
        report(f"faiss IVF nprobe={nprobe}", time.perf_counter() - start, rows[:, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--local-queries", type=int, default=20)
    parser.add_argument("--shortlist", type=int, default=100)
    parser.add_argument("--nprobe", type=int, default=None, help="default: the index's own (16 ivf-pq, 8 ivf)")
    parser.add_argument("--compare-ann", action="store_true", help="time cKDTree/brute force vs faiss IVF")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, numpy {np.__version__}")
    bench_global(args.gallery, args.dim, args.queries, k=100)
    bench_local(args.images, args.features, 40, args.local_queries, args.shortlist, args.nprobe)
    bench_verification(args.shortlist, 200)
    if args.compare_ann:
        compare_ann(1_000_000, 40, 1000)


if __name__ == "__main__":
    main()
