"""A small rendered scene in the exact Cambridge Landmarks layout, for PoseNet demos and tests.

The scene is a walled plaza: textured facades of different heights on all four sides, a kiosk and two
pillars inside for parallax, a paved ground and a sky gradient. Every facade has its own colour,
window grid and emblem, so that what a camera sees tells where it stands and where it looks.

Cameras walk along parallel lines across the plaza (one sequence per line, alternating direction)
filming its north side with a sweeping heading, like visitors filming a landmark; train and test
sequences are different lines, the test lines lying between train lines, so a model is tested on poses
it never saw. (A first version filmed along the walking direction: test lines then looked at the
plaza in directions only train lines on the far side had, and the point-symmetric layout let the model
confuse the two halves: median error 1.3x the mean-pose baseline.)

Rendering is exact ray casting per pixel: each pixel's ray meets each facade plane (ray-plane
intersection), the hit's facade coordinates index the facade texture through ``cv2.remap``, and a depth
buffer keeps the nearest hit (occlusion, facades behind the camera). Frames are rendered at
``supersample`` times the size and shrunk with area averaging against texture aliasing.

Labels follow Cambridge/VisualSFM: X Y Z is the camera centre, W P Q R the quaternion of the
world-to-camera rotation ``x_cam = R (X_world - C)``, camera axes x right, y down, z forward. Every
rotation is checked to be proper (orthonormal, det +1): a reflected matrix makes the quaternion
labels meaningless and the model learns nothing (measured; see mindspore-notes.md).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from geocli.data.synth import marker_state
from geocli.data.formats import cambridge as fmt
from geocli.errors import DataError

MARKER = "synth.json"


@dataclass(frozen=True)
class SynthSpec:
    """What to render; stored in ``synth.json`` so a re-run can tell whether the scene is already there."""

    width: int = 160
    height: int = 90
    frames_per_sequence: int = 120
    train_sequences: int = 4
    test_sequences: int = 2
    fov_deg: float = 65.0
    supersample: int = 2
    seed: int = 0


@dataclass
class Facade:
    """A textured rectangle: ``origin + s * u + r * v`` for s in [0, width], r in [0, height]."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    width: float
    height: float
    texture: np.ndarray  # RGB uint8, row 0 at r = height
    tiled_every: float = 0.0  # > 0: the texture repeats every this many metres (ground)


# ---- rotations ------------------------------------------------------------------------------------

def look_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-to-camera rotation for a camera heading ``yaw`` (about +Z, from +X), tilted up by ``pitch``
    and rolled by ``roll`` (radians); world Z is up."""
    forward = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, forward])  # rows: camera axes in world coordinates


def check_rotation(rot: np.ndarray, what: str = "rotation") -> None:
    if not (np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) and abs(np.linalg.det(rot) - 1.0) < 1e-6):
        raise ValueError(f"{what} is not a proper rotation (det {np.linalg.det(rot):+.3f})")


def rotation_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """(w, x, y, z) with w >= 0 of a proper rotation matrix (Shepperd's method)."""
    check_rotation(rot)
    m = rot
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q) / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def quaternion_to_rotation(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


# ---- the scene ------------------------------------------------------------------------------------

def _facade_texture(rng: np.random.Generator, width: float, height: float, hue: float) -> np.ndarray:
    """A building front: base colour, window grid, a large emblem and soft stains (RGB uint8)."""
    ppm = 16  # texels per metre
    tw, th = max(int(width * ppm), 16), max(int(height * ppm), 16)
    base = np.array(cv2.cvtColor(np.uint8([[[hue * 180, 110 + rng.integers(0, 80), 150 + rng.integers(0, 80)]]]),
                                 cv2.COLOR_HSV2RGB)[0, 0], dtype=np.float32)
    tex = np.empty((th, tw, 3), np.float32)
    tex[:] = base
    blobs = cv2.resize(rng.normal(0, 1, (max(th // 24, 2), max(tw // 24, 2), 3)).astype(np.float32), (tw, th),
                       interpolation=cv2.INTER_CUBIC)
    tex += 18 * blobs
    cols, rows = int(rng.integers(3, 8)), int(rng.integers(2, 6))
    win = (base * rng.uniform(0.2, 0.5) + rng.uniform(0, 60, 3)).astype(np.float32)
    for i in range(cols):
        for j in range(rows):
            x0 = int((i + 0.25) * tw / cols)
            y0 = int((j + 0.2) * th / (rows + 1))
            cv2.rectangle(tex, (x0, y0), (x0 + int(0.5 * tw / cols), y0 + int(0.55 * th / (rows + 1))),
                          win.tolist(), -1)
    emblem = (255 - base + rng.uniform(-40, 40, 3)).clip(0, 255).tolist()
    cx, cy, radius = int(rng.uniform(0.2, 0.8) * tw), int(rng.uniform(0.3, 0.7) * th), int(min(tw, th) * 0.18)
    shape = int(rng.integers(0, 3))
    if shape == 0:
        cv2.circle(tex, (cx, cy), radius, emblem, -1)
    elif shape == 1:
        pts = np.array([[cx, cy - radius], [cx - radius, cy + radius], [cx + radius, cy + radius]], np.int32)
        cv2.fillPoly(tex, [pts], emblem)
    else:
        for k in range(-2, 3):
            cv2.line(tex, (cx - 2 * radius, cy + k * radius // 2), (cx + 2 * radius, cy + k * radius // 2),
                     emblem, max(radius // 6, 2))
    cv2.rectangle(tex, (0, th - max(th // 10, 2)), (tw, th), (base * 0.55).tolist(), -1)  # plinth
    return tex.clip(0, 255).astype(np.uint8)


def _ground_texture(rng: np.random.Generator) -> np.ndarray:
    tile = 48  # 4 m at 12 texels per metre, 8 paving stones a side
    tex = np.zeros((tile, tile, 3), np.uint8)
    for i in range(8):
        for j in range(8):
            grey = int(rng.integers(95, 150))
            tex[j * 6:(j + 1) * 6 - 1, i * 6:(i + 1) * 6 - 1] = (grey, grey - 4, grey - 10)
    return tex


def _wall(rng, a: Tuple[float, float], b: Tuple[float, float], height: float, hue: float) -> Facade:
    origin = np.array([a[0], a[1], 0.0])
    along = np.array([b[0] - a[0], b[1] - a[1], 0.0])
    width = float(np.linalg.norm(along))
    return Facade(origin, along / width, np.array([0.0, 0.0, 1.0]), width, height,
                  _facade_texture(rng, width, height, hue))


def _box(rng, cx: float, cy: float, half: float, height: float, hue: float) -> List[Facade]:
    corners = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    return [_wall(rng, corners[i], corners[(i + 1) % 4], height, (hue + 0.07 * i) % 1.0) for i in range(4)]


def build_scene(seed: int) -> List[Facade]:
    """The plaza: 10 enclosure facades (50 m x 36 m), a kiosk, two pillars and the ground."""
    rng = np.random.default_rng(seed)
    hx, hy = 25.0, 18.0
    xs, ys = np.linspace(-hx, hx, 4), np.linspace(-hy, hy, 3)
    walls = [((xs[i], hy), (xs[i + 1], hy)) for i in range(3)]
    walls += [((hx, ys[i + 1]), (hx, ys[i])) for i in (1, 0)]
    walls += [((xs[i + 1], -hy), (xs[i], -hy)) for i in (2, 1, 0)]
    walls += [((-hx, ys[i]), (-hx, ys[i + 1])) for i in range(2)]
    facades = [_wall(rng, a, b, float(rng.uniform(10, 20)), i / len(walls)) for i, (a, b) in enumerate(walls)]
    facades += _box(rng, 0.0, 0.0, 1.0, 3.5, 0.13)
    facades += _box(rng, -18.0, 0.0, 0.6, 9.0, 0.55) + _box(rng, 18.0, 0.0, 0.6, 7.0, 0.85)
    ground = Facade(np.array([-60.0, -60.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]),
                    120.0, 120.0, _ground_texture(rng), tiled_every=4.0)
    return facades + [ground]


# ---- cameras ---------------------------------------------------------------------------------------

def sequence_layout(spec: SynthSpec) -> List[Tuple[int, str, float]]:
    """(sequence number, split, line y) ordered by y: train lines evenly over [-9, 9] m, test lines at
    the midpoints between neighbouring train lines, spread out."""
    if spec.train_sequences < 2 or spec.test_sequences < 1 or spec.test_sequences > spec.train_sequences - 1:
        raise ValueError("need >= 2 train sequences and 1..train-1 test sequences (test lines lie between them)")
    train_y = np.linspace(-9.0, 9.0, spec.train_sequences)
    mids = (train_y[:-1] + train_y[1:]) / 2
    k, m = spec.test_sequences, len(mids)
    pick = [round((j + 0.5) * m / k - 0.5) for j in range(k)]  # k of m midpoints, evenly spread
    lines = [("train", float(y)) for y in train_y] + [("test", float(mids[i])) for i in pick]
    lines.sort(key=lambda item: item[1])
    return [(n + 1, split, y) for n, (split, y) in enumerate(lines)]


def sequence_poses(number: int, line_y: float, frames: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(centre, world-to-camera rotation) of each frame of one sequence: a walk along x (direction
    alternating between sequences) filming the north side of the plaza, the heading sweeping +-55 deg
    around north, like visitors filming a landmark."""
    direction = 1.0 if number % 2 else -1.0
    phase = 1.3 * number
    poses = []
    for i in range(frames):
        s = i / max(frames - 1, 1)
        x = direction * (-14.0 + 28.0 * s)
        centre = np.array([x, line_y + 0.4 * math.sin(5.0 * s + phase), 1.6 + 0.15 * math.sin(9.0 * s)])
        yaw = math.pi / 2 + math.radians(55.0) * math.sin(2 * math.pi * 2.2 * s + phase)
        pitch = math.radians(6.0 + 4.0 * math.sin(2 * math.pi * 1.3 * s + phase))
        roll = math.radians(2.0 * math.sin(2 * math.pi * 0.7 * s))
        rot = look_rotation(yaw, pitch, roll)
        check_rotation(rot, f"sequence {number} frame {i + 1}")
        poses.append((centre, rot))
    return poses


# ---- rendering -------------------------------------------------------------------------------------

def render(scene: List[Facade], centre: np.ndarray, rot: np.ndarray, width: int, height: int,
           fov_deg: float) -> np.ndarray:
    """RGB uint8 image seen by a pinhole camera (see module docstring).

    All facades are intersected at once: ``(pixels, facades)`` arrays of ray depth ``t`` and facade
    coordinates ``(s, r)``; the depth buffer is the arg-min of ``t`` over the facades a ray hits."""
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    cam = np.stack([(u - width / 2) / focal, (v - height / 2) / focal, np.ones_like(u)], axis=-1).reshape(-1, 3)
    rays = (cam @ rot).astype(np.float32)  # world directions: rot.T @ d for every pixel
    up = np.clip(rays[:, 2] / np.linalg.norm(rays, axis=1), 0, 1)[:, None]
    image = (1 - up) * np.array([200.0, 215.0, 235.0]) + up * np.array([70.0, 120.0, 200.0])  # sky
    origin = np.stack([f.origin for f in scene])
    axes_u, axes_v = np.stack([f.u for f in scene]), np.stack([f.v for f in scene])
    normal = np.cross(axes_u, axes_v).astype(np.float32)
    axes_u, axes_v = axes_u.astype(np.float32), axes_v.astype(np.float32)
    offset = (centre - origin).astype(np.float32)  # (F, 3)
    denom = rays @ normal.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(np.abs(denom) > 1e-9, -np.sum(offset * normal, axis=1) / denom, np.float32(np.inf))
    s = np.sum(offset * axes_u, axis=1) + t * (rays @ axes_u.T)
    r = np.sum(offset * axes_v, axis=1) + t * (rays @ axes_v.T)
    sizes_w = np.array([f.width for f in scene], np.float32)
    sizes_h = np.array([f.height for f in scene], np.float32)
    visible = (t > 0.05) & (s >= 0) & (s <= sizes_w) & (r >= 0) & (r <= sizes_h)
    depth = np.where(visible, t, np.float32(np.inf))
    nearest = np.argmin(depth, axis=1)
    nearest[~np.isfinite(depth[np.arange(len(rays)), nearest])] = -1  # sky
    order = np.argsort(nearest, kind="stable")
    bounds = np.searchsorted(nearest[order], np.arange(len(scene) + 1))
    for index, facade in enumerate(scene):
        pixels = order[bounds[index]:bounds[index + 1]]
        if not len(pixels):
            continue
        fs, fr = s[pixels, index], r[pixels, index]
        th, tw = facade.texture.shape[:2]
        if facade.tiled_every:
            scale = tw / facade.tiled_every
            map_x, map_y, border = fs * scale, fr * scale, cv2.BORDER_WRAP
        else:
            map_x, map_y = fs * tw / facade.width, (facade.height - fr) * th / facade.height
            border = cv2.BORDER_REPLICATE
        image[pixels] = _sample(facade.texture, map_x, map_y, border)
    return image.reshape(height, width, 3).clip(0, 255).astype(np.uint8)


def _sample(texture: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, border: int) -> np.ndarray:
    """Bilinear texture lookups at n points (cv2.remap wants 2-D maps under 32767 a side)."""
    n, cols = len(map_x), 256
    grid = np.zeros((2, -(-n // cols) * cols), np.float32)
    grid[0, :n], grid[1, :n] = map_x, map_y
    out = cv2.remap(texture, grid[0].reshape(-1, cols), grid[1].reshape(-1, cols), cv2.INTER_LINEAR,
                    borderMode=border)
    return out.reshape(-1, 3)[:n]


# ---- writing ---------------------------------------------------------------------------------------

def scene_state(out: Path, spec: SynthSpec) -> str:
    """'absent', 'done' (same spec, complete), 'other' (different spec) or 'foreign' (not ours)."""
    known = marker_state(out / MARKER, spec)
    if known is not None:
        return known
    if any(fmt.split_file(out, s).exists() for s in fmt.SPLITS):
        return "foreign"
    return "absent"


def _clear(out: Path) -> None:
    """Remove a previous synthetic scene (only the files this generator writes)."""
    for split in fmt.SPLITS:
        fmt.split_file(out, split).unlink(missing_ok=True)
    for seq in out.glob("seq*"):
        if seq.is_dir() and all(p.name.startswith("frame") and p.suffix == ".png" for p in seq.iterdir()):
            shutil.rmtree(seq)
    (out / MARKER).unlink(missing_ok=True)


def synthesize(out: Path, spec: SynthSpec = SynthSpec(), *, overwrite: bool = False,
               progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, object]:
    """Write the scene to ``out`` (skipped when the same scene is already there); returns a summary."""
    out = Path(out)
    state = scene_state(out, spec)
    if state == "done" and not overwrite:
        return {"path": out, "skipped": True, **_counts(out)}
    if state in ("other", "foreign") and not overwrite:
        what = "a scene rendered with other settings" if state == "other" else "a dataset not written by geoloc"
        raise DataError(f"{out}: already holds {what}; pass --overwrite to replace it or choose another --out")
    if state != "absent":
        _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    scene = build_scene(spec.seed)
    layout = sequence_layout(spec)
    rows: Dict[str, List[fmt.PoseRow]] = {s: [] for s in fmt.SPLITS}
    total, done = len(layout) * spec.frames_per_sequence, 0
    size = (spec.width * spec.supersample, spec.height * spec.supersample)
    for number, split, line_y in layout:
        folder = out / f"seq{number}"
        folder.mkdir(exist_ok=True)
        for i, (centre, rot) in enumerate(sequence_poses(number, line_y, spec.frames_per_sequence)):
            big = render(scene, centre, rot, size[0], size[1], spec.fov_deg)
            image = cv2.resize(big, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
            name = f"seq{number}/frame{i + 1:05d}.png"
            if not cv2.imwrite(str(out / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise DataError(f"{out / name}: could not write the image")
            q = rotation_to_quaternion(rot)
            rows[split].append(fmt.PoseRow(name, tuple(float(c) for c in centre), tuple(float(c) for c in q)))
            done += 1
            if progress is not None:
                progress(done, total)
    for split in fmt.SPLITS:
        fmt.write(fmt.split_file(out, split), rows[split])
    (out / MARKER).write_text(json.dumps({"spec": asdict(spec), "complete": True}, indent=2) + "\n", encoding="utf-8")
    return {"path": out, "skipped": False, **_counts(out)}


def generate(out: Path, *, overwrite: bool = False, progress=None, frames: Optional[int] = None,
             width: Optional[int] = None, height: Optional[int] = None, seed: Optional[int] = None):
    """:func:`synthesize` with the ``geoloc data synth cambridge`` flags; ``progress(label, total)`` returns
    an ``advance(k)`` callable (the convention of the data commands)."""
    changes = {k: v for k, v in (("frames_per_sequence", frames), ("width", width), ("height", height),
                                 ("seed", seed)) if v is not None}
    spec = replace(SynthSpec(), **changes)
    bar: Dict[str, Callable[[int], None]] = {}

    def advance(done: int, total: int) -> None:
        if "advance" not in bar:
            bar["advance"] = progress("rendering", total)
        bar["advance"](1)

    return synthesize(out, spec, overwrite=overwrite, progress=advance if progress else None)


def _counts(out: Path) -> Dict[str, int]:
    return {split: sum(1 for line in fmt.split_file(out, split).read_text().splitlines()[3:] if line.strip())
            for split in fmt.SPLITS}
