"""A small learnable VIGOR: four synthetic cities written in the exact VIGOR layout.

Each city is an aerial map in its own colours (roads on a jittered grid, blocks of buildings with random roof colours and
heights, parks with trees) at the city's true ground resolution (the corrected per-city m/px), cut into
tiles on VIGOR's half-overlapping grid (one tile every 320 px of a 640 px tile). Panoramas are rendered
from positions on the streets (as Street View's are; open ground only when no street is near the tile
centre) by ray-marching the same height/colour map: north-aligned equirectangular
images (column W/2 faces north, east to its right) showing the facades (coloured after their roofs,
with floors of windows), the road and ground around the camera, and a sky; each panorama gets its own
lighting and colour cast, so the ground/aerial relation is real but not pixel-trivial.

Scale: tiles are written at ``tile_px`` (default 96) instead of 640 px and panoramas at ``pano_hw``
instead of 1024x2048; the labels are still in pixels of a 640 px tile, as in the dataset, so every
parser and loader runs unchanged. Label files are written twice, like the real dataset: ``splits/``
with the original 0.114 m/px assumption (slightly wrong for every city, badly for Seattle: VIGOR
issue #2) and ``splits__corrected/`` with the true resolution. Label and NewYork list files use CRLF
line endings, as in the released splits, and about one panorama id in eight begins with '-'.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from geocli.data.formats import vigor as fmt
from geocli.errors import UsageError

#: Where each synthetic city lies (latitudes matter: they set metres per degree of longitude).
ORIGINS = {"NewYork": (40.7496, -73.9819), "Seattle": (47.5992, -122.3029),
           "SanFrancisco": (37.7749, -122.4194), "Chicago": (41.8520, -87.6912)}
#: Each city's look, as real cities differ: bare-ground colour and the tint its roofs lean towards.
STYLES = {"NewYork": ((96, 112, 84), (200, 90, 60)), "Seattle": ((80, 120, 90), (60, 110, 200)),
          "SanFrancisco": ((150, 140, 110), (230, 210, 120)), "Chicago": ((110, 100, 100), (120, 200, 110))}
MARKER = ".geoloc-synth-vigor.json"
_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))


@dataclass(frozen=True)
class SynthSpec:
    grid: int = 6  # tile centres per side and city
    panos_per_tile: int = 4
    tile_px: int = 96  # written tile size (the dataset's is 640)
    pano_hw: Tuple[int, int] = (64, 128)
    cam_height_m: float = 2.5
    seed: int = 0
    version: int = 2  # of the renderer (2: panoramas on streets); a cached dataset of another is rendered again


# ---- the aerial map -----------------------------------------------------------------------------------

def _city_map(rng: np.random.Generator, size_px: int, m_px: float,
              style=STYLES["NewYork"]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(colour RGB uint8, height m float32, facade RGB uint8, road bool) rasters of one city, north up."""
    colour = np.empty((size_px, size_px, 3), np.uint8)
    colour[:] = style[0]  # bare ground
    height = np.zeros((size_px, size_px), np.float32)
    facade = np.zeros((size_px, size_px, 3), np.uint8)
    px = lambda metres: max(int(round(metres / m_px)), 1)  # noqa: E731
    # roads on a jittered grid: blocks of 28-48 m, roads 7-11 m
    edges: List[List[int]] = []
    for _axis in range(2):
        pos, cuts = -px(20), []
        while pos < size_px + px(40):
            width = px(rng.uniform(7, 11))
            cuts.append((pos, pos + width))
            pos += width + px(rng.uniform(28, 48))
        edges.append(cuts)
    road = np.zeros((size_px, size_px), bool)
    for a, b in edges[0]:
        road[max(a, 0):max(b, 0), :] = True
    for a, b in edges[1]:
        road[:, max(a, 0):max(b, 0)] = True
    colour[road] = (70, 70, 74)
    # blocks between roads
    for (r0, r1), (r1b, _) in zip(edges[0][:-1], edges[0][1:]):
        for (c0, c1), (c1b, _) in zip(edges[1][:-1], edges[1][1:]):
            top, bottom, left, right = r1, r1b, c1, c1b
            kind = rng.random()
            if kind < 0.15:  # park with trees
                colour[max(top, 0):max(bottom, 0), max(left, 0):max(right, 0)] = (60, 130, 55)
                for _ in range(int(rng.integers(3, 9))):
                    cy, cx = rng.integers(top, bottom), rng.integers(left, right)
                    rad = px(rng.uniform(2, 4))
                    cv2.circle(colour, (int(cx), int(cy)), rad, (30, 85, 35), -1)
                    cv2.circle(height, (int(cx), int(cy)), rad, float(rng.uniform(5, 9)), -1)
                    cv2.circle(facade, (int(cx), int(cy)), rad, (40, 100, 40), -1)
                continue
            base = (rng.integers(40, 230, size=3) + np.asarray(style[1])) // 2  # the city's tint
            # split the block into 1-3 x 1-3 buildings, each with its own roof and height
            rows = np.linspace(top, bottom, int(rng.integers(1, 4)) + 1).astype(int)
            cols = np.linspace(left, right, int(rng.integers(1, 4)) + 1).astype(int)
            gap = px(1.5)
            for i in range(len(rows) - 1):
                for j in range(len(cols) - 1):
                    if rng.random() < 0.12:
                        continue  # an empty lot
                    roof = np.clip(base + rng.integers(-35, 36, size=3), 0, 255)
                    h = float(rng.uniform(6, 30))
                    y0, y1 = rows[i] + gap, rows[i + 1] - gap
                    x0, x1 = cols[j] + gap, cols[j + 1] - gap
                    if y1 <= y0 or x1 <= x0:
                        continue
                    sl = (slice(max(y0, 0), max(y1, 0)), slice(max(x0, 0), max(x1, 0)))
                    colour[sl] = roof
                    height[sl] = h
                    facade[sl] = np.clip(roof * 0.75 + 30, 0, 255)
                    # a roof feature (AC unit / skylight) that both views can see only from above
                    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
                    cv2.rectangle(colour, (cx - px(1), cy - px(1)), (cx + px(1), cy + px(1)),
                                  tuple(int(v) for v in 255 - roof), -1)
    # lane markings
    for a, b in edges[0]:
        mid = (a + b) // 2
        if 0 <= mid < size_px:
            colour[mid, ::6][:, :] = (220, 220, 200)
    noise = rng.normal(0, 6, colour.shape)
    colour = np.clip(colour + noise, 0, 255).astype(np.uint8)
    return colour, height, facade, road & (height == 0)


# ---- panoramas ----------------------------------------------------------------------------------------

def render_panorama(colour: np.ndarray, height: np.ndarray, facade: np.ndarray, m_px: float,
                    row: float, col: float, hw: Tuple[int, int], cam_h: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Equirectangular RGB panorama (H, W, 3) from map pixel (row, col), north at column W/2."""
    H, W = hw
    az = 2.0 * np.pi * (np.arange(W) + 0.5) / W - np.pi  # 0 = north at W/2, +pi/2 = east
    elev = np.pi / 2 - np.pi * (np.arange(H) + 0.5) / H
    t = np.geomspace(0.6, 90.0, 110)  # metres along each ray
    rr = row - np.cos(az)[:, None] * t[None, :] / m_px  # north = up = smaller row
    cc = col + np.sin(az)[:, None] * t[None, :] / m_px
    inside = (rr >= 0) & (rr < height.shape[0]) & (cc >= 0) & (cc < height.shape[1])
    ri = np.clip(rr.astype(int), 0, height.shape[0] - 1)
    ci = np.clip(cc.astype(int), 0, height.shape[1] - 1)
    h = np.where(inside, height[ri, ci], 0.0)  # (W, T)
    z = cam_h + np.tan(np.clip(elev, -1.55, 1.55))[:, None] * t[None, :]  # (H, T)
    hit = h[None, :, :] >= z[:, None, :]  # (H, W, T)
    any_hit = hit.any(axis=2)
    k = hit.argmax(axis=2)  # first sample where the ray is below the surface
    wi = np.broadcast_to(np.arange(W)[None, :], (H, W))
    hr, hc = ri[wi, k], ci[wi, k]
    hh = h[wi, k]
    z_hit = z[np.arange(H)[:, None], k]
    is_wall = hh > z_hit - 1e-3
    is_wall &= hh > 0
    ground = colour[hr, hc].astype(np.float32)
    wall = facade[hr, hc].astype(np.float32)
    floors = (np.floor(z_hit / 3.0) % 2 == 1) & (np.sin(az * 40.0)[None, :] > 0.2)
    wall = np.where(floors[..., None], wall * 0.55, wall)
    shade = 0.75 + 0.25 * np.cos(az - 0.6)[None, :, None]  # sunlight from the north-east
    img = np.where(is_wall[..., None], wall * shade, ground)
    dist = t[k]
    fog = np.clip(dist / 90.0, 0, 1)[..., None] * 0.5
    sky_top = np.array([90, 140, 215], np.float32) * rng.uniform(0.85, 1.1)
    sky = sky_top + (elev[:, None, None] < 0.5) * 40.0
    img = img * (1 - fog) + 170.0 * fog
    img = np.where(any_hit[..., None], img, np.broadcast_to(sky, (H, W, 3)))
    # per-panorama lighting and colour cast (the appearance gap between the two views)
    img = img * rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, size=3) + rng.uniform(-15, 15)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# ---- writing ------------------------------------------------------------------------------------------

def _write_lines(path: Path, lines: List[str], crlf: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sep = "\r\n" if crlf else "\n"
    path.write_bytes(sep.join(lines).encode("utf-8"))  # no trailing newline, as the released files


def _pano_id(rng: np.random.Generator) -> str:
    chars = "".join(rng.choice(_ID_CHARS, 22))
    if rng.random() < 0.125:
        chars = "-" + chars[1:]
    return chars


def _label_row(pano: str, tiles: List[str], deltas: np.ndarray) -> str:
    return " ".join([pano] + [f"{t} {d[0]:.1f} {d[1]:.1f}" for t, d in zip(tiles, deltas)])


def _city(root: Path, city: str, spec: SynthSpec, rng: np.random.Generator) -> Dict[str, int]:
    m_true = fmt.CORRECTED_M_PER_PX[city]
    tile_m = fmt.TILE_PX * m_true
    step_m = tile_m / 2.0
    m_px = tile_m / spec.tile_px  # metres per pixel of the written (down-scaled) tiles
    extent_m = (spec.grid - 1) * step_m + tile_m
    size_px = int(np.ceil(extent_m / m_px)) + 2
    colour, height, facade, road = _city_map(rng, size_px, m_px, STYLES[city])
    lat0, lon0 = ORIGINS[city]
    deg_lat = np.degrees(1.0 / 6371004.0)  # degrees per metre
    deg_lon = deg_lat / np.cos(np.radians(lat0))
    half = spec.tile_px // 2
    # tile centres in map pixels (row from the north edge, col from the west edge)
    centres = [(half + i * spec.tile_px / 2.0, half + j * spec.tile_px / 2.0)
               for i in range(spec.grid) for j in range(spec.grid)]
    tile_names, tile_ll = [], []
    sat_dir = root / city / "satellite"
    sat_dir.mkdir(parents=True, exist_ok=True)
    for r, c in centres:
        lat = lat0 - r * m_px * deg_lat
        lon = lon0 + c * m_px * deg_lon
        name = fmt.tile_name(lat, lon)
        tile = colour[int(r) - half:int(r) + half, int(c) - half:int(c) + half]
        cv2.imwrite(str(sat_dir / name), cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
        tile_names.append(name)
        tile_ll.append((lat, lon))
    tile_ll_arr = np.array(tile_ll)
    pano_dir = root / city / "panorama"
    pano_dir.mkdir(parents=True, exist_ok=True)
    rows: Dict[str, List[Tuple[str, List[str], np.ndarray, np.ndarray]]] = {"all": []}
    lo, hi = half, half + (spec.grid - 1) * spec.tile_px / 2.0  # region covered by exactly 2x2 tiles
    for idx, (r, c) in enumerate(centres):
        for _ in range(spec.panos_per_tile):
            for _try in range(200):  # stand on a street near this tile's centre (street view), else open ground
                pr = np.clip(r + rng.uniform(-0.25, 0.25) * spec.tile_px, lo + 1e-3, hi - 1e-3)
                pc = np.clip(c + rng.uniform(-0.25, 0.25) * spec.tile_px, lo + 1e-3, hi - 1e-3)
                if road[int(pr), int(pc)] or (_try >= 150 and height[int(pr), int(pc)] == 0):
                    break
            # the four covering tiles: the nearest centre first, then the other three of the 2x2
            i = (pr - half) / (spec.tile_px / 2.0)
            j = (pc - half) / (spec.tile_px / 2.0)
            ii = [int(np.floor(i)), int(np.floor(i)) + 1]
            jj = [int(np.floor(j)), int(np.floor(j)) + 1]
            ii = [min(max(v, 0), spec.grid - 1) for v in ii]
            jj = [min(max(v, 0), spec.grid - 1) for v in jj]
            cover = sorted({(a, b) for a in ii for b in jj}, key=lambda ab: (ab[0] - i) ** 2 + (ab[1] - j) ** 2)
            if len(cover) != 4:
                continue
            ids = [a * spec.grid + b for a, b in cover]
            lat = lat0 - pr * m_px * deg_lat
            lon = lon0 + pc * m_px * deg_lon
            name = fmt.pano_name(_pano_id(rng), lat, lon)
            pano = render_panorama(colour, height, facade, m_px, pr, pc, spec.pano_hw, spec.cam_height_m, rng)
            cv2.imwrite(str(pano_dir / name), cv2.cvtColor(pano, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            lat_name, lon_name = fmt.pano_latlon(name)  # the 6-decimal position the file name carries
            ll = tile_ll_arr[ids]
            rows["all"].append((name, [tile_names[k] for k in ids],
                                fmt.latlon_to_delta(ll[:, 0], ll[:, 1], lat_name, lon_name, fmt.ORIGINAL_M_PER_PX),
                                fmt.latlon_to_delta(ll[:, 0], ll[:, 1], lat_name, lon_name, m_true)))
    order = rng.permutation(len(rows["all"]))
    n_train = len(order) // 2
    parts = {"train": [rows["all"][k] for k in sorted(order[:n_train])],
             "test": [rows["all"][k] for k in sorted(order[n_train:])], "all": rows["all"]}
    for folder, corrected in (("splits", False), ("splits__corrected", True)):
        suffix = "__corrected" if corrected else ""
        base = root / folder / city
        _write_lines(base / "satellite_list.txt", tile_names, crlf=city == "NewYork")
        for split, fname in (("train", "same_area_balanced_train"), ("test", "same_area_balanced_test"),
                             ("all", "pano_label_balanced")):
            lines = [_label_row(n, t, dc if corrected else do) for n, t, do, dc in parts[split]]
            _write_lines(base / f"{fname}{suffix}.txt", lines, crlf=True)
    return {"tiles": len(tile_names), "panoramas": len(rows["all"])}


def synthesize(out: Path, spec: SynthSpec = SynthSpec(), *, overwrite: bool = False) -> Dict[str, Any]:
    """Write the four cities to ``out``; an existing dataset with the same spec is reused."""
    out = Path(out)
    marker = out / MARKER
    wanted = {**asdict(spec), "pano_hw": list(spec.pano_hw)}
    if marker.is_file() and not overwrite:
        info = json.loads(marker.read_text())
        if info.get("spec") == wanted:
            return {**info["summary"], "reused": True}
    if out.exists() and any(out.iterdir()) and not marker.is_file() and not overwrite:
        raise UsageError(f"--out {out}: folder is not empty and holds no synthetic VIGOR; choose another "
                         "folder or pass --overwrite")
    if marker.is_file() or overwrite:  # our own folder (another spec) or the user said so: start clean
        for name in (*fmt.CITIES, "splits", "splits__corrected"):
            shutil.rmtree(out / name, ignore_errors=True)
        marker.unlink(missing_ok=True)
    summary: Dict[str, Any] = {"cities": {}}
    for city in fmt.CITIES:
        summary["cities"][city] = _city(out, city, spec, np.random.default_rng([spec.seed, fmt.CITIES.index(city)]))
    summary["tiles"] = sum(c["tiles"] for c in summary["cities"].values())
    summary["panoramas"] = sum(c["panoramas"] for c in summary["cities"].values())
    marker.write_text(json.dumps({"spec": wanted, "summary": summary}, indent=2))
    return {**summary, "reused": False}
