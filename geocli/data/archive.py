"""Safe, incremental unpacking of tar, tar.gz and zip archives.

Why not ``tarfile.extractall``: a downloaded archive is untrusted. Every member is checked before anything is
written: absolute paths, ``..``, symlinks or hard links that lead outside the destination, members written
through a symlink of the same archive, and device files are refused with an error naming the member. Files
are written through a temporary name and renamed, so an interrupted run never leaves half a file; a file that
is already there with the same size is kept (the re-run of an interrupted extraction), a different one is
an error unless ``overwrite``. Finished archives are recorded in ``DEST/.geoloc-extracted.json`` so a re-run
skips them, even after ``--delete-archives`` removed them. Archives are never deleted here.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

from geocli.errors import DataError
from geocli.fileio import atomic_write_text

MANIFEST_NAME = ".geoloc-extracted.json"


@dataclass
class Entry:
    """One archive member in a format-neutral form."""

    name: str
    kind: str  # file | dir | symlink | hardlink | special
    link: str = ""
    size: int = 0
    mode: int = 0o644
    mtime: float = 0.0
    open: Optional[Callable] = None


class Manifest:
    """The record of archives already unpacked into a destination (JSON, rewritten atomically)."""

    def __init__(self, dest: Path):
        self.path = Path(dest) / MANIFEST_NAME
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.data = {"archives": {}}
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: unreadable extraction manifest ({exc}); delete it to re-extract") from None

    def done(self, key: str) -> bool:
        return key in self.data["archives"]

    def record(self, key: str, info: dict) -> None:
        self.data["archives"][key] = info
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True))


def _clean(raw: str, archive: Path) -> str:
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise DataError(f"{archive}: refusing member {raw!r}: absolute path; nothing was extracted")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive}: refusing member {raw!r}: '..' in its path; nothing was extracted")
    return "/".join(parts)


def _tar_entries(path: Path) -> Iterator[Entry]:
    """Members in archive order; a member's ``open`` is valid only until the next member is read."""
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            kind = ("file" if m.isfile() else "dir" if m.isdir() else "symlink" if m.issym()
                    else "hardlink" if m.islnk() else "special")
            yield Entry(m.name, kind, m.linkname, m.size, m.mode, m.mtime, lambda m=m: tf.extractfile(m))


def _zip_entries(path: Path) -> Iterator[Entry]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            fmt = stat.S_IFMT(mode)  # 0 when the zip records permissions only
            kind = ("dir" if info.is_dir() else "symlink" if stat.S_ISLNK(mode)
                    else "special" if fmt and fmt not in (stat.S_IFREG, stat.S_IFDIR) else "file")
            link = zf.read(info).decode("utf-8", "replace") if kind == "symlink" else ""
            mtime = time.mktime(info.date_time + (0, 0, -1))
            yield Entry(info.filename, kind, link, info.file_size, mode or 0o644, mtime,
                        lambda info=info: zf.open(info))


def entries(path: Path) -> Iterator[Entry]:
    if zipfile.is_zipfile(path):
        return _zip_entries(path)
    if tarfile.is_tarfile(path):
        return _tar_entries(path)
    raise DataError(f"{path}: not a tar or zip archive (a partial or wrong download?); delete it and re-run")


def _through(name: str, symlinks: set) -> bool:
    """True when ``name`` (or one of its folders) is a symlink member seen earlier."""
    parts = name.split("/")
    return any("/".join(parts[:i]) in symlinks for i in range(1, len(parts) + 1))


def _stays_inside(path: str, symlinks: set) -> bool:
    """Walk ``path`` (relative to the destination) step by step: it must never climb above the top and never
    pass through a symlink member, whose real target a lexical check cannot know."""
    stack: List[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not stack:
                return False
            stack.pop()
            continue
        stack.append(comp)
        if "/".join(stack) in symlinks:
            return False
    return True


def check_members(members: Sequence[Entry], archive: Path) -> None:
    """Refuse the whole archive if any member could write outside the destination; raises DataError."""
    symlinks: set = set()
    for e in members:
        name = _clean(e.name, archive)
        refuse = None
        if e.kind == "special":
            refuse = "device, FIFO or other special file"
        elif "/" in name and _through(posixpath.dirname(name), symlinks):
            refuse = "written through a symlink of the same archive"
        elif e.kind in ("symlink", "hardlink"):
            # symlink targets are relative to the link's folder, hard-link targets to the archive's top
            start = posixpath.dirname(name) if e.kind == "symlink" else ""
            link = e.link.replace("\\", "/")
            if link.startswith("/") or not _stays_inside(posixpath.join(start, link), symlinks):
                refuse = f"{e.kind} to {e.link!r} points outside the destination (or through a symlink)"
            if e.kind == "symlink":
                symlinks.add(name)
        if refuse:
            raise DataError(f"{archive}: refusing member {e.name!r}: {refuse}; nothing was extracted")


def _inside(path: Path, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def _write(e: Entry, root: Path, root_real: str, archive: Path, overwrite: bool) -> bool:
    """Write one checked member; returns False when an identical-size file was already there."""
    name = _clean(e.name, archive)
    if not name:
        return True
    target = root / name
    if not _inside(target.parent, root_real):
        raise DataError(f"{archive}: refusing member {e.name!r}: {target.parent} leads outside {root}")
    if e.kind == "dir":
        target.mkdir(parents=True, exist_ok=True)
        return True
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        if e.kind == "file" and target.is_file() and target.stat().st_size == e.size and not overwrite:
            return False
        if not overwrite or target.is_dir():
            raise DataError(f"{target} already exists and differs from {archive.name}:{e.name}; "
                            f"move it away or pass --overwrite")
        target.unlink()
    if e.kind == "symlink":
        if not _inside(target.parent / e.link, root_real):
            raise DataError(f"{archive}: refusing member {e.name!r}: symlink resolves outside {root}")
        os.symlink(e.link, target)
    elif e.kind == "hardlink":
        source = root / _clean(e.link, archive)
        if not source.is_file() or not _inside(source, root_real):
            raise DataError(f"{archive}: member {e.name!r} links to {e.link!r}, which the archive did not contain")
        shutil.copy2(source, target)
    else:
        tmp = target.with_name(f".{target.name}.geoloc-tmp")
        with e.open() as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, (e.mode & 0o777) | 0o600)
        os.replace(tmp, target)
        os.utime(target, (e.mtime, e.mtime))
    return True


def extract(archive: Path, dest: Path, *, manifest: Optional[Manifest] = None, key: Optional[str] = None,
            exclude: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Unpack ``archive`` into ``dest`` safely and record it in ``manifest``; returns ``dest``.

    ``exclude`` holds member base names that are skipped (Paris's corrupt images). Already recorded archives
    are skipped unless ``overwrite``. The archive itself is left in place.
    """
    archive, dest = Path(archive), Path(dest)
    key = key or archive.name
    if manifest is not None and manifest.done(key) and not overwrite:
        return dest
    skip = set(exclude)
    members: List[Entry] = [e for e in entries(archive) if posixpath.basename(e.name) not in skip]
    check_members(members, archive)
    dest.mkdir(parents=True, exist_ok=True)
    root_real = os.path.realpath(dest)
    written = kept = 0
    for e in entries(archive):
        if posixpath.basename(e.name) in skip:
            continue
        if _write(e, dest, root_real, archive, overwrite):
            written += 1
        else:
            kept += 1
    if manifest is not None:
        manifest.record(key, {"archive_bytes": archive.stat().st_size, "members": len(members),
                              "written": written, "kept_existing": kept, "excluded": sorted(skip),
                              "into": os.path.relpath(dest, manifest.path.parent),
                              "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return dest
