"""A learnable synthetic person re-identification set, written in Market-1501's exact layout and naming.

Each identity is a drawn pedestrian defined by what re-identification relies on: clothing colours
(shirt, trousers, shoes, an optional bag), a clothing pattern (plain, horizontal or vertical stripes,
checks) and body proportions (height, width, leg length, head size, skin tone). Each camera has its own
nuisances, which a network must learn to ignore: a colour cast and brightness, its own background
(wall colour, texture, floor), a typical scale, and blur. Every image adds a pose (stride of the legs,
arm swing, walking direction as a mirror image), a position jitter and sensor noise.

So an untrained network, whose features are dominated by background colour and camera cast, ranks
poorly, and a trained one can match a person across cameras: the demo and the tests measure exactly
that. Files go to ``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` as
``<pid:04d>_c<cam>s1_<frame:06d>_<n:02d>.jpg``; the gallery also gets pid-0 distractors (random
people) and pid -1 junk (background crops), as Market has, so the parser's rules run on them.
Train and test identities are disjoint (pids 1..n_train and n_train+1..).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import cv2
import numpy as np

from geocli.data.synth import marker_state
from geocli.errors import DataError

MARKER = "synth.json"
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")
PATTERNS = ("plain", "hstripes", "vstripes", "checks")


@dataclass(frozen=True)
class ReidSynthSpec:
    """What to draw; stored in ``synth.json`` so a re-run can tell whether the set is already there."""

    train_ids: int = 64
    test_ids: int = 32
    cameras: int = 4
    per_camera: int = 2          # images of each identity per camera it is seen by (train and gallery)
    queries_per_id: int = 2      # query images per test identity (each from a different camera)
    distractors: int = 16        # pid 0 images in the gallery
    junk: int = 8                # pid -1 images in the gallery (dropped by the parser, as Market's)
    height: int = 128
    width: int = 64
    seed: int = 0


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    pixel = np.uint8([[[int(h * 179) % 180, int(s * 255), int(v * 255)]]])
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def identity(rng: np.random.Generator) -> Dict[str, object]:
    """The fixed appearance of one person."""
    return {
        "shirt": _hsv(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0)),
        "shirt2": _hsv(rng.random(), rng.uniform(0.2, 1.0), rng.uniform(0.2, 1.0)),
        "trousers": _hsv(rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.9)),
        "shoes": _hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.05, 0.6)),
        "skin": _hsv(rng.uniform(0.02, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95)),
        "hair": _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.5)),
        "pattern": PATTERNS[int(rng.integers(len(PATTERNS)))],
        "period": int(rng.integers(3, 7)),
        "bag": bool(rng.random() < 0.4),
        "bag_colour": _hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.2, 0.9)),
        "height": rng.uniform(0.72, 0.95),
        "width": rng.uniform(0.22, 0.36),
        "legs": rng.uniform(0.42, 0.55),
        "head": rng.uniform(0.11, 0.15),
    }


def camera(rng: np.random.Generator, index: int) -> Dict[str, object]:
    """The fixed look of one camera: colour cast, background, scale, blur."""
    return {
        "cast": rng.uniform(0.8, 1.2, size=3).astype(np.float32),
        "brightness": rng.uniform(-20, 20),
        "wall": _hsv(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.3, 0.9)),
        "floor": _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.7)),
        "texture": int(rng.integers(3)),
        "scale": rng.uniform(0.8, 1.0),
        "blur": int(rng.integers(0, 2)) * 2 + 1,
        "horizon": rng.uniform(0.55, 0.8),
        "index": index,
    }


def _background(cam: Dict[str, object], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((h, w, 3), np.float32)
    img[:] = cam["wall"]
    horizon = int(h * cam["horizon"])
    img[horizon:] = cam["floor"]
    if cam["texture"] == 1:  # bricks / tiles
        img[: horizon: 8] *= 0.7
        img[:horizon, ::12] *= 0.8
    elif cam["texture"] == 2:  # a few posters or windows at random places
        for _ in range(3):
            y, x = int(rng.integers(0, max(horizon - 20, 1))), int(rng.integers(0, w - 8))
            img[y:y + int(rng.integers(8, 20)), x:x + int(rng.integers(6, 20))] = _hsv(rng.random(), 0.5, 0.7)
    img += rng.normal(0, 6, size=(1, w, 1)).astype(np.float32)  # vertical streaks: lighting
    return img


def _shirt_fill(person, shape, rng) -> np.ndarray:
    h, w = shape
    fill = np.empty((h, w, 3), np.float32)
    fill[:] = person["shirt"]
    p = person["period"]
    yy, xx = np.mgrid[0:h, 0:w]
    if person["pattern"] == "hstripes":
        fill[(yy // p) % 2 == 1] = person["shirt2"]
    elif person["pattern"] == "vstripes":
        fill[(xx // p) % 2 == 1] = person["shirt2"]
    elif person["pattern"] == "checks":
        fill[((yy // p) + (xx // p)) % 2 == 1] = person["shirt2"]
    return fill


def _paste(img: np.ndarray, y0: int, x0: int, patch: np.ndarray) -> None:
    h, w = img.shape[:2]
    ph, pw = patch.shape[:2]
    ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + ph, h), min(x0 + pw, w)
    if ya < yb and xa < xb:
        img[ya:yb, xa:xb] = patch[ya - y0:yb - y0, xa - x0:xb - x0]


def render_person(person: Dict[str, object], cam: Dict[str, object], rng: np.random.Generator,
                  h: int, w: int) -> np.ndarray:
    """One RGB uint8 image of ``person`` seen by ``cam`` in a random pose."""
    img = _background(cam, h, w, rng)
    scale = float(cam["scale"]) * rng.uniform(0.93, 1.05)
    body_h = int(h * person["height"] * scale)
    top = int(h * 0.97) - body_h + int(rng.integers(-3, 4))
    cx = w // 2 + int(rng.integers(-w // 10, w // 10 + 1))
    head = max(int(body_h * person["head"]), 3)
    body_w = max(int(w * person["width"] * scale), 6)
    legs_h = int(body_h * person["legs"])
    torso_h = max(body_h - head - legs_h, 4)
    # head and hair
    cv2.ellipse(img, (cx, top + head // 2), (max(head // 2 - 1, 2), head // 2), 0, 0, 360,
                tuple(float(c) for c in person["skin"]), -1)
    cv2.ellipse(img, (cx, top + head // 4), (max(head // 2 - 1, 2), max(head // 4, 1)), 0, 180, 360,
                tuple(float(c) for c in person["hair"]), -1)
    # torso with its pattern, arms
    t0 = top + head
    _paste(img, t0, cx - body_w // 2, _shirt_fill(person, (torso_h, body_w), rng))
    swing = int(rng.integers(-3, 4))
    arm_w = max(body_w // 5, 2)
    for side in (-1, 1):
        x = cx + side * (body_w // 2 + arm_w // 2)
        cv2.line(img, (x, t0 + 2), (x + side * swing, t0 + torso_h), tuple(float(c) for c in person["shirt"]), arm_w)
    # legs in a stride, shoes
    stride = int(rng.integers(0, max(body_w // 2, 2)))
    leg_w = max(body_w // 3, 2)
    hip = t0 + torso_h
    for side in (-1, 1):
        foot = (cx + side * (leg_w // 2 + stride // 2), hip + legs_h)
        cv2.line(img, (cx + side * leg_w // 2, hip), foot, tuple(float(c) for c in person["trousers"]), leg_w)
        cv2.rectangle(img, (foot[0] - leg_w // 2 - 1, foot[1] - 2), (foot[0] + leg_w // 2 + 2, foot[1] + 1),
                      tuple(float(c) for c in person["shoes"]), -1)
    if person["bag"]:
        bx = cx + body_w // 2
        cv2.rectangle(img, (bx - 1, t0 + torso_h // 2), (bx + max(body_w // 3, 3), t0 + torso_h),
                      tuple(float(c) for c in person["bag_colour"]), -1)
    if rng.random() < 0.5:  # walking the other way
        img = img[:, ::-1]
    img = img * cam["cast"] + cam["brightness"] + rng.normal(0, 4, size=img.shape)
    if cam["blur"] > 1:
        img = cv2.GaussianBlur(img, (cam["blur"], cam["blur"]), 0)
    return np.clip(img, 0, 255).astype(np.uint8)


def _name(pid: int, cam: int, frame: int, n: int) -> str:
    return f"{pid:04d}_c{cam + 1}s1_{frame:06d}_{n:02d}.jpg" if pid >= 0 else f"-1_c{cam + 1}s1_{frame:06d}_{n:02d}.jpg"


def state(out: Path, spec: ReidSynthSpec) -> str:
    """"done" (this spec is there), "other" (another synthetic set), "foreign" (other files), "empty"."""
    out = Path(out)
    known = marker_state(out / MARKER, spec)
    if known is not None:
        return known
    if out.is_dir() and any(out.iterdir()):
        return "foreign"
    return "empty"


def synthesize(out: Path, spec: ReidSynthSpec = ReidSynthSpec(), *, overwrite: bool = False,
               progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, int]:
    """Write the set (skipped when this spec is already there); returns the number of files per split."""
    out = Path(out)
    current = state(out, spec)
    if current == "done" and not overwrite:
        return counts(out)
    if current == "foreign" and not overwrite:
        raise DataError(f"{out}: already holds other files; pass --overwrite to replace them or choose another --out")
    if current == "other" and not overwrite:
        raise DataError(f"{out}: holds a synthetic set drawn with other settings; pass --overwrite to redraw it")
    if current in ("other", "foreign"):
        for name in SPLIT_DIRS:
            shutil.rmtree(out / name, ignore_errors=True)
        (out / MARKER).unlink(missing_ok=True)
    rng = np.random.default_rng(spec.seed)
    cams = [camera(rng, c) for c in range(spec.cameras)]
    people = [identity(rng) for _ in range(spec.train_ids + spec.test_ids)]
    jobs = []  # (split dir, pid, camera)
    frame = 0
    for i in range(spec.train_ids):
        for cam in _cameras_of(rng, spec):
            jobs += [("bounding_box_train", i + 1, cam)] * spec.per_camera
    for j in range(spec.test_ids):
        pid = spec.train_ids + j + 1
        seen = _cameras_of(rng, spec)
        query_cams = sorted(int(c) for c in rng.permutation(seen)[:spec.queries_per_id])
        jobs += [("query", pid, c) for c in query_cams]
        jobs += [("bounding_box_test", pid, c) for c in seen for _ in range(spec.per_camera)]
    jobs += [("bounding_box_test", 0, int(rng.integers(spec.cameras))) for _ in range(spec.distractors)]
    jobs += [("bounding_box_test", -1, int(rng.integers(spec.cameras))) for _ in range(spec.junk)]
    for name in SPLIT_DIRS:
        (out / name).mkdir(parents=True, exist_ok=True)
    for done, (split, pid, cam) in enumerate(jobs):
        frame += int(rng.integers(1, 50))
        if pid > 0:
            image = render_person(people[pid - 1], cams[cam], rng, spec.height, spec.width)
        elif pid == 0:
            image = render_person(identity(rng), cams[cam], rng, spec.height, spec.width)
        else:
            image = _background(cams[cam], spec.height, spec.width, rng).clip(0, 255).astype(np.uint8)
        path = out / split / _name(pid, cam, frame, done % 100)
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise DataError(f"{path}: could not write the image")
        if progress is not None:
            progress(done + 1, len(jobs))
    (out / MARKER).write_text(json.dumps({"spec": asdict(spec), "complete": True}, indent=2) + "\n",
                              encoding="utf-8")
    return counts(out)


def _cameras_of(rng: np.random.Generator, spec: ReidSynthSpec):
    """The cameras that see one identity: at least two (so every query has a cross-camera match)."""
    n = int(rng.integers(min(2, spec.cameras), spec.cameras + 1))
    return sorted(int(c) for c in rng.choice(spec.cameras, size=n, replace=False))


def counts(out: Path) -> Dict[str, int]:
    return {name: sum(1 for p in (Path(out) / name).glob("*.jpg")) for name in SPLIT_DIRS}
