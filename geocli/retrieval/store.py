"""HDF5 feature store: one file per image set, one group per image, written incrementally.

Following hloc's feature files: extraction skips names already present, so a re-run after a crash or
a kill resumes where it stopped (house convention 6). Two details make that safe:

- a group is written under a temporary parent and moved to its final name only when complete, and the
  file is flushed after each image, so a killed run leaves whole images or nothing (a leftover
  temporary parent is removed on the next open);
- the file records which model, preset and checkpoint produced it; appending features from a different
  checkpoint raises instead of silently mixing two embeddings in one search.

Image names may contain ``/`` (HDF5's path separator): they are stored percent-escaped (``/`` ->
``%2F``, ``%`` -> ``%25``, a leading ``.`` -> ``%2E``), which is reversible and keeps keys readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import unquote

import h5py
import numpy as np

from geocli.errors import DataError

#: Attributes that must agree between a store and the run appending to it.
IDENTITY_ATTRS = ("model", "preset", "checkpoint")

#: Parent of groups still being written; starts with "." so it can never equal an escaped name.
_PARTIAL = ".partial"


def escape_name(name: str) -> str:
    """HDF5-safe, reversible key for an image name (see the module docstring)."""
    if not name:
        raise ValueError("an image name cannot be empty")
    key = name.replace("%", "%25").replace("/", "%2F")
    return "%2E" + key[1:] if key.startswith(".") else key


def unescape_name(key: str) -> str:
    return unquote(key)


class FeatureStore:
    """Per-image arrays in one HDF5 file. Use as a context manager; ``mode`` is ``r``, ``a`` or ``w``.

    ``attrs`` (model, preset, checkpoint, ...) are written on creation; when appending to an existing
    store, any of :data:`IDENTITY_ATTRS` given here must match the stored value, else DataError.
    """

    def __init__(self, path: Union[str, Path], mode: str = "a",
                 attrs: Optional[Mapping[str, object]] = None):
        if mode not in ("r", "a", "w"):
            raise ValueError(f"mode must be 'r', 'a' or 'w', got {mode!r}")
        self.path = Path(path)
        if mode == "r" and not self.path.is_file():
            raise DataError(f"{self.path}: feature file not found; run the extraction first")
        if mode != "r":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = h5py.File(self.path, mode)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open as HDF5 ({exc})") from None
        if mode != "r":
            if _PARTIAL in self._file:
                del self._file[_PARTIAL]  # an image a killed run did not finish
            self._check_and_set_attrs(dict(attrs or {}))

    def _check_and_set_attrs(self, attrs: Dict[str, object]) -> None:
        for key in IDENTITY_ATTRS:
            if key in attrs and key in self._file.attrs and self._file.attrs[key] != str(attrs[key]):
                raise DataError(
                    f"{self.path}: holds features from {key} {self._file.attrs[key]!r}, not "
                    f"{attrs[key]!r}; write to another file or pass --overwrite to start afresh")
        for key, value in attrs.items():
            self._file.attrs[key] = str(value)
        self._file.flush()

    # ---- context manager --------------------------------------------------------------------------
    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    # ---- reading ----------------------------------------------------------------------------------
    @property
    def attrs(self) -> Dict[str, str]:
        return {key: str(value) for key, value in self._file.attrs.items()}

    def __contains__(self, name: str) -> bool:
        return escape_name(name) in self._file

    def __len__(self) -> int:
        return sum(1 for key in self._file if key != _PARTIAL)

    def names(self) -> List[str]:
        """Image names in stored key order (deterministic, independent of extraction order)."""
        return [unescape_name(key) for key in self._file if key != _PARTIAL]

    def read(self, name: str, keys: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """The arrays of one image (all, or only ``keys``)."""
        key = escape_name(name)
        if key not in self._file:
            raise DataError(f"{self.path}: no features for image {name!r}")
        group = self._file[key]
        wanted = list(group.keys()) if keys is None else list(keys)
        missing = [k for k in wanted if k not in group]
        if missing:
            raise DataError(f"{self.path}: image {name!r} has no {', '.join(missing)} "
                            f"(has {', '.join(group.keys())})")
        return {k: group[k][()] for k in wanted}

    def stack_global(self, key: str = "global", names: Optional[Sequence[str]] = None
                     ) -> Tuple[List[str], np.ndarray]:
        """``(names, matrix)``: one float32 row per image, for global search.

        Rows follow ``names`` (default: :meth:`names`). Raises DataError when an image lacks ``key``
        or descriptor sizes differ.
        """
        names = self.names() if names is None else list(names)
        if not names:
            raise DataError(f"{self.path}: no images stored")
        first = self.read(names[0], [key])[key].ravel()
        matrix = np.empty((len(names), first.size), dtype=np.float32)
        for row, name in enumerate(names):
            vector = self.read(name, [key])[key].ravel()
            if vector.size != first.size:
                raise DataError(f"{self.path}: {key!r} of {name!r} has {vector.size} values, "
                                f"{names[0]!r} has {first.size}")
            matrix[row] = vector
        return names, matrix

    # ---- writing ----------------------------------------------------------------------------------
    def write(self, name: str, arrays: Mapping[str, np.ndarray], overwrite: bool = False,
              attrs: Optional[Mapping[str, object]] = None) -> bool:
        """Stores one image's arrays; returns False (and writes nothing) if present and not overwrite.

        The group appears under its final name only once every array is written, then the file is
        flushed, so a kill during this call loses at most this image.
        """
        key = escape_name(name)
        if key in self._file:
            if not overwrite:
                return False
            del self._file[key]
        partial = self._file.require_group(_PARTIAL)
        if key in partial:
            del partial[key]
        group = partial.create_group(key)
        for array_name, array in arrays.items():
            group.create_dataset(array_name, data=np.asarray(array))
        for attr_name, value in (attrs or {}).items():
            group.attrs[attr_name] = value
        self._file.move(f"{_PARTIAL}/{key}", key)
        self._file.flush()
        return True
