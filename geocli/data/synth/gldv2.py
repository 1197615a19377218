"""A small, learnable landmark set in the exact Google Landmarks v2 layout (DELF demo and tests).

Each landmark is one textured 3-D structure: a main block with a tower and sometimes a wing, every
wall with its own colour, window grid and emblem (the facades of :mod:`geocli.data.synth.cambridge`,
ray cast with its renderer, on a paved ground under a sky). Each image is one view of it: the camera
walks around the front half of the building at a random azimuth, distance (scale), height, heading and
roll, then the frame is randomly cropped and its lighting changed (gain, gamma, colour cast, a soft
shadow, sensor noise). So what identifies a landmark is its 3-D appearance seen from varying
viewpoints, not a fixed picture, and the background (sky, pavement) carries no label: attention has
something to learn.

Written as GLDv2 is::

    train_clean.csv     landmark_id,images            (landmark rows in random order, ids sparse)
    train.csv           id,url,landmark_id            (also lists the distractors: one-off buildings
                                                       under landmark ids of their own, the "noise"
                                                       that GLDv2-clean removed)
    train/<a>/<b>/<c>/<id>.jpg
    synth_gldv2.json    the spec, landmark ids, and which ids are distractors or deliberately missing

A few images listed in both CSVs are deliberately not written (``missing``), as in a partial download,
so the converter's skip-and-report path is exercised by every demo.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from geocli.data.synth import marker_state
from geocli.data.formats import gldv2 as fmt
from geocli.data.synth.cambridge import Facade, _box, _ground_texture, look_rotation, render
from geocli.errors import DataError
from geocli.fileio import atomic_write_text

MARKER = "synth_gldv2.json"


@dataclass(frozen=True)
class GldSynthSpec:
    """What to generate; stored in the marker so a re-run can tell whether the set is already there."""

    landmarks: int = 10
    views: int = 40  # images per landmark
    distractors: int = 20
    missing: int = 3  # listed in the CSVs, not written
    size: int = 128  # longer image side
    fov_deg: float = 60.0
    supersample: int = 2
    quality: int = 90
    seed: int = 0


@dataclass
class Landmark:
    landmark_id: int
    facades: List[Facade]
    front: float  # azimuth (radians) the building is photographed around
    height: float  # of the tallest part, metres
    radius: float  # horizontal extent, metres


def build_landmark(rng: np.random.Generator, landmark_id: int) -> Landmark:
    """One building: main block + tower (+ a wing half the time), on the ground plane."""
    hue = float(rng.uniform(0, 1))
    half, height = float(rng.uniform(3.0, 6.0)), float(rng.uniform(6.0, 14.0))
    facades = _box(rng, 0.0, 0.0, half, height, hue)
    tower_half = float(rng.uniform(0.25, 0.45)) * half
    tx, ty = rng.uniform(-0.5, 0.5, 2) * (half - tower_half)
    tower_height = height + float(rng.uniform(4.0, 12.0))
    facades += _box(rng, float(tx), float(ty), tower_half, tower_height, (hue + rng.uniform(0.2, 0.8)) % 1.0)
    radius = half
    if rng.random() < 0.5:
        side = float(rng.choice([-1.0, 1.0]))
        wing_half = float(rng.uniform(0.4, 0.7)) * half
        facades += _box(rng, side * (half + wing_half), 0.0, wing_half, float(rng.uniform(0.4, 0.8)) * height,
                        (hue + 0.5) % 1.0)
        radius = half + 2 * wing_half
    ground = Facade(np.array([-80.0, -80.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]),
                    160.0, 160.0, _ground_texture(rng), tiled_every=4.0)
    return Landmark(landmark_id, facades + [ground], float(rng.uniform(0, 2 * math.pi)), tower_height, radius)


def view(landmark: Landmark, rng: np.random.Generator, spec: GldSynthSpec) -> np.ndarray:
    """One photograph of ``landmark`` (RGB uint8): random viewpoint, scale, crop and lighting."""
    aspect = float(rng.choice([4 / 3, 3 / 4, 1.0, 16 / 9]))
    out_w, out_h = (spec.size, round(spec.size / aspect)) if aspect >= 1 else (round(spec.size * aspect), spec.size)
    # render 25 % larger than the output, then crop 75-100 % of each side: framing varies
    big_w, big_h = round(out_w * 1.25) * spec.supersample, round(out_h * 1.25) * spec.supersample
    azimuth = landmark.front + float(rng.uniform(-1.0, 1.0))  # +-57 degrees around the front
    fov = math.radians(spec.fov_deg * 1.25)
    fit = max(landmark.height, 2 * landmark.radius) / (2 * math.tan(fov / 2))
    distance = landmark.radius + fit * float(rng.uniform(0.7, 2.2))
    eye = np.array([distance * math.cos(azimuth), distance * math.sin(azimuth), float(rng.uniform(1.2, 6.0))])
    target_z = float(rng.uniform(0.3, 0.6)) * landmark.height
    yaw = math.atan2(-eye[1], -eye[0]) + float(rng.uniform(-0.12, 0.12))
    pitch = math.atan2(target_z - eye[2], distance) + float(rng.uniform(-0.08, 0.08))
    rot = look_rotation(yaw, pitch, float(rng.uniform(-0.08, 0.08)))
    image = render(landmark.facades, eye, rot, big_w, big_h, math.degrees(fov)).astype(np.float32)
    image = cv2.resize(image, (big_w // spec.supersample, big_h // spec.supersample), interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    cw, ch = int(w * rng.uniform(0.75, 1.0)), int(h * rng.uniform(0.75, 1.0))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = cv2.resize(image[y0:y0 + ch, x0:x0 + cw], (out_w, out_h), interpolation=cv2.INTER_AREA)
    return _light(image, rng)


def _light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gain, gamma, colour cast, a soft directional shadow and sensor noise."""
    h, w = image.shape[:2]
    x = image / 255.0
    x = x ** float(rng.uniform(0.7, 1.4))
    x = x * float(rng.uniform(0.6, 1.25)) * rng.uniform(0.85, 1.15, 3)
    angle = float(rng.uniform(0, 2 * math.pi))
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    shade = 1.0 - float(rng.uniform(0.0, 0.35)) * (0.5 + 0.5 * np.cos(angle) * (xx - 0.5) * 2
                                                   + 0.5 * np.sin(angle) * (yy - 0.5) * 2).clip(0, 1)
    x = x * shade[..., None] + rng.normal(0, 0.015, x.shape)
    return (x.clip(0, 1) * 255).round().astype(np.uint8)


def _image_id(rng: np.random.Generator, taken: set) -> str:
    while True:
        fid = "".join("0123456789abcdef"[d] for d in rng.integers(0, 16, 16))
        if fid not in taken:
            taken.add(fid)
            return fid


def state(out: Path, spec: GldSynthSpec) -> str:
    """'absent', 'done' (same spec, complete), 'other' (ours, other spec) or 'foreign' (not ours)."""
    known = marker_state(Path(out) / MARKER, spec)
    if known is not None:
        return known
    if any((Path(out) / name).exists() for name in (fmt.CLEAN_CSV, fmt.TRAIN_CSV, fmt.IMAGES_DIR)):
        return "foreign"
    return "absent"


def _clear(out: Path) -> None:
    """Remove a set this generator wrote (its marker says so), nothing else."""
    for name in (fmt.CLEAN_CSV, fmt.TRAIN_CSV, MARKER):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / fmt.IMAGES_DIR, ignore_errors=True)


def synthesize(out: Path, spec: GldSynthSpec = GldSynthSpec(), *, overwrite: bool = False,
               progress: Optional[Callable[[int], None]] = None) -> Dict[str, object]:
    """Write the set to ``out`` (skipped when the same set is there); ``progress(k)`` after k images."""
    out = Path(out)
    found = state(out, spec)
    if found == "done" and not overwrite:
        return {**json.loads((out / MARKER).read_text(encoding="utf-8"))["summary"], "path": out, "skipped": True}
    if found == "foreign" or (found == "other" and not overwrite):
        what = "a set generated with other settings" if found == "other" else "files not written by geoloc"
        hint = "pass --overwrite to replace it or " if found == "other" else ""
        raise DataError(f"{out}: already holds {what}; {hint}choose another --out")
    if found != "absent":
        _clear(out)
    rng = np.random.default_rng(spec.seed)
    ids = rng.choice(np.arange(1, 200_000), spec.landmarks + spec.distractors, replace=False)
    landmark_ids, distractor_landmarks = [int(i) for i in ids[:spec.landmarks]], [int(i) for i in ids[spec.landmarks:]]
    taken: set = set()
    members: Dict[int, List[str]] = {lid: [] for lid in landmark_ids}
    jobs: List[Tuple[str, int, int]] = []  # (image id, landmark id, seed of the building)
    for k, lid in enumerate(landmark_ids):
        for _ in range(spec.views):
            fid = _image_id(rng, taken)
            members[lid].append(fid)
            jobs.append((fid, lid, spec.seed * 1_000_003 + k))
    distractor_ids = []
    for k, lid in enumerate(distractor_landmarks):
        fid = _image_id(rng, taken)
        distractor_ids.append(fid)
        jobs.append((fid, lid, spec.seed * 1_000_003 + spec.landmarks + k))
    listed = [fid for fid, lid, _ in jobs if lid in members]
    missing = set(str(x) for x in rng.choice(listed, min(spec.missing, len(listed)), replace=False))
    buildings: Dict[int, Landmark] = {}
    for n, (fid, lid, building_seed) in enumerate(jobs):
        if fid in missing:
            continue
        if lid not in buildings:
            buildings[lid] = build_landmark(np.random.default_rng(building_seed), lid)
        image = view(buildings[lid], np.random.default_rng([spec.seed, n]), spec)
        path = fmt.image_path(out / fmt.IMAGES_DIR, fid)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, spec.quality])
        if not ok:
            raise DataError(f"{path}: could not encode the image")
        path.write_bytes(encoded.tobytes())
        if progress is not None:
            progress(1)
    order = [landmark_ids[i] for i in rng.permutation(len(landmark_ids))]
    atomic_write_text(out / fmt.CLEAN_CSV, "landmark_id,images\n"
                      + "".join(f"{lid},{' '.join(members[lid])}\n" for lid in order))
    atomic_write_text(out / fmt.TRAIN_CSV, "id,url,landmark_id\n"
                      + "".join(f"{fid},synthetic://{fid},{lid}\n" for fid, lid, _ in jobs))
    summary = {"landmarks": spec.landmarks, "images": len(jobs) - len(missing), "distractors": len(distractor_ids),
               "missing": len(missing)}
    marker = {"spec": asdict(spec), "complete": True, "summary": summary, "landmark_ids": landmark_ids,
              "distractor_ids": distractor_ids, "missing_ids": sorted(missing)}
    atomic_write_text(out / MARKER, json.dumps(marker, indent=2) + "\n")
    return {**summary, "path": out, "skipped": False}


def generate(out: Path, *, overwrite: bool = False, progress=None, **options) -> Dict[str, object]:
    """:func:`synthesize` with options named as :class:`GldSynthSpec` fields; ``progress(label, total)``
    returns an ``advance(k)`` callable (the convention of the data commands)."""
    spec = replace(GldSynthSpec(), **{k: v for k, v in options.items() if v is not None})
    for name in ("landmarks", "views", "size"):
        if getattr(spec, name) < (2 if name != "size" else 32):
            raise DataError(f"--{name} {getattr(spec, name)}: too small for a learnable set")
    advance = progress("rendering", spec.landmarks * spec.views + spec.distractors - spec.missing) if progress else None
    return synthesize(out, spec, overwrite=overwrite, progress=advance)
