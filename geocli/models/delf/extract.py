"""DELF local-feature extraction: image pyramid -> attention-selected conv4 features -> PCA.

Faithful to the port (``extract_feature.py``, ``extract_utils_np.py``, ``delf_config.py``):

- scales [0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0], each ``round(H*s) x round(W*s)`` by PIL's
  bicubic resize; input ``(x - 128) / 128``; pixels outside the image are the port's zero padding
  (-1 after normalisation) and feature cells outside ``floor(h / stride)`` are cropped away;
- keep cells whose softplus attention score is >= ``score_threshold`` (100);
- receptive-field boxes ``stride * [y, x, y, x] + [-pad, -pad, +pad, +pad]`` (rf 291, stride 32,
  padding 145) divided by the scale; the location is the box centre ``stride * (y, x) / scale`` in
  (y, x) order and the feature's ``scales`` value is ``1 / scale``, as the port writes them;
- NMS at IoU 1.0 suppresses nothing, so it is the top ``max_features`` (1,000) by score, ties by
  position descending as the port's sort leaves them;
- descriptors L2-normalised, PCA to 40-d, L2-normalised again.

One deliberate difference: the shape each scale runs at. The port zero-pads every scale to 2048x2048
and runs the 7 scales as one batch (one compiled graph, but a 1024x768 image then costs 7 x 4.2 M
pixels instead of 6.2 M). Here ``pad: bucket`` (default) pads each side up to the next step of a
geometric ladder (``bucket_steps`` per octave, multiples of the stride): at most a few dozen graphs,
at most ``2**(1/steps)`` waste per side; ``pad: port`` reproduces the port's 2048x2048 canvas and
``pad: none`` runs exact shapes (one compile per new shape). ``benchmarks/delf_retrieval.py``
measures the three. Images larger than ``max_image_side`` are first scaled down (the port assumed
<= 1024 px and crashes beyond); locations are always reported in the original image's pixels.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from geocli.data.images import IMAGE_SUFFIXES
from geocli.errors import ConfigError, DataError

#: The extraction settings and their defaults (``extract.*`` in the DELF config).
DEFAULTS: Dict[str, Any] = {
    "scales": [0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0],
    "score_threshold": 100.0,
    "max_features": 1000,
    "stride": 32,             # feature-map cell in input pixels (conv4 stride 16 x the 1x1/2 subsampling)
    "rf_padding": 145,        # half receptive field: box = centre -/+ 145 (rf 291)
    "pca": None,              # folder with mean.npy / pca_proj_mat.npy; None keeps 1024-d descriptors
    "pca_dim": 40,
    "whiten": False,
    "pad": "bucket",          # bucket | port | none
    "bucket_steps": 2,        # ladder steps per octave for pad: bucket
    "port_canvas": 2048,      # the port's padded size for pad: port
    "max_image_side": 1024,   # larger images are scaled down first (0: never)
}
PAD_MODES = ("bucket", "port", "none")


def settings(cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``DEFAULTS`` updated by ``cfg["extract"]`` (a whole config) or by an ``extract`` mapping."""
    section = dict(cfg or {})
    section = dict(section.get("extract", section))
    out = {**DEFAULTS, **{k: v for k, v in section.items() if k in DEFAULTS}}
    if out["pad"] not in PAD_MODES:
        raise ConfigError(f"extract.pad={out['pad']!r}: choose one of {', '.join(PAD_MODES)}")
    if not out["scales"] or any(float(s) <= 0 for s in out["scales"]):
        raise ConfigError(f"extract.scales={out['scales']!r}: give one or more positive scales")
    return out


# ---------------------------------------------------------------------------------------------- images

def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) from any format PIL reads (grayscale, palette and RGBA are converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as an image ({exc}); remove it or replace it") from None


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's bicubic resize, the filter of the port's ``img.resize((w, h))``."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((int(width), int(height)), Image.BICUBIC))


def list_images(source: Path) -> Tuple[List[Path], List[str]]:
    """``(paths, names)`` of a folder (recursive, sorted; names relative to it) or a list file.

    A list file holds one path per line, relative to the list's folder or absolute; names are the
    lines as written. Raises DataError for a missing source, an empty one or a listed missing file.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"--images {source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return paths, [p.relative_to(source).as_posix() for p in paths]
    if not source.is_file():
        raise DataError(f"--images {source}: no such folder or list file")
    if source.suffix.lower() in IMAGE_SUFFIXES:
        return [source], [source.name]
    names = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataError(f"--images {source}: the list file is empty")
    paths = [Path(n) if Path(n).is_absolute() else source.parent / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"--images {source}: {len(missing)} listed images do not exist, e.g. {missing[0]}")
    return paths, names


# ---------------------------------------------------------------------------------------------- shapes

def bucket_side(n: int, stride: int, steps: int) -> int:
    """The smallest ladder value >= n: ``stride * 2**(i / steps)`` rounded up to a multiple of stride."""
    n = max(int(n), 1)
    i = max(0, math.floor(steps * math.log2(max(n / stride, 1.0))) - 1)
    while True:
        side = int(math.ceil(stride * 2 ** (i / steps) / stride) * stride)
        if side >= n:
            return side
        i += 1


def canvas_shape(h: int, w: int, cfg: Mapping[str, Any]) -> Tuple[int, int]:
    """The (H, W) a scaled image of h x w is padded to before it runs through the network."""
    if cfg["pad"] == "none":
        return h, w
    if cfg["pad"] == "port":
        canvas = int(cfg["port_canvas"])
        if max(h, w) > canvas:
            raise DataError(f"a scaled image of {h}x{w} exceeds the port's {canvas}x{canvas} canvas; "
                            "use extract.pad=bucket or a smaller extract.max_image_side")
        return canvas, canvas
    stride, steps = int(cfg["stride"]), int(cfg["bucket_steps"])
    return bucket_side(h, stride, steps), bucket_side(w, stride, steps)


def normalise(image: np.ndarray, canvas: Tuple[int, int]) -> np.ndarray:
    """(1, 3, H, W) float32: zero-pad bottom/right to ``canvas`` (as the port), then (x - 128) / 128."""
    h, w = image.shape[:2]
    padded = np.zeros((canvas[0], canvas[1], 3), dtype=np.float32)
    padded[:h, :w] = image
    return ((padded - 128.0) / 128.0).transpose(2, 0, 1)[None]


# ---------------------------------------------------------------------------------------------- selection

@dataclass
class ImageFeatures:
    """One image's features plus what the threshold warning needs."""

    locations: np.ndarray    # (n, 2) float32 (y, x) in original image pixels
    scales: np.ndarray       # (n,) float32: 1 / pyramid scale, as the port
    scores: np.ndarray       # (n,) float32 attention scores
    descriptors: np.ndarray  # (n, d) float32, unit norm
    max_score: float = float("-inf")
    min_score: float = float("inf")

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"locations": self.locations, "scales": self.scales, "scores": self.scores,
                "descriptors": self.descriptors}


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def select_features(per_scale: Sequence[Tuple[float, np.ndarray, np.ndarray]], cfg: Mapping[str, Any],
                    pca=None, resize_factor: float = 1.0) -> ImageFeatures:
    """Threshold, order and post-process the cells of all scales.

    ``per_scale`` holds ``(scale, prob (h, w), features (h, w, C))`` cropped to the valid cells.
    """
    stride, threshold = float(cfg["stride"]), float(cfg["score_threshold"])
    locations, scales, scores, descriptors = [], [], [], []
    seen_max, seen_min = float("-inf"), float("inf")
    for scale, prob, feats in per_scale:
        if prob.size:
            seen_max, seen_min = max(seen_max, float(prob.max())), min(seen_min, float(prob.min()))
        ys, xs = np.nonzero(prob >= threshold)
        if ys.size == 0:
            continue
        centre = np.stack([ys, xs], axis=1).astype(np.float64) * stride / scale / resize_factor
        locations.append(centre.astype(np.float32))
        scales.append(np.full(ys.size, 1.0 / scale, np.float32))
        scores.append(prob[ys, xs].astype(np.float32))
        descriptors.append(feats[ys, xs].astype(np.float32))
    dim = pca.dim if pca is not None else (per_scale[0][2].shape[-1] if per_scale else 0)
    if not scores:
        return ImageFeatures(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                             np.zeros((0, dim), np.float32), seen_max, seen_min)
    locations, scales = np.concatenate(locations), np.concatenate(scales)
    scores, descriptors = np.concatenate(scores), np.concatenate(descriptors)
    # IoU 1.0 "NMS" = sort by score descending, equal scores by position descending, keep the first N
    order = np.lexsort((-np.arange(scores.size), -scores))[: int(cfg["max_features"])]
    descriptors = _l2(descriptors[order])
    if pca is not None:
        descriptors = _l2(pca.project(descriptors))
    return ImageFeatures(locations[order], scales[order], scores[order], descriptors.astype(np.float32),
                         seen_max, seen_min)


# ---------------------------------------------------------------------------------------------- network

class Extractor:
    """Runs a DELF extraction network (prob, features) = net(NCHW) over an image pyramid.

    ``network`` is a MindSpore Cell in eval mode (``DelfBackend.build_network``) or any callable
    taking and returning NumPy arrays (an onnxruntime session wrapper, a test double).
    """

    def __init__(self, network, cfg: Mapping[str, Any], pca=None):
        self.network = network
        self.cfg = dict(cfg)
        self.pca = pca
        self.shapes: Set[Tuple[int, int]] = set()  # distinct canvases run: compiled graphs
        self._ms = None

    def _run(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self._ms is None:
            try:
                import mindspore as ms

                from mindspore import nn
                self._ms = (ms, isinstance(self.network, nn.Cell))
            except ImportError:  # pragma: no cover - MindSpore is a dependency
                self._ms = (None, False)
        ms, is_cell = self._ms
        if is_cell:
            prob, feats = self.network(ms.Tensor(batch))
            return prob.asnumpy(), feats.asnumpy()
        prob, feats = self.network(batch)
        return np.asarray(prob), np.asarray(feats)

    def extract(self, image: np.ndarray) -> ImageFeatures:
        cfg = self.cfg
        h0, w0 = image.shape[:2]
        factor = 1.0
        limit = int(cfg["max_image_side"] or 0)
        if limit and max(h0, w0) > limit:
            factor = limit / max(h0, w0)
            image = resize(image, int(round(h0 * factor)), int(round(w0 * factor)))
        h1, w1 = image.shape[:2]
        stride = int(cfg["stride"])
        per_scale = []
        for scale in cfg["scales"]:
            scale = float(scale)
            h, w = int(round(h1 * scale)), int(round(w1 * scale))
            valid_h, valid_w = h // stride, w // stride
            if valid_h < 1 or valid_w < 1:
                continue  # smaller than one feature cell (the port keeps nothing here either)
            canvas = canvas_shape(h, w, cfg)
            self.shapes.add(canvas)
            prob, feats = self._run(normalise(resize(image, h, w), canvas))
            prob = prob[0, 0, :valid_h, :valid_w]
            feats = feats[0, :, :valid_h, :valid_w].transpose(1, 2, 0)
            per_scale.append((scale, prob, feats))
        return select_features(per_scale, cfg, self.pca, resize_factor=factor)


# ---------------------------------------------------------------------------------------------- to a store

@dataclass
class ExtractionReport:
    path: Path
    extracted: int = 0
    skipped: int = 0
    seconds: float = 0.0
    features: int = 0
    empty: List[str] = field(default_factory=list)
    score_min: float = float("inf")
    score_max: float = float("-inf")
    graphs: int = 0

    @property
    def images_per_second(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0

    def warning(self, threshold: float) -> Optional[str]:
        """The tensorflow/models #9689 warning: images without features, and the scores seen."""
        if not self.empty:
            return None
        seen = (f"scores seen {self.score_min:.3g} to {self.score_max:.3g}" if self.score_max > float("-inf")
                else "no score seen")
        return (f"{len(self.empty)} of {self.extracted} images have no feature with attention score >= "
                f"{threshold:g} ({seen}); an undertrained or self-trained model may need a lower "
                f"--set extract.score_threshold=...")


def extract_to_store(extractor: Extractor, paths: Sequence[Path], names: Sequence[str], out: Path,
                     attrs: Optional[Mapping[str, Any]] = None, overwrite: bool = False,
                     progress: Optional[Callable[[int, int, float], None]] = None,
                     crops: Optional[Sequence[Optional[Tuple[float, float, float, float]]]] = None
                     ) -> ExtractionReport:
    """Extract every image not yet in the HDF5 store ``out`` (all of them with ``overwrite``).

    ``progress(done, total, images_per_second)`` is called after each image; ``crops[i]`` is an
    optional (x1, y1, x2, y2) box extraction is limited to (evaluation queries). Identity attributes
    (model, checkpoint, pca) must match an existing store (see :class:`FeatureStore`).
    """
    from geocli.models.delf.protocol import crop_box
    from geocli.retrieval.store import FeatureStore

    report = ExtractionReport(Path(out))
    store_attrs = dict(attrs or {})
    with FeatureStore(out, mode="w" if overwrite else "a", attrs=store_attrs) as store:
        boxes = list(crops) if crops is not None else [None] * len(names)
        todo = [(p, n, b) for p, n, b in zip(paths, names, boxes) if overwrite or n not in store]
        report.skipped = len(names) - len(todo)
        start = time.perf_counter()
        for i, (path, name, box) in enumerate(todo):
            feats = extractor.extract(crop_box(read_image(path), box))
            store.write(name, feats.arrays(), overwrite=True)
            report.extracted += 1
            report.features += len(feats.scores)
            report.score_min = min(report.score_min, feats.min_score)
            report.score_max = max(report.score_max, feats.max_score)
            if len(feats.scores) == 0:
                report.empty.append(name)
            report.seconds = time.perf_counter() - start
            if progress is not None:
                progress(i + 1, len(todo), report.images_per_second)
    report.graphs = len(extractor.shapes)
    return report


def merge_stores(parts: Iterable[Path], out: Path, attrs: Optional[Mapping[str, Any]] = None) -> int:
    """Copy every image of the per-rank stores ``parts`` into ``out``; returns the number copied."""
    from geocli.retrieval.store import FeatureStore

    copied = 0
    with FeatureStore(out, attrs=attrs) as target:
        for part in parts:
            with FeatureStore(part, mode="r") as source:
                for name in source.names():
                    copied += int(target.write(name, source.read(name)))
    return copied


def image_shard(names: Sequence[str], rank: int, size: int) -> List[int]:
    """Indices of the images rank ``rank`` of ``size`` extracts: every size-th one (balanced sizes)."""
    return list(range(rank, len(names), size))
