"""Input pipeline figures: images/s per core, memory of a large index, data-wait share of a ResNet50 step.

    python benchmarks/input_pipeline.py                     # everything (about 10 minutes on 2 cores)
    python benchmarks/input_pipeline.py --skip-step         # loader figures only
    python benchmarks/input_pipeline.py --images 500 --batches 8

Builds (once, cached under --cache) a MindRecord set of synthetic 640x480 JPEGs {file_id, label, data}
(GLDv2's schema), then prints:

1. decode + random-resized-crop 321 + normalise (DELF's training view) images/s through geoloc's input
   pipeline (IndexedSource + worker processes) for 0 (in-process), 1, 2 and all cores; the same at 224
   with a horizontal flip (Centroids-ReID / ImageNet view); images/s per core and the cores an Ascend
   910 step (190 images/s, the DELF port's 171 ms per 32 images) needs;
2. the same work through MindSpore's own engine for comparison: MindDataset + C++ vision ops with
   num_parallel_workers, and GeneratorDataset over the same Python loader with python_multiprocessing;
3. anonymous memory (RssAnon) of a 100k-record MindRecord index read at random, and of 100k listed
   image paths;
4. the data-wait share of a ResNet50 (torchvision layout) training step at 224 px fed by the pipeline,
   measured by geoloc's trainer per logging window.

Timings on a shared machine are disturbed by whatever else runs: the script prints the load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ASCEND_IMAGES_PER_S = 32 / 0.171  # DELF port on Ascend 910: 171 ms per 32-image step


# ---- the loader under test (module level: worker processes import it) -----------------------------

class TrainView:
    """Rows -> decoded RGB -> random-resized crop (scale 0.08-1, ratio 3/4-4/3, torchvision's) -> optional
    flip -> ImageNet normalisation -> float32 NCHW, plus labels; all draws from the batch seed."""

    MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
    STD = np.array([0.229, 0.224, 0.225], np.float32) * 255

    def __init__(self, path, size: int, flip: bool):
        from geocli.data.readers import MindRecordRows

        self.rows = MindRecordRows(path, columns=["data", "label"])
        self.size, self.flip = size, flip

    def _crop_box(self, h, w, rng):
        area = h * w
        for _ in range(10):
            target = area * rng.uniform(0.08, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def __call__(self, indices, seed):
        import cv2

        from geocli.data.readers import decode_image

        rng = np.random.default_rng(list(seed))
        out = np.empty((len(indices), 3, self.size, self.size), np.float32)
        labels = np.empty(len(indices), np.int32)
        for k, i in enumerate(indices):
            row = self.rows[i]
            image = decode_image(row["data"], self.rows.where(i))
            top, left, ch, cw = self._crop_box(*image.shape[:2], rng)
            crop = cv2.resize(image[top:top + ch, left:left + cw], (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            if self.flip and rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[k] = ((crop.astype(np.float32) - self.MEAN) / self.STD).transpose(2, 0, 1)
            labels[k] = row["label"]
        return out, labels


# ---- data -----------------------------------------------------------------------------------------

def synthetic_jpeg(rng: np.random.Generator, h=480, w=640) -> bytes:
    """A photo-like frame: smooth gradients, a few rectangles and noise (JPEG size close to a photo's)."""
    import cv2

    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / rng.uniform(20, 90) + c) * np.cos(y / rng.uniform(20, 90)) for c in range(3)], -1)
    image = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        cv2.rectangle(image, (x0, y0), (x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))),
                      tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return data.tobytes()


def build_set(folder: Path, n: int) -> Path:
    from geocli.data import mindrecord

    path = folder / f"jpeg{n}.mindrecord"
    fingerprint = {"benchmark": "input_pipeline", "images": n, "version": 1}
    if not mindrecord.check_writable(path, fingerprint, overwrite=False):
        return path
    rng = np.random.default_rng(0)
    print(f"building {n} synthetic 640x480 JPEGs into {path} ...", flush=True)
    blobs = [synthetic_jpeg(rng) for _ in range(n)]
    rows = ({"file_id": f"{i:016x}", "label": i % 100, "data": b} for i, b in enumerate(blobs))
    mindrecord.write(path, {"file_id": {"type": "string"}, "label": {"type": "int32"}, "data": {"type": "bytes"}},
                     rows, n_rows=n, max_row_bytes=max(map(len, blobs)), total_bytes=sum(map(len, blobs)),
                     fingerprint=fingerprint, schema_name="gldv2")
    print(f"  mean JPEG {np.mean([len(b) for b in blobs]) / 1024:.0f} KiB", flush=True)
    return path


# ---- 1. geoloc's pipeline -------------------------------------------------------------------------

def time_geoloc(path: Path, n: int, size: int, flip: bool, workers: int, batches: int, batch: int = 32) -> float:
    from geocli.runtime.plan import IndexedSource

    source = IndexedSource(n, batch, TrainView(path, size, flip), seed=0, workers=workers, prefetch=2 * max(workers, 1))
    try:
        it = source.epoch(0)
        next(it)  # workers started, first batch in
        started = time.perf_counter()
        got = 0
        for _ in range(batches):
            got += len(next(it)[0])
        return got / (time.perf_counter() - started)
    finally:
        source.close()


# ---- 2. MindSpore's engine ------------------------------------------------------------------------

def time_mindspore(path: Path, size: int, flip: bool, workers: int, batches: int, batch: int = 32):
    import mindspore.dataset as ds
    from mindspore.dataset import vision

    figures = {}
    ops = [vision.Decode(), vision.RandomResizedCrop(size, scale=(0.08, 1.0))]
    if flip:
        ops.append(vision.RandomHorizontalFlip())
    ops += [vision.Normalize([float(v) for v in TrainView.MEAN], [float(v) for v in TrainView.STD]), vision.HWC2CHW()]
    data = ds.MindDataset(str(path), columns_list=["data", "label"], shuffle=True, num_parallel_workers=workers)
    data = data.map(ops, input_columns=["data"], num_parallel_workers=workers).batch(batch, drop_remainder=True)
    figures["MindDataset + C++ vision ops"] = _drain(data, batches, batch)

    class Source:
        def __init__(self):
            self.load = TrainView(path, size, flip)

        def __getitem__(self, i):
            x, y = self.load([i], seed=(0, 0, int(i), 0))
            return x[0], y[0]

        def __len__(self):
            return len(self.load.rows)

    gen = ds.GeneratorDataset(Source(), ["image", "label"], shuffle=True, num_parallel_workers=workers,
                              python_multiprocessing=workers > 1).batch(batch, drop_remainder=True)
    figures["GeneratorDataset (same Python loader)"] = _drain(gen, batches, batch)
    return figures


def _drain(dataset, batches: int, batch: int) -> float:
    it = dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    next(it)
    started = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch / (time.perf_counter() - started)
    del it
    return rate


# ---- 3. memory of a large index -------------------------------------------------------------------

INDEX_SCRIPT = r"""
import sys, numpy as np
sys.path.insert(0, {root!r})
def anon():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon:"))
from geocli.data import readers
before = anon()
if sys.argv[1] == "mindrecord":
    rows = readers.MindRecordRows({path!r})
    rng = np.random.default_rng(0)
    peak = 0
    for i in rng.integers(0, len(rows), 20000):
        rows[int(i)]; peak = max(peak, anon()) if i % 97 == 0 else peak
    labels = rows.column("label")
    print(len(rows), max(peak, anon()) - before)
else:
    files = readers.ImageFiles([f"train/{{i % 16:x}}/{{i % 256:02x}}/{{i:016x}}.jpg" for i in range(100000)], root="/data/gldv2")
    print(len(files), anon() - before)
"""


def index_memory(folder: Path, n: int = 100_000):
    from mindspore.mindrecord import FileWriter

    path = folder / f"index{n}.mindrecord"
    if not Path(str(path) + ".db").is_file():
        print(f"building a {n}-record MindRecord index set {path} ...", flush=True)
        writer = FileWriter(str(path), shard_num=1, overwrite=True)
        writer.add_schema({"file_id": {"type": "string"}, "label": {"type": "int32"}, "data": {"type": "bytes"}}, "gldv2")
        writer.add_index(["label"])
        blob = bytes(range(256))
        for start in range(0, n, 10_000):
            writer.write_raw_data([{"file_id": f"{i:016x}", "label": i % 1000, "data": blob}
                                   for i in range(start, min(start + 10_000, n))])
        writer.commit()
    script = INDEX_SCRIPT.format(root=str(ROOT), path=str(path))
    out = {}
    for kind in ("mindrecord", "files"):
        res = subprocess.run([sys.executable, "-c", script, kind], capture_output=True, text=True, check=True)
        count, kib = map(int, res.stdout.split())
        out[kind] = (count, kib)
    return out


# ---- 4. data-wait share of a ResNet50 step --------------------------------------------------------

def resnet_step_share(path: Path, n: int, workers: int, steps: int, batch: int, threads: int):
    from mindspore import nn, ops

    from geocli.nets.resnet_torchvision import ResNet50
    from geocli.runtime import context, trainer
    from geocli.runtime.plan import IndexedSource, OptimizerSpec, TrainPlan
    from geocli.runtime.runlog import NullLogger

    ctx = context.setup(Path("/tmp/geoloc-bench-input"), seed=0, threads=threads)

    class Classifier(nn.Cell):
        def __init__(self):
            super().__init__()
            self.body = ResNet50()
            self.fc = nn.Dense(2048, 100)

        def construct(self, x):
            return self.fc(ops.mean(self.body(x), (2, 3)))

    net = Classifier()
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def forward(x, y):
        loss = loss_fn(net(x), y)
        return loss, loss

    windows = []

    class Log(NullLogger):
        def metrics(self, step, values, kind="train"):
            windows.append(values)

    ctx.log = Log()
    source = IndexedSource(n, batch, TrainView(path, 224, True), seed=0, workers=workers, prefetch=4)
    plan = TrainPlan(network=net, forward=forward, loss_names=["ce"],
                     optimizers=[OptimizerSpec("sgd", list(net.trainable_params()), kind="momentum", lr=0.01,
                                               options={"momentum": 0.9})],
                     data=source, steps=steps, log_every=max(steps // 2, 1))
    ctx.run_dir = Path("/tmp/geoloc-bench-input")
    trainer.train(plan, ctx)
    return windows[-1]  # the second window: compiled, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=12, help="timed batches of 32 per configuration")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "input_pipeline")
    parser.add_argument("--skip-mindspore", action="store_true", help="skip MindSpore's dataset engine comparison")
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--skip-step", action="store_true", help="skip the ResNet50 step")
    parser.add_argument("--step-batch", type=int, default=16)
    parser.add_argument("--step-steps", type=int, default=8)
    args = parser.parse_args()

    from geocli.data.pipeline import usable_cores

    cores = usable_cores()
    print(f"machine: {cores} usable cores, load average {os.getloadavg()[0]:.2f} at start "
          "(figures are disturbed by other work on a shared machine)")
    args.cache.mkdir(parents=True, exist_ok=True)
    path = build_set(args.cache, args.images)
    counts = sorted({0, 1, 2, cores})

    for size, flip, what in ((321, False, "decode + random-resized-crop 321 + normalise"),
                             (224, True, "decode + random-resized-crop 224 + flip + normalise")):
        print(f"\n{what}  (geoloc IndexedSource, batches of 32)")
        per_core = None
        for workers in counts:
            rate = time_geoloc(path, args.images, size, flip, workers, args.batches)
            label = "in-process" if workers == 0 else f"{workers} worker{'s' if workers > 1 else ''}"
            print(f"  {label:>12}: {rate:7.1f} images/s" + (f"  ({rate / workers:.1f} per worker)" if workers else ""))
            if workers == 1:
                per_core = rate
        if per_core:
            need = int(np.ceil(ASCEND_IMAGES_PER_S / per_core))
            print(f"  -> {per_core:.1f} images/s per core: {ASCEND_IMAGES_PER_S:.0f} images/s (Ascend 910, DELF port) "
                  f"needs about {need} cores of this CPU")
        if not args.skip_mindspore:
            for workers in sorted({1, cores}):
                for name, rate in time_mindspore(path, size, flip, workers, args.batches).items():
                    print(f"  MindSpore {name}, {workers} worker(s): {rate:7.1f} images/s")

    if not args.skip_index:
        mem = index_memory(args.cache)
        count, kib = mem["mindrecord"]
        print(f"\nindex memory: MindRecordRows over {count} records, 20,000 random reads + the label column: "
              f"{kib / 1024:.1f} MiB anonymous memory")
        count, kib = mem["files"]
        print(f"index memory: ImageFiles over {count} listed paths: {kib / 1024:.1f} MiB")

    if not args.skip_step:
        workers = max(cores - 1, 1)
        print(f"\nResNet50 (torchvision layout) training step, batch {args.step_batch} at 224 px, "
              f"{cores} MindSpore threads, {workers} data worker(s); compiling ...", flush=True)
        w = resnet_step_share(path, args.images, workers, args.step_steps, args.step_batch, cores)
        print(f"  warm window: {w['images_per_s']:.2f} images/s, data wait {w['data_wait_s']:.2f} s vs compute "
              f"{w['compute_s']:.2f} s: loading is {100 * w['data_wait_share']:.1f} % of step time (target <= 5 %)")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
