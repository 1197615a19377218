"""The catalog of datasets and weights (``catalog.yaml``) as typed objects, and the file plan of one source.

Why a data file: URLs, checksums, licences and manual steps change more often than code, and each must be
reviewable next to the place it was taken from. ``GEOLOC_CATALOG=path.yaml`` (or ``load_catalog(path)``)
swaps the whole catalog, which is how the tests point ``geoloc data download`` at a local server.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import yaml

from geocli.errors import ConfigError, UsageError

CATALOG_ENV = "GEOLOC_CATALOG"
DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
NONE_PUBLISHED = "none-published"
CHECKSUM_KEYS = ("md5", "sha256", "sha256_prefix", "md5_url", "size")


@dataclass(frozen=True)
class Expect:
    """What a finished file must match; an empty Expect means only that the transfer completed."""

    md5: Optional[str] = None
    sha256: Optional[str] = None
    sha256_prefix: Optional[str] = None
    size: Optional[int] = None
    md5_url: Optional[str] = None

    def describe(self) -> str:
        parts = [f"{k} {getattr(self, k)}" for k in ("md5", "sha256", "sha256_prefix") if getattr(self, k)]
        if self.md5_url:
            parts.append("md5 from the published md5 file")
        if self.size is not None:
            parts.append(f"{self.size:,} bytes")
        return ", ".join(parts) or "none published"


@dataclass(frozen=True)
class PlannedFile:
    """One file of a source after ``{part}`` expansion and mirror rewriting; ``url`` is None for manual files."""

    url: Optional[str]
    path: str
    expect: Expect
    extract_to: Optional[str] = None
    exclude: Tuple[str, ...] = ()
    approx_bytes: Optional[int] = None
    manual_page: Optional[str] = None

    @property
    def known_bytes(self) -> Optional[int]:
        return self.expect.size if self.expect.size is not None else self.approx_bytes


@dataclass
class Source:
    name: str
    title: str
    kind: str
    access: str
    homepage: str = ""
    licence: str = ""
    size: str = ""
    checksum_note: str = ""
    default_dest: str = ""
    steps: List[str] = field(default_factory=list)
    parts: Dict = field(default_factory=dict)
    part_vars: Dict[str, Dict[str, str]] = field(default_factory=dict)
    files: List[dict] = field(default_factory=list)
    manual_files: List[dict] = field(default_factory=list)
    verify: List[dict] = field(default_factory=list)
    lists: Dict[str, List[str]] = field(default_factory=dict, repr=False)

    @property
    def manual(self) -> bool:
        return self.access == "manual"

    def all_parts(self) -> List[str]:
        """Every part name ([""] for a source without parts, so templates expand once)."""
        if "range" in self.parts:
            lo, hi = self.parts["range"]
            return [self._fmt(i) for i in range(int(lo), int(hi) + 1)]
        return [str(n) for n in self.parts.get("names", [])] or [""]

    def _fmt(self, i: int) -> str:
        return str(i).zfill(int(self.parts.get("width", 0)))

    def parts_help(self) -> str:
        if "range" in self.parts:
            lo, hi = self.parts["range"]
            return f"numbers {lo}-{hi}, e.g. {lo}-{min(int(hi), int(lo) + 9)} or {lo},{hi}"
        return ", ".join(self.parts.get("names", [])) or "none (this source has no parts)"

    def select_parts(self, spec: Optional[str]) -> List[str]:
        """Parse ``--parts`` ("0-499", "0-9,20", "KingsCollege,ShopFacade"); None selects every part."""
        if not spec:
            return self.all_parts()
        if not self.parts:
            raise UsageError(f"--parts: {self.name} has no parts; drop the flag")
        chosen: List[str] = []
        for token in (t.strip() for t in spec.split(",") if t.strip()):
            chosen.extend(self._parse_token(token, spec))
        return list(dict.fromkeys(chosen))

    def _parse_token(self, token: str, spec: str) -> List[str]:
        if "range" in self.parts:
            lo, hi = (int(v) for v in self.parts["range"])
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
            a, b = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (-1, -1)
            if not m or a > b or a < lo or b > hi:
                raise UsageError(f"--parts {spec!r}: {token!r} is not valid for {self.name}; use {self.parts_help()}")
            return [self._fmt(i) for i in range(a, b + 1)]
        by_lower = {n.lower(): n for n in self.all_parts()}
        if token.lower() not in by_lower:
            raise UsageError(f"--parts {spec!r}: no part {token!r} in {self.name}; parts: {self.parts_help()}")
        return [by_lower[token.lower()]]

    def fill(self, text: str, part: str) -> str:
        """Expand ``{part}`` and the source's ``part_vars`` (e.g. Cambridge's repository handle) in ``text``."""
        text = text.replace("{part}", part)
        for var, table in self.part_vars.items():
            text = text.replace("{" + var + "}", str(table.get(part, "")))
        return text

    def resolve_list(self, value) -> Tuple[str, ...]:
        """``"@name"`` refers to a list under ``lists:`` in the catalog; a plain list is used as is."""
        if isinstance(value, str) and value.startswith("@"):
            return tuple(self.lists.get(value[1:], ()))
        return tuple(value or ())

    def plan(self, parts: Optional[List[str]] = None, mirror: Optional[str] = None) -> List[PlannedFile]:
        """The files to fetch (or, for manual sources, to pick up from DEST) for the selected parts."""
        parts = self.all_parts() if parts is None else parts
        out: Dict[str, PlannedFile] = {}
        for spec in self.manual_files if self.manual else self.files:
            templated = any("{" in str(spec.get(k, "")) for k in ("url", "path", "md5_url"))
            for part in parts if templated else [""]:
                pf = self._planned(spec, part, mirror)
                out.setdefault(pf.path, pf)
        return list(out.values())

    def _planned(self, spec: dict, part: str, mirror: Optional[str]) -> PlannedFile:
        url = spec.get("url")
        md5_url = spec.get("md5_url")
        md5_url = rewrite_url(self.fill(md5_url, part), mirror) if md5_url else None
        expect = Expect(md5=spec.get("md5"), sha256=spec.get("sha256"), sha256_prefix=spec.get("sha256_prefix"),
                        size=spec.get("size"), md5_url=md5_url)
        return PlannedFile(
            url=rewrite_url(self.fill(url, part), mirror) if url else None,
            path=self.fill(spec["path"], part), expect=expect, extract_to=spec.get("extract_to"),
            exclude=self.resolve_list(spec.get("exclude")), approx_bytes=spec.get("approx_bytes"),
            manual_page=self.fill(spec.get("manual_page") or self.homepage, part),
        )

    def verify_rules(self, parts: Optional[List[str]] = None) -> List[dict]:
        """The layout rules with ``{part}`` expanded; a rule mentioning ``{part}`` is repeated per part."""
        parts = self.all_parts() if parts is None else parts
        rules = []
        for rule in self.verify:
            templated = "{part}" in repr(rule)
            for part in parts if templated else [""]:
                rules.append(_fill_deep(rule, lambda s, p=part: self.fill(s, p)))
        return rules

    def checksum_summary(self) -> str:
        specs = self.manual_files if self.manual else self.files
        kinds = sorted({k for s in specs for k in CHECKSUM_KEYS if s.get(k) is not None})
        return ", ".join(kinds).replace("md5_url", "md5 file") if kinds else NONE_PUBLISHED.replace("-", " ")


def _fill_deep(value, fill):
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, list):
        return [_fill_deep(v, fill) for v in value]
    if isinstance(value, dict):
        return {k: _fill_deep(v, fill) for k, v in value.items()}
    return value


def rewrite_url(url: str, mirror: Optional[str]) -> str:
    """``--mirror http://host/base`` keeps the URL's path and query.

    https://s3.amazonaws.com/google-landmark/x -> http://host/base/google-landmark/x
    """
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


class Catalog:
    def __init__(self, sources: Dict[str, Source], path: Path):
        self.sources = sources
        self.path = path

    def names(self) -> List[str]:
        return list(self.sources)

    def get(self, name: str) -> Source:
        try:
            return self.sources[name.lower()]
        except KeyError:
            known = ", ".join(self.sources)
            raise UsageError(f"unknown source {name!r}; known: {known} (`geoloc data list`)") from None


def load_catalog(path: Optional[Path] = None) -> Catalog:
    """Read and check the catalog: ``path``, else ``$GEOLOC_CATALOG``, else the packaged catalog.yaml."""
    path = Path(path or os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the data catalog {path}: {exc}") from None
    lists = {k: list(v) for k, v in (doc.get("lists") or {}).items()}
    sources = {}
    for name, raw in (doc.get("sources") or {}).items():
        known = {k: v for k, v in raw.items() if k in Source.__dataclass_fields__}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"catalog {path}: source {name}: unknown keys {unknown}")
        src = Source(name=str(name).lower(), lists=lists, **known)
        _check_source(src, path)
        sources[src.name] = src
    return Catalog(sources, path)


def _check_source(src: Source, path: Path) -> None:
    """A broken catalog entry is caught when the catalog loads, not halfway through a 500 GB download."""
    where = f"catalog {path}: source {src.name}"
    if src.kind not in ("dataset", "weights") or src.access not in ("automatic", "manual"):
        raise ConfigError(f"{where}: kind must be dataset|weights and access automatic|manual")
    if not src.title:
        raise ConfigError(f"{where}: needs a title")
    if src.manual and not src.steps:
        raise ConfigError(f"{where}: a manual source needs `steps`")
    if not src.manual and not src.files:
        raise ConfigError(f"{where}: an automatic source needs `files`")
    for spec in src.manual_files if src.manual else src.files:
        if "path" not in spec or (not src.manual and "url" not in spec):
            raise ConfigError(f"{where}: every file needs `path`" + ("" if src.manual else " and `url`"))
        has_sum = any(spec.get(k) is not None for k in CHECKSUM_KEYS)
        if not has_sum and spec.get("checksum") != NONE_PUBLISHED:
            raise ConfigError(f"{where}: {spec['path']} names no checksum or size; "
                              f"write `checksum: {NONE_PUBLISHED}` if the source publishes none")
