"""Image files given on a command line: the one place that expands folders into the images in them.

Every inference command (``retrieve``, ``match``, gallery and panorama lists) takes files or folders;
one function keeps their rules the same: files as given, folders searched recursively and sorted (a
stable order, so results and feature files do not depend on the file system's listing order).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from geocli.errors import UsageError

#: Suffixes OpenCV decodes that the datasets of geoloc use (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def image_files(inputs: Sequence[Path]) -> List[Path]:
    """Files as given; folders expanded to the images in them (recursively, sorted)."""
    found: List[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    if not found:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return found
