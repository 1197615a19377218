"""Random access to training data on disk, for loaders that run in worker processes.

Every reader here is picklable, holds only paths and small indexes, and opens its files lazily in the
process that reads (after a pickle round trip the handles are reopened), so one reader can be handed to
any number of data workers and a loader over a million records holds only its index. None imports
MindSpore.

* :class:`MindRecordRows`: rows of MindRecord files by index. MindSpore's ``FileReader`` only streams
  a file from its start and ``MindDataset`` needs the whole dataset engine, so rows are located through
  the file's own index instead: the ``.db`` beside every MindRecord file is SQLite, its ``INDEXES``
  table gives each row's raw page (msgpack-encoded scalars) and blob page (bytes and arrays) with
  start/end offsets, and page ``p`` starts at ``header_size + p * page_size`` of the data file
  (header: 8-byte length + JSON). One row costs one indexed query and two ``pread`` calls.
* :class:`ImageFiles`: image files listed by a format parser, decoded to RGB.
* :class:`NpzMembers` / :func:`open_npy`: arrays in an uncompressed ``.npz`` / a ``.npy``, memory-mapped.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from geocli.errors import DataError

PathLike = Union[str, os.PathLike]
_NUMPY_TYPES = {"int32": np.int32, "int64": np.int64, "float32": np.float32, "float64": np.float64}


# ---- msgpack (the raw part of a MindRecord row) ------------------------------------------------------

def _unpack(buf: bytes, pos: int = 0) -> Tuple[Any, int]:
    """Decode one msgpack value at ``pos`` (the subset MindRecord writes: maps, strings, numbers, nil)."""
    b = buf[pos]
    pos += 1
    if b <= 0x7F:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0x80 <= b <= 0x8F:
        return _unpack_map(buf, pos, b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return _unpack_array(buf, pos, b & 0x0F)
    if 0xA0 <= b <= 0xBF:
        n = b & 0x1F
        return buf[pos:pos + n].decode("utf-8"), pos + n
    fixed = {0xCC: "B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: "b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
             0xCA: ">f", 0xCB: ">d"}
    if b in fixed:
        fmt = fixed[b]
        return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)
    if b == 0xC0:
        return None, pos
    if b in (0xC2, 0xC3):
        return b == 0xC3, pos
    sized = {0xD9: "B", 0xDA: ">H", 0xDB: ">I", 0xC4: "B", 0xC5: ">H", 0xC6: ">I"}
    if b in sized:
        n = struct.unpack_from(sized[b], buf, pos)[0]
        pos += struct.calcsize(sized[b])
        raw = bytes(buf[pos:pos + n])
        return (raw.decode("utf-8") if b in (0xD9, 0xDA, 0xDB) else raw), pos + n
    if b in (0xDC, 0xDD, 0xDE, 0xDF):
        fmt = ">H" if b in (0xDC, 0xDE) else ">I"
        n = struct.unpack_from(fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return (_unpack_array if b in (0xDC, 0xDD) else _unpack_map)(buf, pos, n)
    raise ValueError(f"unsupported msgpack type byte 0x{b:02x}")


def _unpack_map(buf: bytes, pos: int, n: int) -> Tuple[Dict[Any, Any], int]:
    out = {}
    for _ in range(n):
        key, pos = _unpack(buf, pos)
        out[key], pos = _unpack(buf, pos)
    return out, pos


def _unpack_array(buf: bytes, pos: int, n: int) -> Tuple[List[Any], int]:
    out = []
    for _ in range(n):
        value, pos = _unpack(buf, pos)
        out.append(value)
    return out, pos


# ---- MindRecord ------------------------------------------------------------------------------------

def _read_header(path: Path) -> Dict[str, Any]:
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if not 0 < size < (1 << 28):
                raise ValueError("bad header length")
            header = json.loads(f.read(size))
        header["header_size"], header["page_size"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise DataError(f"{path}: not a MindRecord file this reader understands ({exc})") from None
    if header.get("compression_size"):
        raise DataError(f"{path}: compressed MindRecord pages are not supported for random access; "
                        "write the file without compression")
    return header


def shard_paths(path: PathLike) -> List[Path]:
    """The files of one MindRecord set: ``x.mindrecord`` alone, or the shards ``x.mindrecord0..N``
    named in the first shard's header (``FileWriter(shard_num=N)``)."""
    path = Path(path)
    candidates = [path] if path.is_file() else [Path(str(path) + "0")]
    first = candidates[0]
    if not first.is_file():
        raise DataError(f"{path}: MindRecord file not found; create it with `geoloc data convert-mindrecord`")
    names = _read_header(first).get("shard_addresses") or [first.name]
    return [first.parent / Path(n).name for n in names]


class MindRecordRows:
    """Rows of one MindRecord set by global index (shards concatenated in shard order).

    ``rows[i]`` -> dict of the requested ``columns`` (all by default): ``bytes`` fields as bytes, array
    fields as np.ndarray (shaped by the schema), strings/ints/floats as Python values. The row count
    comes from the ``.db`` index; no data page is read until a row is asked for.
    """

    def __init__(self, paths: Union[PathLike, Sequence[PathLike]], columns: Optional[Sequence[str]] = None):
        if isinstance(paths, (str, os.PathLike)):
            files = shard_paths(paths)
        else:
            files = [Path(p) for p in paths]
        if not files:
            raise DataError("MindRecordRows: no MindRecord files given")
        self.files = files
        self._layout = []
        counts = []
        for f in files:
            if not f.is_file() or not Path(str(f) + ".db").is_file():
                raise DataError(f"{f}: MindRecord file (or its .db index) not found")
            header = _read_header(f)
            schema = header["schema"][0]
            self._layout.append((int(header["header_size"]), int(header["page_size"]),
                                 list(schema.get("blob_fields", []))))
            counts.append(self._count(f))
        self.schema: Dict[str, Dict[str, Any]] = _read_header(files[0])["schema"][0]["schema"]
        self.fields = list(self.schema)
        unknown = [c for c in (columns or []) if c not in self.schema]
        if unknown:
            raise DataError(f"{files[0]}: no field {unknown[0]!r}; fields: {', '.join(self.fields)}")
        self.columns = list(columns) if columns else list(self.fields)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._handles: Dict[int, Tuple[int, sqlite3.Connection]] = {}
        self._pid = None

    @staticmethod
    def _count(path: Path) -> int:
        try:
            with sqlite3.connect(f"file:{path}.db?mode=ro", uri=True) as con:
                return int(con.execute("SELECT COUNT(DISTINCT ROW_ID) FROM INDEXES").fetchone()[0])
        except sqlite3.Error as exc:
            raise DataError(f"{path}.db: not a readable MindRecord index ({exc})") from None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, None
        return state

    def __del__(self):
        self.close()

    def close(self) -> None:
        for fd, con in getattr(self, "_handles", {}).values():
            try:
                os.close(fd)
                con.close()
            except Exception:
                pass
        self._handles = {}

    def locate(self, index: int) -> Tuple[int, int]:
        """(shard number, row within the shard) of a global row index."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return shard, int(index - self.offsets[shard])

    def where(self, index: int) -> str:
        shard, row = self.locate(int(index))
        return f"{self.files[shard]} row {row}"

    def _handle(self, shard: int) -> Tuple[int, sqlite3.Connection]:
        if self._pid != os.getpid():  # opened in another process (before a fork): reopen here
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            f = self.files[shard]
            self._handles[shard] = (os.open(f, os.O_RDONLY),
                                    sqlite3.connect(f"file:{f}.db?mode=ro", uri=True, check_same_thread=False))
        return self._handles[shard]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = int(index)
        shard, row = self.locate(index)
        fd, con = self._handle(shard)
        header_size, page_size, blob_fields = self._layout[shard]
        where = f"{self.files[shard]} row {row}"
        try:
            found = con.execute("SELECT PAGE_ID_RAW, PAGE_OFFSET_RAW, PAGE_OFFSET_RAW_END, PAGE_ID_BLOB, "
                                "PAGE_OFFSET_BLOB, PAGE_OFFSET_BLOB_END FROM INDEXES WHERE ROW_ID = ? LIMIT 1",
                                (row,)).fetchone()
        except sqlite3.Error as exc:
            raise DataError(f"{where}: index query failed ({exc})") from None
        if found is None:
            raise DataError(f"{where}: not in the .db index")
        raw_page, raw0, raw1, blob_page, blob0, blob1 = found
        out: Dict[str, Any] = {}
        wanted = set(self.columns)
        if wanted - set(blob_fields):
            raw = self._pread(fd, header_size + raw_page * page_size + raw0, raw1 - raw0, where)
            try:
                values, _ = _unpack(raw, 8)
            except (ValueError, IndexError, struct.error, UnicodeDecodeError) as exc:
                raise DataError(f"{where}: corrupt raw data ({exc})") from None
            out.update({k: v for k, v in values.items() if k in wanted})
        if wanted & set(blob_fields):
            blob = self._pread(fd, header_size + blob_page * page_size + blob0, blob1 - blob0, where)
            out.update(self._split_blob(blob, blob_fields, wanted, where))
        return out

    @staticmethod
    def _pread(fd: int, offset: int, size: int, where: str) -> bytes:
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise DataError(f"{where}: file is truncated (wanted {size} bytes at offset {offset})")
        return data

    def _split_blob(self, blob: bytes, fields: List[str], wanted, where: str) -> Dict[str, Any]:
        """Blob layout: u64 LE total, then the one field's bytes; or, with several blob fields, each as
        u64 BE length + bytes, in the header's ``blob_fields`` order."""
        parts: Dict[str, bytes] = {}
        if len(fields) == 1:
            parts[fields[0]] = blob[8:]
        else:
            pos = 8
            for name in fields:
                if pos + 8 > len(blob):
                    raise DataError(f"{where}: corrupt blob data")
                n = struct.unpack_from(">Q", blob, pos)[0]
                parts[name] = blob[pos + 8:pos + 8 + n]
                pos += 8 + n
        out: Dict[str, Any] = {}
        for name, data in parts.items():
            if name not in wanted:
                continue
            spec = self.schema[name]
            if spec["type"] == "bytes":
                out[name] = data
            else:
                arr = np.frombuffer(data, dtype=_NUMPY_TYPES[spec["type"]])
                shape = spec.get("shape")
                out[name] = arr.reshape(shape) if shape and -1 not in shape else arr
        return out

    def column(self, name: str) -> np.ndarray:
        """All values of an indexed scalar field (MindSpore indexes string and number fields), read from
        the ``.db`` files only: e.g. labels for a P x K sampler without touching any image."""
        values: List[Any] = []
        for f in self.files:
            with sqlite3.connect(f"file:{f}.db?mode=ro", uri=True) as con:
                cols = [r[1] for r in con.execute("PRAGMA table_info(INDEXES)")]
                if f"{name}_0" not in cols:
                    raise DataError(f"{f}.db: field {name!r} is not indexed (indexed: "
                                    f"{', '.join(c[:-2] for c in cols if c.endswith('_0'))})")
                values += [r[0] for r in con.execute(f'SELECT "{name}_0" FROM INDEXES ORDER BY ROW_ID')]
        kind = self.schema.get(name, {}).get("type", "string")
        return np.asarray(values, dtype=_NUMPY_TYPES.get(kind, object))


# ---- image files -----------------------------------------------------------------------------------

def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H, W, 3); DataError naming ``where`` if they do not decode."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise DataError(f"{where}: cannot be decoded as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageFiles:
    """Image files by index (a format parser lists them; this reads them)."""

    def __init__(self, paths: Sequence[PathLike], root: Optional[PathLike] = None):
        self.root = Path(root) if root is not None else None
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        p = Path(self.paths[int(index)])
        return self.root / p if self.root is not None else p

    def read_bytes(self, index: int) -> bytes:
        path = self.path(index)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None

    def decode(self, index: int) -> np.ndarray:
        return decode_image(self.read_bytes(index), str(self.path(index)))


# ---- memory-mapped arrays --------------------------------------------------------------------------

def open_npy(path: PathLike) -> np.ndarray:
    """A ``.npy`` file memory-mapped read-only (object arrays refused)."""
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None


class NpzMembers:
    """Arrays of an ``.npz`` archive memory-mapped in place, never loaded (a 4.8 GB train.npz costs no
    memory until rows are read). Members must be stored uncompressed (``np.savez``, not
    ``np.savez_compressed``); ``geoloc data npz-prep`` rewrites a compressed archive."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._members = self._scan()
        self._maps: Dict[str, np.ndarray] = {}

    def _scan(self) -> Dict[str, Tuple[int, int, str, Tuple[int, ...], bool]]:
        members = {}
        try:
            with zipfile.ZipFile(self.path) as z, open(self.path, "rb") as f:
                for info in z.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    name = info.filename[:-4]
                    if info.compress_type != zipfile.ZIP_STORED:
                        members[name] = (-1, 0, "", (), False)
                        continue
                    # local file header: 30 bytes + name + extra, then the .npy bytes
                    f.seek(info.header_offset)
                    local = f.read(30)
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    start = info.header_offset + 30 + name_len + extra_len
                    f.seek(start)
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    if dtype.hasobject:
                        raise DataError(f"{self.path}: member {name!r} holds Python objects; refusing to load")
                    members[name] = (f.tell(), 0, dtype.str, tuple(shape), bool(fortran))
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise DataError(f"{self.path}: not a readable .npz archive ({exc})") from None
        return members

    @property
    def names(self) -> List[str]:
        return list(self._members)

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._members:
            raise DataError(f"{self.path}: no array {name!r}; arrays: {', '.join(self._members)}")
        if name not in self._maps:
            offset, _, dtype, shape, fortran = self._members[name]
            if offset < 0:
                raise DataError(f"{self.path}: array {name!r} is compressed and cannot be memory-mapped; "
                                "rewrite the archive with np.savez (or `geoloc data npz-prep`)")
            self._maps[name] = np.memmap(self.path, dtype=np.dtype(dtype), mode="r", offset=offset,
                                         shape=shape, order="F" if fortran else "C")
        return self._maps[name]


__all__ = ["MindRecordRows", "ImageFiles", "NpzMembers", "open_npy", "decode_image", "shard_paths"]
