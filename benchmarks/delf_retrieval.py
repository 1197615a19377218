"""DELF speed: extraction images/s (MindSpore and onnxruntime vs a PyTorch twin, and the three padding
modes), seconds per query on a 5,000-image index, and build time / memory of a 1 M-vector faiss index.

    python benchmarks/delf_retrieval.py                    # everything (about 15 min on 2 idle cores)
    python benchmarks/delf_retrieval.py --only extract     # or: query, build
    python benchmarks/delf_retrieval.py --only extract --images 2 --side 1024 --pads bucket,none
    python benchmarks/delf_retrieval.py --only query --ann ivf-pq,ivf --nprobe 8,16 --refine 1,2,4

Extraction runs the untrained DELF extraction network (the speed does not depend on the weights) on
``--images`` random photographs of ``--side`` px (4:3), all 7 scales. The PyTorch twin is the same
computation in plain torch (ResNet50 to conv4, the 1x1/2 subsampling and the attention convs) on the
same bucketed canvases. Query speed uses the synthetic local-feature database of
``geocli.retrieval.synthetic`` (5,000 images x 1,000 40-d descriptors, 60 neighbours, RANSAC of the 100
most-voted images) with each index kind of ``--ann`` (default: ivf-pq, the default above 200k
descriptors, and ivf, the IVF-Flat it replaced), and prints per setting the wall and CPU seconds per
query (split into the faiss search and votes + RANSAC), top-1 correct, and the recall of the exact
60-NN (brute force over 500 query descriptors). Figures go to stdout; say what else ran on the machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time

import numpy as np


def _rss_mb() -> float:
    """Current resident memory (VmRSS), MB; the peak (ru_maxrss) would include earlier temporaries."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _images(n: int, side: int):
    rng = np.random.default_rng(0)
    h = side * 3 // 4
    base = rng.uniform(0, 255, (h // 8, side // 8, 3))
    return [np.clip(np.kron(base, np.ones((8, 8, 1))) + rng.normal(0, 20, (h, side, 3)), 0, 255).astype(np.uint8)
            for _ in range(n)]


def _torch_twin():
    """ResNet50 (Keras-style strides) to conv4_x, the 1x1/2 max-pool, attention 1024->512->1 + softplus,
    in plain torch (no torchvision needed)."""
    import torch
    from torch import nn

    def bottleneck(cin: int, mid: int, stride: int) -> nn.Module:
        out = 4 * mid

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(cin, mid, 1, stride), nn.BatchNorm2d(mid), nn.ReLU(),
                                          nn.Conv2d(mid, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.ReLU(),
                                          nn.Conv2d(mid, out, 1), nn.BatchNorm2d(out))
                self.short = (nn.Sequential(nn.Conv2d(cin, out, 1, stride), nn.BatchNorm2d(out))
                              if stride != 1 or cin != out else nn.Identity())

            def forward(self, x):
                return torch.relu(self.body(x) + self.short(x))

        return Block()

    layers = [nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2)]
    cin = 64
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2)):
        for b in range(blocks):
            layers.append(bottleneck(cin, mid, stride if b == 0 else 1))
            cin = 4 * mid
    body = nn.Sequential(*layers, nn.MaxPool2d(1, 2))
    attention = nn.Sequential(nn.Conv2d(1024, 512, 1), nn.BatchNorm2d(512), nn.ReLU(), nn.Conv2d(512, 1, 1),
                              nn.Softplus())

    class Twin(nn.Module):
        def forward(self, x):
            block3 = body(x)
            return attention(block3), block3

    net = Twin().eval()
    torch.set_num_threads(os.cpu_count() or 1)

    def run(batch: np.ndarray):
        with torch.no_grad():
            prob, feats = net(torch.from_numpy(batch))
        return prob.numpy(), feats.numpy()

    return run


def bench_extract(n_images: int, side: int, pads, engines) -> None:
    import importlib.util
    import tempfile
    from pathlib import Path

    from geocli import api
    from geocli.models.delf import extract as ex
    from geocli.models.delf.tasks import extraction_network

    images = _images(n_images, side)
    api._context(Path("/tmp/geoloc-bench-delf"), None, "graph", 0, None, quiet=True, distributed=False)
    loaded = api.load_model("delf", None)
    rates = {}
    for engine in engines:
        if engine == "onnxruntime" and not all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx")):
            print("extract onnxruntime: skipped (pip install onnx onnxruntime)")
            continue
        start = time.perf_counter()  # as make_extractor runs it: folded on MindSpore, exported on onnxruntime
        network = extraction_network(loaded.cfg, loaded.network, engine,
                                     cache_dir=Path(tempfile.mkdtemp(prefix="bench-delf-onnx-")))
        prepare_s = time.perf_counter() - start
        for pad in pads:
            extractor = ex.Extractor(network, ex.settings({**loaded.cfg["extract"], "pad": pad}))
            start = time.perf_counter()
            extractor.extract(images[0])  # MindSpore compiles one graph per canvas shape
            first_s = time.perf_counter() - start
            start = time.perf_counter()
            n_feats = [len(extractor.extract(image).scores) for image in images]
            seconds = time.perf_counter() - start
            rates[(engine, pad)] = n_images / seconds
            print(f"extract {engine:<11} pad={pad:<6} {side}x{side * 3 // 4}: {rates[(engine, pad)]:.3f} images/s "
                  f"({seconds / n_images:.2f} s/image; fold or export {prepare_s:.1f} s, first image {first_s:.1f} s, "
                  f"{len(extractor.shapes)} canvases, {np.mean(n_feats):.0f} features/image)")
    try:
        twin = _torch_twin()
    except ImportError as exc:
        print(f"extract PyTorch twin: skipped ({exc})")
        return
    extractor = ex.Extractor(twin, ex.settings({**loaded.cfg["extract"], "pad": "bucket"}))
    extractor.extract(images[0])
    start = time.perf_counter()
    for image in images:
        extractor.extract(image)
    rate = n_images / (time.perf_counter() - start)
    ratios = ", ".join(f"{engine}/PyTorch {rates[(engine, 'bucket')] / rate:.2f}x"
                       for engine in engines if (engine, "bucket") in rates)
    print(f"extract PyTorch twin pad=bucket: {rate:.3f} images/s" + (f" ({ratios})" if ratios else ""))


def _exact_neighbours(data, n_queries: int, per_query: int, k: int):
    """Exact k-NN (faiss brute force) of the first ``per_query`` descriptors of the first ``n_queries``
    queries: the truth that an approximate index's recall is measured against."""
    from geocli.retrieval.search import import_faiss

    faiss = import_faiss()

    x = np.concatenate(data.db_descriptors).astype(np.float32)
    q = np.concatenate([d[:per_query] for d in data.query_descriptors[:n_queries]]).astype(np.float32)
    start = time.process_time()
    dist, rows = faiss.knn(q, x, k)
    print(f"query: exact {k}-NN of {len(q)} query descriptors for the recall figures "
          f"({time.process_time() - start:.0f} CPU s)")
    # True correspondences (query descriptors made from a database descriptor) lie about 0.3 from their
    # source; at 5 M random 40-d unit vectors, ~40 unrelated ones also fall within DELF's 0.8 of any
    # query descriptor, but almost none within 0.5.
    return q, rows, np.sqrt(np.maximum(dist[:, 0], 0)) < 0.5


def _recall(rows: np.ndarray, truth: np.ndarray, matched: np.ndarray):
    """(share of the exact k-NN found, share of true correspondences whose exact 1-NN was found)."""
    overlap = np.mean([np.intersect1d(r, t).size / t.size for r, t in zip(rows, truth)])
    first = np.mean([t[0] in r for r, t in zip(rows[matched], truth[matched])]) if matched.any() else np.nan
    return overlap, first


def bench_query(n_images: int, n_features: int, n_queries: int, verify: int, kinds, nprobes, refines,
                cells, knn: int, recall_queries: int, pq_m=None) -> None:
    from geocli.retrieval.ann import default_cells
    from geocli.retrieval.local import LocalIndex
    from geocli.retrieval.synthetic import make_local_set

    data = make_local_set(n_images, n_features, dim=40, n_queries=n_queries, seed=0)
    truth = _exact_neighbours(data, recall_queries, 250, knn) if recall_queries else None
    n_cells = cells or default_cells(n_images * n_features)
    for kind in kinds:
        before = _rss_mb()
        start, start_cpu = time.perf_counter(), time.process_time()
        index = LocalIndex.build(data.db_descriptors, data.db_locations, kind=kind, n_cells=n_cells,
                                 pq_m=pq_m)
        print(f"query: faiss {kind} ({n_cells} cells) over {len(index.ann):,} descriptors of {n_images:,} "
              f"images built in {time.perf_counter() - start:.1f} s wall, {time.process_time() - start_cpu:.1f} "
              f"CPU s; resident memory +{_rss_mb() - before:.0f} MB")
        search, spent = index.ann.search, []

        def timed_search(*args, **kwargs):
            begin = time.process_time()
            out = search(*args, **kwargs)
            spent.append(time.process_time() - begin)
            return out

        index.ann.search = timed_search
        for nprobe, refine in [(n, r) for n in nprobes for r in (refines if kind == "ivf-pq" else [None])]:
            recall = ""
            if truth is not None:
                overlap, first = _recall(search(truth[0], k=knn, nprobe=nprobe, refine=refine)[1], truth[1],
                                         truth[2])
                recall = f"; recall of the exact {knn}-NN {overlap:.3f}, of true correspondences {first:.3f}"
            index.query(data.query_locations[0], data.query_descriptors[0], k=knn, nprobe=nprobe, verify=verify,
                        refine=refine)
            spent.clear()
            times, cpu, correct, inliers = [], [], 0, []
            for q, source in enumerate(data.query_sources):
                start, start_cpu = time.perf_counter(), time.process_time()
                result = index.query(data.query_locations[q], data.query_descriptors[q], k=knn, nprobe=nprobe,
                                     verify=verify, refine=refine)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                correct += int(result.images[0] == source)
                inliers.append(int(result.inliers[0]))
            times = np.asarray(times)
            setting = f"nprobe {nprobe or index.ann.nprobe}" + (f" refine {refine:g}" if refine else "")
            print(f"query: {kind} {setting}: {n_queries} queries x {n_features} descriptors, {knn}-NN, "
                  f"verify top {verify}: mean {times.mean():.3f} s/query wall (median {np.median(times):.3f}, "
                  f"max {times.max():.3f}), {np.mean(cpu):.3f} CPU s/query (all threads; search "
                  f"{np.mean(spent):.3f}, votes + RANSAC {np.mean(cpu) - np.mean(spent):.3f}); top-1 correct "
                  f"{correct}/{n_queries}, median inliers {np.median(inliers):.0f}{recall}", flush=True)
        del index, search, timed_search
        gc.collect()


def bench_build(n_vectors: int, dim: int, kinds) -> None:
    from geocli.retrieval.ann import DescriptorIndex, default_cells

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_vectors, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    from geocli.retrieval.search import import_faiss

    faiss = import_faiss()

    for kind in kinds:
        before = _rss_mb()
        start, start_cpu = time.perf_counter(), time.process_time()
        index = DescriptorIndex.build(x, kind=kind)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        size_mb = faiss.serialize_index(index.faiss_index).nbytes / 2**20
        print(f"build: faiss {kind}, {n_vectors:,} x {dim}-d, {default_cells(n_vectors)} cells: {seconds:.1f} s wall, "
              f"{cpu:.1f} CPU s; resident memory +{_rss_mb() - before:.0f} MB (the vectors themselves: "
              f"{x.nbytes / 2**20:.0f} MB); index file {size_mb:.0f} MB", flush=True)
        del index
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--only", choices=("extract", "query", "build"))
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--pads", default="bucket,port,none")
    parser.add_argument("--engines", default="mindspore,onnxruntime", help="extraction engines (comma-separated)")
    parser.add_argument("--db-images", type=int, default=5000)
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--verify", type=int, default=100)
    parser.add_argument("--ann", default="ivf-pq,ivf", help="index kinds to compare (comma-separated)")
    parser.add_argument("--nprobe", default="", help="cells probed, comma-separated values to compare "
                        "(default: each index's own, 16 for ivf-pq and 8 for ivf)")
    parser.add_argument("--refine", default="2", help="ivf-pq: candidates re-ranked, x k (comma-separated)")
    parser.add_argument("--pq-m", type=int, default=None, help="ivf-pq: sub-quantizers (default d / 2)")
    parser.add_argument("--cells", type=int, default=None, help="IVF cells (default sqrt of the descriptors)")
    parser.add_argument("--knn", type=int, default=60)
    parser.add_argument("--recall-queries", type=int, default=2,
                        help="queries whose first 250 descriptors get exact neighbours for recall (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="faiss threads (default: all CPUs)")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=40)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if args.threads:
        from geocli.retrieval.search import import_faiss  # threads wait passively (see there)

        import_faiss().omp_set_num_threads(args.threads)
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at start")
    if args.only in (None, "extract"):
        bench_extract(args.images, args.side, args.pads.split(","), args.engines.split(","))
    if args.only in (None, "query"):
        nprobes = [int(n) for n in args.nprobe.split(",")] if args.nprobe else [None]
        bench_query(args.db_images, args.features, args.queries, args.verify, args.ann.split(","), nprobes,
                    [float(r) for r in args.refine.split(",")], args.cells, args.knn, args.recall_queries, args.pq_m)
    if args.only in (None, "build"):
        bench_build(args.vectors, args.dim, args.ann.split(","))
    print(f"machine: load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
