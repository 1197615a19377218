"""DELF speed: extraction images/s (MindSpore vs a PyTorch twin, and the three padding modes), seconds
per query on a 5,000-image index, and build time / memory of a 1 M-vector faiss index.

    python benchmarks/delf_retrieval.py                    # everything (about 10 min on 2 idle cores)
    python benchmarks/delf_retrieval.py --only extract     # or: query, build
    python benchmarks/delf_retrieval.py --only extract --images 2 --side 1024

Extraction runs the untrained DELF extraction network (the speed does not depend on the weights) on
``--images`` random photographs of ``--side`` px (4:3), all 7 scales. The PyTorch twin is the same
computation in plain torch (ResNet50 to conv4, the 1x1/2 subsampling and the attention convs) on the same bucketed canvases. Query speed uses the synthetic local-feature database of
``geocli.retrieval.synthetic`` (5,000 images x 1,000 40-d descriptors, faiss IVF, 60 neighbours,
RANSAC of the 100 most-voted images). Figures go to stdout; say what else ran on the machine.
"""

from __future__ import annotations

import argparse
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


def bench_extract(n_images: int, side: int, pads) -> None:
    from geocli import api
    from geocli.models.delf import extract as ex

    images = _images(n_images, side)
    api._context(__import__("pathlib").Path("/tmp/geoloc-bench-delf"), None, "graph", 0, None, quiet=True,
                 distributed=False)
    loaded = api.load_model("delf", None)
    rates = {}
    for pad in pads:
        extractor = ex.Extractor(loaded.network, ex.settings({**loaded.cfg["extract"], "pad": pad}))
        start = time.perf_counter()
        extractor.extract(images[0])  # compiles one graph per canvas shape
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        n_feats = [len(extractor.extract(image).scores) for image in images]
        seconds = time.perf_counter() - start
        rates[pad] = n_images / seconds
        print(f"extract MindSpore pad={pad:<6} {side}x{side * 3 // 4}: {rates[pad]:.3f} images/s "
              f"({seconds / n_images:.2f} s/image, first image incl. compile {compile_s:.1f} s, "
              f"{len(extractor.shapes)} graphs, {np.mean(n_feats):.0f} features/image)")
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
    ratio = f", MindSpore/PyTorch {rates['bucket'] / rate:.2f}" if "bucket" in rates else ""
    print(f"extract PyTorch twin pad=bucket: {rate:.3f} images/s{ratio}")


def bench_query(n_images: int, n_features: int, n_queries: int, verify: int, nprobe: int) -> None:
    from geocli.retrieval.local import LocalIndex
    from geocli.retrieval.synthetic import make_local_set

    data = make_local_set(n_images, n_features, dim=40, n_queries=n_queries, seed=0)
    start, start_cpu = time.perf_counter(), time.process_time()
    index = LocalIndex.build(data.db_descriptors, data.db_locations, kind="ivf", nprobe=nprobe)
    print(f"query: faiss IVF over {len(index.ann):,} descriptors of {n_images:,} images built in "
          f"{time.perf_counter() - start:.1f} s wall, {time.process_time() - start_cpu:.1f} CPU s")
    index.query(data.query_locations[0], data.query_descriptors[0], verify=verify)
    times, cpu, correct = [], [], 0
    for q, source in enumerate(data.query_sources):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = index.query(data.query_locations[q], data.query_descriptors[q], verify=verify)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        correct += int(result.images[0] == source)
    times = np.asarray(times)
    print(f"query: {n_queries} queries x {n_features} descriptors, 60-NN, verify top {verify}: mean "
          f"{times.mean():.3f} s/query wall (median {np.median(times):.3f}, max {times.max():.3f}), "
          f"{np.mean(cpu):.3f} CPU s/query (all threads); top-1 correct {correct}/{n_queries}")


def bench_build(n_vectors: int, dim: int) -> None:
    from geocli.retrieval.ann import DescriptorIndex, default_cells

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_vectors, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    before = _rss_mb()
    start, start_cpu = time.perf_counter(), time.process_time()
    index = DescriptorIndex.build(x, kind="ivf")
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    import faiss

    size_mb = faiss.serialize_index(index.faiss_index).nbytes / 2**20
    print(f"build: faiss IVF-Flat, {n_vectors:,} x {dim}-d, {default_cells(n_vectors)} cells: {seconds:.1f} s wall, {cpu:.1f} CPU s; "
          f"resident memory +{_rss_mb() - before:.0f} MB (the vectors themselves: {x.nbytes / 2**20:.0f} MB); "
          f"index file {size_mb:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--only", choices=("extract", "query", "build"))
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--pads", default="bucket,port,none")
    parser.add_argument("--db-images", type=int, default=5000)
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--verify", type=int, default=100)
    parser.add_argument("--nprobe", type=int, default=8)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=40)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at start")
    if args.only in (None, "extract"):
        bench_extract(args.images, args.side, args.pads.split(","))
    if args.only in (None, "query"):
        bench_query(args.db_images, args.features, args.queries, args.verify, args.nprobe)
    if args.only in (None, "build"):
        bench_build(args.vectors, args.dim)


if __name__ == "__main__":
    main()
