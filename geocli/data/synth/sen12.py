"""A small, learnable optical/SAR set in the SEN1-2 layout (SDNet's demo and test data).

Each scene is one terrain canvas: land-cover fields (Voronoi cells), fractal relief, roads, a river and
building blocks. Its patches are overlapping crops, as SEN1-2's are, so a split must keep scenes apart.

* optical (``s2_``, RGB): a colour per land-cover class, relief shading and fine texture;
* SAR (``s1_``, one channel), same geometry pixel for pixel, but what a radar sees: a backscatter level
  per class that is a NON-monotone remapping of the optical brightness (water black, buildings
  saturated), slope-dependent brightness from the relief, changed edges (roads dark with bright borders,
  bright double-bounce building outlines), a non-linear (log-like) intensity mapping and multiplicative
  gamma speckle. Patch matching is therefore learnable but not solvable by comparing intensities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import cv2
import numpy as np

from geocli.data.formats import sen12
from geocli.errors import UsageError

N_CLASSES = 6  # water, forest, crop A, crop B, bare soil, urban


@dataclass(frozen=True)
class SynthSpec:
    seasons: int = 2            # how many of the four season folders
    scenes: int = 4             # scenes per season
    patches: int = 6            # patches per scene
    size: int = 256             # patch side in pixels (SEN1-2: 256)
    looks: float = 3.0          # speckle: gamma(looks, 1/looks) multiplicative noise
    seed: int = 0


def _fractal(h: int, w: int, rng: np.random.Generator, octaves: int = 5) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    amp, cells = 1.0, 4
    for _ in range(octaves):
        grid = rng.standard_normal((cells, cells)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        amp *= 0.5
        cells *= 2
    return (out - out.min()) / (np.ptp(out) + 1e-6)


def _land_cover(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(18, 30))
    seeds = rng.uniform(0, [w, h], size=(n, 2)).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = 12.0 * (_fractal(h, w, rng, 3) - 0.5)
    d = (xs[None] + warp - seeds[:, 0, None, None]) ** 2 + (ys[None] - warp - seeds[:, 1, None, None]) ** 2
    cls = rng.integers(1, N_CLASSES - 1, size=n)
    return cls[np.argmin(d, axis=0)].astype(np.int32)


def _scene(size: int, rng: np.random.Generator):
    """One terrain canvas: (classes, relief, road mask, building mask)."""
    h = w = size
    classes = _land_cover(h, w, rng)
    relief = _fractal(h, w, rng)
    water = (_fractal(h, w, rng, 4) < 0.18).astype(np.uint8)
    classes[water > 0] = 0
    roads = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(3, 6))):
        p = rng.uniform(0, size, 4).astype(int)
        cv2.line(roads, (p[0], p[1]), (p[2], p[3]), 1, int(rng.integers(2, 5)))
    buildings = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(2, 5))):  # urban blocks of small rectangles
        cx, cy = rng.uniform(0.1 * size, 0.9 * size, 2)
        for _ in range(int(rng.integers(6, 16))):
            x, y = int(cx + rng.normal(0, size * 0.05)), int(cy + rng.normal(0, size * 0.05))
            bw, bh = (int(v) for v in rng.integers(4, 12, 2))
            cv2.rectangle(buildings, (x, y), (x + bw, y + bh), 1, -1)
    classes[buildings > 0] = N_CLASSES - 1
    return classes, relief, roads, buildings


_OPTICAL_RGB = np.array([[30, 60, 110], [40, 90, 40], [150, 170, 70], [110, 140, 60], [150, 120, 90],
                         [170, 165, 160]], np.float32)  # water, forest, crop A, crop B, bare, urban
_SAR_LEVEL = np.array([0.03, 0.45, 0.20, 0.32, 0.12, 0.95], np.float32)  # non-monotone w.r.t. optical


def _optical(classes, relief, roads, rng) -> np.ndarray:
    rgb = _OPTICAL_RGB[classes].copy()
    shade = 0.75 + 0.5 * relief[..., None]
    texture = 1.0 + 0.15 * (_fractal(*classes.shape, rng, 6)[..., None] - 0.5) * 2
    rgb = rgb * shade * texture
    rgb[roads > 0] = (120, 120, 120)
    rgb += rng.normal(0, 3.0, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _sar(classes, relief, roads, buildings, looks: float, rng) -> np.ndarray:
    sigma = _SAR_LEVEL[classes].copy()
    gy, gx = np.gradient(relief * 40.0)
    sigma *= np.clip(1.0 + 1.5 * gx, 0.2, 3.0)  # slopes facing the sensor (looking along +x) are bright
    sigma[roads > 0] = 0.02  # roads: smooth, dark ...
    road_edges = cv2.dilate(roads, np.ones((3, 3), np.uint8)) - roads
    sigma[road_edges > 0] = 0.6  # ... with bright borders (changed edges)
    outline = cv2.dilate(buildings, np.ones((3, 3), np.uint8)) - buildings
    sigma[outline > 0] = 2.0  # double bounce
    speckle = rng.gamma(looks, 1.0 / looks, sigma.shape).astype(np.float32)
    intensity = sigma * speckle
    db = 10.0 * np.log10(intensity + 1e-3)  # non-linear (log) intensity mapping, as SAR products are scaled
    return np.clip((db + 25.0) * (255.0 / 30.0), 0, 255).astype(np.uint8)


def generate(out: Path, *, spec: SynthSpec = SynthSpec(), overwrite: bool = False,
             progress: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
    """Write ``spec``'s scenes under ``out`` in the SEN1-2 layout; returns a summary. An existing set made
    with the same spec is kept (``done``); anything else needs ``overwrite``."""
    out = Path(out)
    marker = out / "synth_sen12.json"
    import json

    wanted = json.dumps(asdict(spec), sort_keys=True)
    if marker.is_file() and marker.read_text() == wanted:
        return {"out": str(out), "pairs": spec.seasons * spec.scenes * spec.patches, "done": True}
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out}: folder is not empty; pass --overwrite to replace the synthetic set")
    if spec.size < 64 or spec.seasons < 1 or spec.seasons > 4 or spec.scenes < 1 or spec.patches < 1:
        raise UsageError("synth sen12: size >= 64, 1-4 seasons, at least one scene and one patch")
    if marker.exists():
        marker.unlink()
    canvas = int(spec.size * 1.6)
    written = 0
    for s, season in enumerate(sen12.SEASONS[:spec.seasons]):
        for scene in range(spec.scenes):
            rng = np.random.default_rng([spec.seed, s, scene])
            classes, relief, roads, buildings = _scene(canvas, rng)
            optical = _optical(classes, relief, roads, rng)
            sar = _sar(classes, relief, roads, buildings, spec.looks, rng)
            for patch in range(1, spec.patches + 1):
                x, y = (int(v) for v in rng.integers(0, canvas - spec.size + 1, 2))
                o = optical[y:y + spec.size, x:x + spec.size]
                r = sar[y:y + spec.size, x:x + spec.size]
                op, sp = sen12.optical_path(out, season, scene, patch), sen12.sar_path(out, season, scene, patch)
                op.parent.mkdir(parents=True, exist_ok=True)
                sp.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(op), cv2.cvtColor(o, cv2.COLOR_RGB2BGR))
                cv2.imwrite(str(sp), r)
                written += 1
                if progress is not None:
                    progress(1)
    marker.write_text(wanted)
    return {"out": str(out), "pairs": written, "done": False}


def registration_pair(size: int = 192, seed: int = 0, looks: float = 3.0):
    """(optical RGB, SAR gray) of one fresh scene, the SAR not yet warped: for registration tests/demo."""
    rng = np.random.default_rng([seed, 99])
    classes, relief, roads, buildings = _scene(size, rng)
    return _optical(classes, relief, roads, rng), _sar(classes, relief, roads, buildings, looks, rng)
