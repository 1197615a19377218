"""MindRecord helpers shared by every dataset conversion: sizing, incremental and atomic writes, reading.

* Sizing: MindRecord stores each row's blob inside one page, so the page must hold the largest blob,
  while the defaults (32 MB pages, 16 MB header) make a 50-image file weigh 48 MB. Both are sized from
  the data instead.
* Re-runs skip finished work: next to ``name.mindrecord`` (+ ``.db``) a ``name.mindrecord.json``
  manifest records the row count and a fingerprint of the source; it is written last, so its presence
  means the conversion completed. Files without a manifest (a user's own, or an interrupted run) and
  files converted from a different source are only replaced with ``overwrite``.
* Writes go to a temporary folder beside the target and are moved in place when committed, so an
  interrupted conversion never leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

from geocli.errors import DataError

MIN_PAGE, MAX_PAGE = 1 << 15, 1 << 28
MIN_HEADER, MAX_HEADER = 1 << 14, 1 << 27


def _pow2_at_least(n: int, low: int, high: int) -> int:
    size = low
    while size < n and size < high:
        size <<= 1
    return size


def page_size_for(max_row_bytes: int) -> int:
    """A power-of-two page holding about four of the largest rows (less waste than one per page)."""
    if max_row_bytes * 4 > MAX_PAGE and max_row_bytes + 1024 > MAX_PAGE:
        raise DataError(f"a row of {max_row_bytes} bytes exceeds MindRecord's largest page ({MAX_PAGE} bytes)")
    return _pow2_at_least(max_row_bytes * 4 + 4096, MIN_PAGE, MAX_PAGE)


def header_size_for(n_rows: int, total_bytes: int, page_size: int) -> int:
    """Room for the schema and the index of every page (about 256 bytes each, generously)."""
    pages = total_bytes // page_size + n_rows // 64 + 16
    return _pow2_at_least(pages * 256 + 8192, MIN_HEADER, MAX_HEADER)


def manifest_path(path: Path) -> Path:
    return Path(str(path) + ".json")


def status(path: Path, fingerprint: Dict[str, Any]) -> str:
    """'absent', 'done' (complete, same source), 'stale' (complete, other source) or 'foreign'."""
    path = Path(path)
    manifest = manifest_path(path)
    if manifest.is_file():
        try:
            saved = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError:
            return "foreign"
        if not (path.is_file() and Path(str(path) + ".db").is_file()):
            return "foreign"
        return "done" if saved.get("fingerprint") == fingerprint else "stale"
    if path.exists() or Path(str(path) + ".db").exists():
        return "foreign"
    return "absent"


def check_writable(path: Path, fingerprint: Dict[str, Any], overwrite: bool) -> bool:
    """True when ``path`` must be (re)written, False when it is complete already; raises when it holds
    something this conversion may not replace without ``overwrite``."""
    state = status(path, fingerprint)
    if state == "done" and not overwrite:
        return False
    if state == "stale" and not overwrite:
        raise DataError(f"{path}: was converted from a different source; pass --overwrite to convert again")
    if state == "foreign" and not overwrite:
        raise DataError(f"{path}: exists but was not completed by geoloc (a file of yours, or an interrupted "
                        "run); pass --overwrite to replace it")
    return True


def write(path: Path, schema: Dict[str, Any], rows: Iterable[Dict[str, Any]], *, n_rows: int,
          max_row_bytes: int, total_bytes: int, fingerprint: Dict[str, Any], schema_name: str = "geoloc",
          chunk: int = 64, progress: Optional[Callable[[int], None]] = None) -> Path:
    """Write ``rows`` to ``path`` (replacing it), then its manifest; ``progress(k)`` after every k rows."""
    from mindspore.mindrecord import FileWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = path.parent / f".tmp-{path.name}-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    try:
        tmp = tmp_dir / path.name
        page = page_size_for(max_row_bytes)
        writer = FileWriter(str(tmp), shard_num=1, overwrite=True)
        writer.set_page_size(page)
        writer.set_header_size(header_size_for(n_rows, total_bytes, page))
        writer.add_schema(schema, schema_name)
        written, batch = 0, []

        def flush() -> int:
            writer.write_raw_data(batch)
            if progress is not None:
                progress(len(batch))
            return len(batch)

        for row in rows:
            batch.append(row)
            if len(batch) == chunk:
                written += flush()
                batch = []
        if batch:
            written += flush()
        writer.commit()
        manifest_path(path).unlink(missing_ok=True)
        for suffix in ("", ".db"):
            os.replace(str(tmp) + suffix, str(path) + suffix)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    info = {"rows": written, "fingerprint": fingerprint, "schema": schema}
    tmp_manifest = manifest_path(path).with_name(manifest_path(path).name + ".tmp")
    tmp_manifest.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp_manifest.replace(manifest_path(path))
    return path


def read(path: Path, columns: Optional[Sequence[str]] = None) -> Iterator[Dict[str, Any]]:
    """Rows of a MindRecord file in stored order (only ``columns`` if given)."""
    from mindspore.mindrecord import FileReader

    path = Path(path)
    if not path.is_file() or not Path(str(path) + ".db").is_file():
        raise DataError(f"{path}: MindRecord file (or its .db index) not found; "
                        "create it with `geoloc data convert-mindrecord`")
    try:
        reader = FileReader(str(path), num_consumer=1, columns=list(columns) if columns else None)
    except Exception as exc:  # MindSpore raises RuntimeError with a multi-line message
        raise DataError(f"{path}: not a readable MindRecord file ({str(exc).strip().splitlines()[0]})") from None
    try:
        yield from reader.get_next()
    finally:
        reader.close()


def schema_fields(path: Path) -> List[str]:
    from mindspore.mindrecord import FileReader

    reader = FileReader(str(path), num_consumer=1)
    try:
        return list(reader.schema())
    finally:
        reader.close()
