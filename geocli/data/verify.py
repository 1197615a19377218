"""Check a dataset folder against its catalog layout, and read ground-truth pickles without running code.

Why: a half-extracted archive or a missing split file otherwise surfaces hours into training. The rules live
in catalog.yaml under ``verify`` (files that must exist, glob counts, list files whose entries must exist,
revisited-Oxford/Paris ``gnd_*.pkl`` contents, files that must be absent, SAR/optical pairs); image files are
also checked for a JPEG/PNG signature, which catches the HTML error pages shipped as Paris images.

``gnd_*.pkl`` files are pickles. ``pickle.load`` on a downloaded file can run arbitrary code, so
:func:`load_pickle` uses an unpickler that refuses every global except the few needed for plain data and
numpy arrays.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

from geocli.data.archive import Manifest
from geocli.data.catalog import Catalog, Source, load_catalog
from geocli.data.download import check_file
from geocli.errors import DataError

_SIGNATURES = {".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff", ".png": b"\x89PNG\r\n\x1a\n"}

# Exactly what plain data and numpy arrays need; anything else in a pickle (os.system, eval, ...) is refused.
_SAFE_GLOBALS = {
    (f"numpy.{core}.{mod}", name) for core in ("core", "_core")  # numpy 1.x and 2.x module names
    for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
} | {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("collections", "OrderedDict"),
} | {(mod, name) for mod in ("builtins", "__builtin__") for name in ("bytes", "bytearray", "set", "frozenset")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def load_pickle(path: Path):
    """Load a data-only pickle (dicts, lists, strings, numbers, numpy arrays); raises DataError otherwise."""
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise DataError(f"{path}: refused to unpickle ({exc}); only plain data and numpy arrays are loaded, "
                        f"re-download the file from its source") from None


def looks_corrupt(path: Path) -> bool:
    """An image whose first bytes are not a JPEG/PNG signature (or that cannot be read)."""
    sig = _SIGNATURES.get(path.suffix.lower())
    if sig is None:
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(len(sig)) != sig
    except OSError:
        return True


@dataclass
class Check:
    rule: str
    status: str  # ok | missing | corrupt | mismatch
    detail: str


@dataclass
class Report:
    source: str
    root: Path
    checks: List[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status == "ok" for c in self.checks)

    @property
    def problems(self) -> List[Check]:
        return [c for c in self.checks if c.status != "ok"]


def _some(names: List[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _result(rule: str, missing: List[str], corrupt: List[str], total: int) -> Check:
    if missing:
        return Check(rule, "missing", f"{len(missing)} of {total} missing: {_some(missing)}")
    if corrupt:
        return Check(rule, "corrupt", f"{len(corrupt)} of {total} not a valid image: {_some(corrupt)}")
    return Check(rule, "ok", f"{total} present")


def _files(rule: dict, root: Path, src: Source) -> Check:
    names = list(rule["files"])
    return _result(f"files {_some(names, 2)}", [n for n in names if not (root / n).exists()], [], len(names))


def _glob(rule: dict, root: Path, src: Source) -> Check:
    paths = sorted(root.glob(rule["glob"]))
    corrupt = [str(p.relative_to(root)) for p in paths if rule.get("images") and looks_corrupt(p)]
    n, want = len(paths), rule.get("count", rule.get("min"))
    label = f"{rule['glob']} ({'exactly' if 'count' in rule else 'at least'} {want:,})"
    if n < want:
        return Check(label, "missing", f"{n:,} found, {want - n:,} missing")
    if "count" in rule and n != want:
        return Check(label, "mismatch", f"{n:,} found, {n - want:,} more than expected")
    return _result(label, [], corrupt, n)


def _list_entries(rule: dict, list_file: Path) -> List[str]:
    out = []
    lines = list_file.read_text(encoding="utf-8", errors="replace").splitlines()[int(rule.get("skip", 0)):]
    for line in lines:
        tokens = line.split()
        if not tokens:
            continue
        name = tokens[int(rule.get("column", 0))]
        prefix = rule.get("strip_prefix", "")
        out.append((name[len(prefix):] if prefix and name.startswith(prefix) else name) + rule.get("suffix", ""))
    return out


def _list(rule: dict, root: Path, src: Source) -> Check:
    lists = sorted(p for p in root.glob(rule["list"]) if p.is_file())
    if not lists:
        return Check(f"list {rule['list']}", "missing", "no such list file")
    ignore = set(src.resolve_list(rule.get("ignore")))
    names = list(dict.fromkeys(n for lf in lists for n in _list_entries(rule, lf) if n not in ignore))
    label = f"entries of {rule['list']} ({len(lists)} file{'s' * (len(lists) > 1)})"
    if "in" in rule:
        have: Set[str] = {p.name for p in root.glob(rule["in"])}
        return _result(label, [n for n in names if n not in have], [], len(names))
    base = root / rule.get("root", ".")
    missing = [n for n in names if not (base / n).exists()]
    corrupt = [n for n in names if rule.get("images") and n not in missing and looks_corrupt(base / n)]
    return _result(label, missing, corrupt, len(names))


def _gnd(rule: dict, root: Path, src: Source) -> Check:
    path = root / rule["gnd"]
    if not path.is_file():
        return Check(rule["gnd"], "missing", "ground-truth pickle not found")
    gnd = load_pickle(path)
    if not isinstance(gnd, dict) or not {"imlist", "qimlist", "gnd"} <= set(gnd):
        return Check(rule["gnd"], "corrupt", "not a revisited ground-truth dict (imlist, qimlist, gnd)")
    for key in ("imlist", "qimlist"):
        if key in rule and len(gnd[key]) != rule[key]:
            return Check(rule["gnd"], "mismatch", f"{len(gnd[key])} {key} entries, expected {rule[key]}")
    have = {p.name for p in root.glob(rule.get("in", "jpg/**/*.jpg"))}
    names = list(dict.fromkeys(f"{n}.jpg" for n in list(gnd["imlist"]) + list(gnd["qimlist"])))
    return _result(f"{rule['gnd']} images", [n for n in names if n not in have], [], len(names))


def _absent(rule: dict, root: Path, src: Source) -> Check:
    names = set(src.resolve_list(rule["absent"]))
    present = sorted(str(p.relative_to(root)) for p in (root / rule.get("under", ".")).rglob("*") if p.name in names)
    label = f"{len(names)} listed corrupt files removed"
    if present:
        return Check(label, "corrupt", f"still present: {_some(present)}")
    return Check(label, "ok", "none present")


def _unpacked(rule: dict, root: Path, src: Source) -> Check:
    """For archives whose contents no other rule can list (GLDv2 tars): unpacked by geoloc, per the manifest."""
    name = rule["unpacked"]
    if Manifest(root).done(name):
        return Check(f"{name} unpacked", "ok", "recorded in the manifest")
    state = "downloaded but not unpacked" if (root / name).exists() else "not downloaded"
    return Check(f"{name} unpacked", "missing", f"{state}; run `geoloc data download {src.name}` again")


def _pairs(rule: dict, root: Path, src: Source) -> Check:
    old, new = rule["replace"]
    firsts = [p.relative_to(root).as_posix() for p in root.glob(rule["pairs"])]
    missing = [f.replace(old, new) for f in firsts if not (root / f.replace(old, new)).exists()]
    return _result(f"pairs of {rule['pairs']} ({old} -> {new})", missing, [], len(firsts))


def _reid(rule: dict, root: Path, src: Source) -> Check:
    """Images per split of a Market/Duke folder as the re-id parser counts them (Market's pid -1 junk
    dropped), against the published train / query / gallery counts."""
    from geocli.data.formats.reid import count_images

    folder = root / rule["reid"]
    want = {k: rule[k] for k in ("train", "query", "gallery")}
    label = f"{rule['reid']} parsed images (train/query/gallery {want['train']:,}/{want['query']:,}/{want['gallery']:,})"
    if not folder.is_dir():
        return Check(label, "missing", "folder not found")
    try:
        have = count_images(folder)
    except DataError as exc:
        return Check(label, "corrupt", str(exc))
    off = [f"{k} {have[k]:,} (expected {want[k]:,})" for k in want if have[k] != want[k]]
    return Check(label, "mismatch", "; ".join(off)) if off else Check(label, "ok", "counts match")


def _vigor(rule: dict, root: Path, src: Source) -> Check:
    """One VIGOR city's split files as the VIGOR parser reads them: every label row well-formed (each bad row
    named by file and line), tiles and panoramas counted against the published figures."""
    from geocli.data.formats import vigor as fmt

    city = rule["vigor"]
    want_tiles, want_panos = fmt.TILE_COUNTS[city], fmt.PANORAMA_COUNTS[city]
    label = f"{city} splits (tiles {want_tiles:,}, panoramas {want_panos:,})"
    bad: List[str] = []
    counts = {}
    try:
        counts["tiles"] = len(fmt.read_tile_list(fmt.tile_list_file(root, city, "original")))
    except DataError as exc:
        bad.append(str(exc))
    for name in ("same_area_balanced_train", "same_area_balanced_test", "pano_label_balanced"):
        path = root / "splits" / city / f"{name}.txt"
        if not path.is_file():
            bad.append(f"{path}: missing")
            continue
        rows = 0
        for line, text in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1):
            if text.strip():
                try:
                    fmt.parse_label_line(text.strip(), path, line)
                    rows += 1
                except DataError as exc:
                    bad.append(str(exc))
        counts[name] = rows
    if bad:
        return Check(label, "corrupt", f"{len(bad)} bad: {_some(bad, 3)}")
    off = [f"{k} {counts[k]:,} (expected {w:,})" for k, w in
           (("tiles", want_tiles), ("pano_label_balanced", want_panos)) if counts.get(k) != w]
    return Check(label, "mismatch", "; ".join(off)) if off else Check(label, "ok", "counts match, every row parses")


_RULES: Dict[str, Callable[[dict, Path, Source], Check]] = {
    "files": _files, "glob": _glob, "list": _list, "gnd": _gnd, "absent": _absent, "pairs": _pairs,
    "unpacked": _unpacked, "reid": _reid, "vigor": _vigor,
}


def _downloads(src: Source, root: Path, parts: List[str]) -> List[Check]:
    """Plain (not unpacked) files of an automatic source: present and matching their checksum.

    Unpacked archives are judged by the layout rules, so a folder prepared by hand verifies too.
    """
    plain = [pf for pf in src.plan(parts) if not pf.extract_to]
    if not plain:
        return []
    missing = [pf.path for pf in plain if not (root / pf.path).exists()]
    corrupt = [f"{pf.path} ({problem})" for pf in plain if pf.path not in missing
               for problem in [check_file(root / pf.path, pf.expect)] if problem]
    return [_result("downloaded files", missing, corrupt, len(plain))]


def verify_source(name: str, path: Path, *, parts: Optional[str] = None,
                  catalog: Optional[Catalog] = None) -> Report:
    """Check ``path`` against source ``name``; the Report lists every check (``report.ok`` is the verdict)."""
    src = (catalog or load_catalog()).get(name)
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; pass the folder given to `geoloc data download {src.name} --dest`")
    selected = src.select_parts(parts)
    report = Report(src.name, root, [] if src.manual else _downloads(src, root, selected))
    for rule in src.verify_rules(selected):
        kind = next((k for k in _RULES if k in rule), None)
        if kind is None:
            raise DataError(f"catalog: {src.name}: unknown verify rule {rule}")
        report.checks.append(_RULES[kind](rule, root, src))
    return report
