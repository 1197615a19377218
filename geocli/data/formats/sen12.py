"""The SEN1-2 layout (Schmitt, Hughes, Zhu 2018): co-registered Sentinel-1 SAR / Sentinel-2 optical patches.

    <root>/ROIs1158_spring/s1_<n>/ROIs1158_spring_s1_<n>_p<k>.png   SAR, 8-bit, one channel
    <root>/ROIs1158_spring/s2_<n>/ROIs1158_spring_s2_<n>_p<k>.png   optical twin, 8-bit RGB
    (and ROIs1868_summer, ROIs1970_fall, ROIs2017_winter)

The twin of a SAR file is found by replacing ``s1_`` with ``s2_`` in its folder and file name. A scene is
one ``s1_<n>`` folder of one season: its patches are cut from one acquisition and overlap, which is
why splits must keep whole scenes apart. This module only scans names; it decodes no image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from geocli.errors import DataError

#: The four season folders of the published dataset.
SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")

_SEASON = re.compile(r"^ROIs\d+_(spring|summer|fall|winter)$")
_FILE = re.compile(r"^(?P<season>ROIs\d+_[a-z]+)_s(?P<sensor>[12])_(?P<scene>\d+)_p(?P<patch>\d+)\.png$")


@dataclass(frozen=True)
class Pair:
    """One co-registered patch pair; ``scene`` is (season folder, scene number)."""

    season: str
    scene_no: int
    patch: int
    sar: Path
    optical: Path

    @property
    def scene(self) -> Tuple[str, int]:
        return self.season, self.scene_no

    @property
    def name(self) -> str:
        return f"{self.season}/s1_{self.scene_no}/p{self.patch}"


def sar_path(root: Path, season: str, scene: int, patch: int) -> Path:
    return Path(root) / season / f"s1_{scene}" / f"{season}_s1_{scene}_p{patch}.png"


def optical_path(root: Path, season: str, scene: int, patch: int) -> Path:
    return Path(root) / season / f"s2_{scene}" / f"{season}_s2_{scene}_p{patch}.png"


def season_folders(root: Path) -> List[Path]:
    """The season folders under ``root`` (``ROIs<id>_<season>``), sorted; a clear error if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--root {root}: folder not found")
    found = sorted(p for p in root.iterdir() if p.is_dir() and _SEASON.match(p.name))
    if not found:
        raise DataError(f"--root {root}: no SEN1-2 season folders in it (expected e.g. {', '.join(SEASONS[:2])}, "
                        "each with s1_<n>/ and s2_<n>/ scene folders)")
    return found


def scan(root: Path, skip_bad: bool = False) -> Tuple[List[Pair], List[Path]]:
    """Every SAR/optical pair under ``root`` in a deterministic order (season, scene, patch number).

    A file without its twin is an error naming both paths, unless ``skip_bad``: then it is returned in
    the second list (reported, never silently dropped)."""
    pairs: List[Pair] = []
    orphans: List[Path] = []
    for season_dir in season_folders(root):
        season = season_dir.name
        for sensor_dir in sorted(season_dir.iterdir()):
            m = re.match(r"^s([12])_(\d+)$", sensor_dir.name)
            if not m or not sensor_dir.is_dir():
                continue
            sensor, scene = m.group(1), int(m.group(2))
            for f in sorted(sensor_dir.iterdir()):
                fm = _FILE.match(f.name)
                if not fm or fm["season"] != season or int(fm["scene"]) != scene or fm["sensor"] != sensor:
                    continue
                patch = int(fm["patch"])
                twin = (optical_path if sensor == "1" else sar_path)(root, season, scene, patch)
                if not twin.is_file():
                    if not skip_bad:
                        raise DataError(f"{f}: its {'optical' if sensor == '1' else 'SAR'} twin {twin} is missing; "
                                        "restore it or pass --skip-bad to leave the pair out")
                    orphans.append(f)
                    continue
                if sensor == "1":
                    pairs.append(Pair(season, scene, patch, f, twin))
    pairs.sort(key=lambda p: (p.season, p.scene_no, p.patch))
    if not pairs:
        raise DataError(f"--root {root}: no SAR/optical pairs found (files must be named like "
                        f"{sar_path(Path('.'), SEASONS[0], 1, 1)})")
    return pairs, orphans


def scene_of(path: Path) -> Optional[Tuple[str, int]]:
    """(season, scene) of a SEN1-2 file name, or None for other names."""
    m = _FILE.match(Path(path).name)
    return (m["season"], int(m["scene"])) if m else None
