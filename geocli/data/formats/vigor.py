"""VIGOR's on-disk layout (Zhu et al., CVPR 2021): panorama / satellite folders and the split files.

Layout (data/DATASET.md of Jeff-Zilence/VIGOR; facts in ../shared/reference/vigor.md §1)::

    <root>/<City>/panorama/<panoid>,<lat>,<lon>,.jpg        ids may begin with '-' or '--'
    <root>/<City>/satellite/satellite_<lat>_<lon>.png        640x640 tiles on a half-overlapping grid
    <root>/splits/<City>/satellite_list.txt                  one tile name per line
    <root>/splits/<City>/same_area_balanced_{train,test}.txt
    <root>/splits/<City>/pano_label_balanced.txt             every panorama of the city
    <root>/splits__corrected/<City>/*__corrected.txt         SliceMatch's corrected labels (same format)

A label row has 13 whitespace-separated fields: the panorama name, then four (tile, d0, d1) groups,
the first the positive, the other three semi-positives. ``d = (delta_lat, delta_lon)`` in pixels of
the 640 px tile: the panorama sits at row ``320 + d0`` and column ``320 - d1`` (so d1 is minus dx).

Names are opaque keys: lines are ``strip()``-ed (NewYork's files use CRLF, which the reference code
leaves inside the keys) and coordinates are split from the right (longitudes are negative, ids
contain commas' neighbours ``-`` and ``_``). Every malformed row is reported with its file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from geocli.errors import ConfigError, DataError

CITIES = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
SETTINGS = ("same-area", "cross-area")
LABELS = ("original", "corrected")
#: Cities of each (setting, split) (ref dataloader.py:22-27).
SETTING_CITIES = {
    ("same-area", "train"): CITIES, ("same-area", "test"): CITIES,
    ("cross-area", "train"): ("NewYork", "Seattle"), ("cross-area", "test"): ("SanFrancisco", "Chicago"),
}
#: Ground resolution the original labels and evaluation assume for every city (m/px of a 640 px tile).
ORIGINAL_M_PER_PX = 0.114
#: Measured per-city resolutions that come with the corrected labels (CCVPE train_VIGOR.py:194-200).
CORRECTED_M_PER_PX = {"NewYork": 0.113248, "Seattle": 0.100817, "SanFrancisco": 0.118141, "Chicago": 0.111262}
#: Counts of the released dataset (port README_CN.md:46-49), checked by ``geoloc data verify vigor``.
TILE_COUNTS = {"Chicago": 22308, "NewYork": 23279, "SanFrancisco": 24255, "Seattle": 20776}
PANORAMA_COUNTS = {"Chicago": 25479, "NewYork": 27769, "SanFrancisco": 28215, "Seattle": 23751}
TILE_PX = 640
LABEL_FIELDS = 13


@dataclass
class LabelRow:
    panorama: str
    tiles: Tuple[str, str, str, str]  # positive first
    deltas: np.ndarray  # (4, 2) float32, pixels of the 640 px tile
    line: int


@dataclass
class VigorSplit:
    """One (setting, split): panoramas with their four tiles as indices into the tile list.

    ``tile_paths``/``pano_paths`` are relative to the dataset root; ``positive`` (N,), ``semi`` (N, 3),
    ``deltas`` (N, 4, 2) in 640-px units; ``m_per_px`` (N,) the resolution used to turn deltas into
    metres (0.114 everywhere for the original labels, per city for the corrected ones)."""

    root: Path
    setting: str
    split: str
    labels: str
    tile_names: List[str]
    tile_paths: List[str]
    tile_latlon: np.ndarray
    pano_names: List[str]
    pano_paths: List[str]
    pano_latlon: np.ndarray
    positive: np.ndarray
    semi: np.ndarray
    deltas: np.ndarray
    m_per_px: np.ndarray
    pano_city: List[str]

    def __len__(self) -> int:
        return len(self.pano_names)

    @property
    def n_tiles(self) -> int:
        return len(self.tile_names)


# ---- names --------------------------------------------------------------------------------------------

def tile_latlon(name: str) -> Tuple[float, float]:
    """``satellite_<lat>_<lon>.png`` -> (lat, lon), split from the right (longitudes are negative)."""
    stem = name[:-4] if name.lower().endswith((".png", ".jpg")) else name
    parts = stem.rsplit("_", 2)
    if len(parts) != 3:
        raise ValueError(f"tile name {name!r} is not satellite_<lat>_<lon>.png")
    return float(parts[1]), float(parts[2])


def pano_latlon(name: str) -> Tuple[float, float]:
    """``<panoid>,<lat>,<lon>,.jpg`` -> (lat, lon); the id may itself begin with '-'."""
    parts = name.rsplit(",", 3)
    if len(parts) != 4:
        raise ValueError(f"panorama name {name!r} is not <panoid>,<lat>,<lon>,.jpg")
    return float(parts[1]), float(parts[2])


def tile_name(lat: float, lon: float) -> str:
    return f"satellite_{lat!r}_{lon!r}.png"


def pano_name(panoid: str, lat: float, lon: float) -> str:
    return f"{panoid},{lat:.6f},{lon:.6f},.jpg"


# ---- geometry -----------------------------------------------------------------------------------------

def iou_from_delta(delta: np.ndarray, size: float = TILE_PX) -> np.ndarray:
    """IoU of two ``size`` squares offset by ``delta`` (..., 2): a / (2 - a) with a the overlap fraction.

    The reference writes it ``1 / (1 - (1 - |d0|/L)(1 - |d1|/L) / 2) - 1`` (train_overall.py:123-132);
    here each factor is clipped at 0 so a (mislabelled) offset beyond one tile gives IoU 0, not a
    positive product of two negative factors."""
    d = np.abs(np.asarray(delta, np.float64))
    a = np.clip(1.0 - d[..., 0] / size, 0.0, None) * np.clip(1.0 - d[..., 1] / size, 0.0, None)
    return a / (2.0 - a)


def offset_to_latlon(lat_c, lon_c, delta, m_per_px) -> Tuple[np.ndarray, np.ndarray]:
    """Position of a panorama from its tile centre and ``delta`` (640-px units): the inverse of the label
    convention ``d = ((lat_c - lat) / deg_per_px_lat, (lon_c - lon) / deg_per_px_lon)``."""
    from geocli.metrics.geo import EARTH_RADIUS_M

    lat_c, lon_c = np.asarray(lat_c, np.float64), np.asarray(lon_c, np.float64)
    delta = np.asarray(delta, np.float64)
    deg_lat = np.degrees(np.asarray(m_per_px, np.float64) / EARTH_RADIUS_M)
    deg_lon = deg_lat / np.cos(np.radians(lat_c))
    return lat_c - delta[..., 0] * deg_lat, lon_c - delta[..., 1] * deg_lon


def latlon_to_delta(lat_c, lon_c, lat, lon, m_per_px) -> np.ndarray:
    """The label ``d`` of a panorama at (lat, lon) in the tile centred at (lat_c, lon_c)."""
    from geocli.metrics.geo import EARTH_RADIUS_M

    deg_lat = np.degrees(np.asarray(m_per_px, np.float64) / EARTH_RADIUS_M)
    deg_lon = deg_lat / np.cos(np.radians(np.asarray(lat_c, np.float64)))
    return np.stack([(np.asarray(lat_c) - lat) / deg_lat, (np.asarray(lon_c) - lon) / deg_lon], axis=-1)


# ---- files --------------------------------------------------------------------------------------------

def _lines(path: Path) -> List[Tuple[int, str]]:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found; is this a VIGOR folder with splits/<City>/?") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if line.strip()]


def read_tile_list(path: Path) -> List[str]:
    """Tile names of ``satellite_list.txt`` (CRLF or LF), each checked to parse as a position."""
    names = []
    for line, text in _lines(path):
        if len(text.split()) != 1:
            raise DataError(f"{path}:{line}: expected one tile name, got {len(text.split())} fields")
        try:
            tile_latlon(text)
        except ValueError as exc:
            raise DataError(f"{path}:{line}: {exc}") from None
        names.append(text)
    return names


def parse_label_line(text: str, path: Path, line: int) -> LabelRow:
    fields = text.split()
    if len(fields) != LABEL_FIELDS:
        raise DataError(f"{path}:{line}: {len(fields)} fields, expected {LABEL_FIELDS} "
                        "(panorama, then 4 x tile d0 d1)")
    try:
        pano_latlon(fields[0])
        deltas = np.array([[float(fields[2 + 3 * g]), float(fields[3 + 3 * g])] for g in range(4)], np.float32)
        for g in range(4):
            tile_latlon(fields[1 + 3 * g])
    except ValueError as exc:
        raise DataError(f"{path}:{line}: {exc}") from None
    if not np.isfinite(deltas).all():
        raise DataError(f"{path}:{line}: non-finite offset")
    return LabelRow(fields[0], tuple(fields[1 + 3 * g] for g in range(4)), deltas, line)  # type: ignore[arg-type]


def read_labels(path: Path) -> List[LabelRow]:
    """Every row of a label file; the first malformed one raises DataError naming file and line."""
    return [parse_label_line(text, path, line) for line, text in _lines(path)]


def label_file(root: Path, city: str, setting: str, split: str, labels: str) -> Path:
    if setting == "same-area":
        base = f"same_area_balanced_{split}"
    else:
        base = "pano_label_balanced"  # cross-area reads every panorama of its cities (ref dataloader.py:69-70)
    if labels == "corrected":
        return Path(root) / "splits__corrected" / city / f"{base}__corrected.txt"
    return Path(root) / "splits" / city / f"{base}.txt"


def tile_list_file(root: Path, city: str, labels: str) -> Path:
    folder = "splits__corrected" if labels == "corrected" else "splits"
    path = Path(root) / folder / city / "satellite_list.txt"
    if labels == "corrected" and not path.is_file():
        path = Path(root) / "splits" / city / "satellite_list.txt"
    return path


def check_choice(value: str, choices: Sequence[str], key: str) -> str:
    if value not in choices:
        raise ConfigError(f"{key} {value!r}: choose one of {', '.join(choices)}")
    return value


def load_split(root: Path, setting: str, split: str, labels: str = "original") -> VigorSplit:
    """Parse the split files of ``setting``/``split`` into index arrays (no image is read)."""
    check_choice(setting, SETTINGS, "data.setting")
    check_choice(split, ("train", "test"), "split")
    check_choice(labels, LABELS, "data.labels")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: folder not found")
    cities = SETTING_CITIES[(setting, split)]
    tile_names: List[str] = []
    tile_paths: List[str] = []
    index: Dict[Tuple[str, str], int] = {}
    for city in cities:
        for name in read_tile_list(tile_list_file(root, city, labels)):
            index[(city, name)] = len(tile_names)
            tile_names.append(name)
            tile_paths.append(f"{city}/satellite/{name}")
    pano_names, pano_paths, pano_city, positive, semi, deltas, m_px = [], [], [], [], [], [], []
    for city in cities:
        path = label_file(root, city, setting, split, labels)
        scale = CORRECTED_M_PER_PX[city] if labels == "corrected" else ORIGINAL_M_PER_PX
        for row in read_labels(path):
            ids = []
            for name in row.tiles:
                if (city, name) not in index:
                    raise DataError(f"{path}:{row.line}: tile {name} is not in "
                                    f"{tile_list_file(root, city, labels)}")
                ids.append(index[(city, name)])
            pano_names.append(row.panorama)
            pano_paths.append(f"{city}/panorama/{row.panorama}")
            pano_city.append(city)
            positive.append(ids[0])
            semi.append(ids[1:])
            deltas.append(row.deltas)
            m_px.append(scale)
    if not pano_names:
        raise DataError(f"{root}: the {setting} {split} split holds no panoramas")
    return VigorSplit(
        root=root, setting=setting, split=split, labels=labels, tile_names=tile_names, tile_paths=tile_paths,
        tile_latlon=np.array([tile_latlon(n) for n in tile_names], np.float64),
        pano_names=pano_names, pano_paths=pano_paths,
        pano_latlon=np.array([pano_latlon(n) for n in pano_names], np.float64),
        positive=np.array(positive, np.int64), semi=np.array(semi, np.int64).reshape(-1, 3),
        deltas=np.stack(deltas).astype(np.float32), m_per_px=np.array(m_px, np.float64), pano_city=pano_city)
