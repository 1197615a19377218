"""Parser for the original Oxford Buildings (Oxford5k) ground truth, ``gt_files_170407`` format.

The folder holds, per query ``<landmark>_<n>`` (e.g. ``all_souls_1``), four text files:

- ``<q>_query.txt``: one line ``oxc1_<image> x1 y1 x2 y2`` (the box may be integers or decimals);
- ``<q>_good.txt``, ``<q>_ok.txt``, ``<q>_junk.txt``: one image name per line, no extension.

Lists are returned exactly as distributed (``all_souls_1_good.txt`` names one image twice); the metric,
:func:`geocli.metrics.retrieval.oxford_ap`, de-duplicates. Pure Python so that it loads anywhere; errors
are :class:`~geocli.errors.DataError` naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple, Union

from geocli.errors import DataError

#: Prefix of the query image names in ``*_query.txt`` (the database files are named without it).
QUERY_PREFIX = "oxc1_"

LIST_KINDS = ("good", "ok", "junk")


@dataclass(frozen=True)
class OxfordQuery:
    """One query: its name, landmark, image (without ``oxc1_``), box and ground-truth lists."""

    name: str
    landmark: str
    image: str
    box: Tuple[float, float, float, float]
    good: List[str]
    ok: List[str]
    junk: List[str]


def _read_lines(path: Path) -> List[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: missing; every Oxford query needs query, good, ok and junk files") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def _read_query_line(path: Path) -> Tuple[str, Tuple[float, float, float, float]]:
    lines = [(n, line.strip()) for n, line in enumerate(_read_lines(path), 1) if line.strip()]
    if len(lines) != 1:
        raise DataError(f"{path}: expected one line 'oxc1_<image> x1 y1 x2 y2', found {len(lines)}")
    number, line = lines[0]
    fields = line.split()
    if len(fields) != 5:
        raise DataError(f"{path}:{number}: expected 'oxc1_<image> x1 y1 x2 y2', got {line!r}")
    image = fields[0][len(QUERY_PREFIX):] if fields[0].startswith(QUERY_PREFIX) else fields[0]
    try:
        x1, y1, x2, y2 = (float(value) for value in fields[1:])
    except ValueError:
        raise DataError(f"{path}:{number}: box coordinates must be numbers, got {line!r}") from None
    return image, (x1, y1, x2, y2)


def _read_name_list(path: Path) -> List[str]:
    """Image names, one per line; blank lines are skipped, a line with spaces is an error."""
    names = []
    for number, line in enumerate(_read_lines(path), 1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) != 1:
            raise DataError(f"{path}:{number}: expected one image name per line, got {line!r}")
        names.append(name)
    return names


def load_oxford_gt(folder: Union[str, Path]) -> List[OxfordQuery]:
    """All queries in an Oxford5k ground-truth folder, sorted by query name.

    The query name is the file stem without ``_query`` (``all_souls_1``), the landmark is the name
    without its trailing ``_<n>``. Raises DataError for a missing folder, a folder without
    ``*_query.txt`` files, a missing companion list, or a malformed line (file and line named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: Oxford ground-truth folder not found")
    query_files = sorted(folder.glob("*_query.txt"))
    if not query_files:
        raise DataError(f"{folder}: no '*_query.txt' files; is this the Oxford5k gt_files folder?")
    queries = []
    for query_file in query_files:
        name = query_file.name[: -len("_query.txt")]
        image, box = _read_query_line(query_file)
        lists = {kind: _read_name_list(folder / f"{name}_{kind}.txt") for kind in LIST_KINDS}
        landmark = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
        queries.append(OxfordQuery(name=name, landmark=landmark, image=image, box=box, **lists))
    return queries
