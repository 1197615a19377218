"""Resumable, verified HTTP downloads, and ``download_source``: fetch, check and unpack one catalog source.

Why this shape: datasets here are hundreds of GB over flaky links. Every file is written to ``NAME.part``
and continued with an HTTP Range request after any interruption (a server that ignores Range is detected by
its 200 answer and the file restarts cleanly); the final name appears only after the size and checksum pass
(atomic rename), so an existing final file is always a finished one. Transient failures (connection errors,
5xx, 429) are retried with exponential backoff whose ``sleep`` is injectable; 4xx answers fail at once with
the page to visit. Progress goes to an optional :class:`Progress` sink, so the library prints nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import requests
import urllib3

from geocli.data import archive
from geocli.data.catalog import Catalog, Expect, PlannedFile, Source, load_catalog
from geocli.errors import DataError, DownloadError, GeolocError

CHUNK = 1 << 20
RETRY_DELAY_ENV = "GEOLOC_RETRY_DELAY"


class Progress:
    """Where transfer progress goes; this base class ignores it (library use, ``-q``)."""

    def add(self, name: str):
        return name

    def set_total(self, task, total: Optional[int], completed: int) -> None:
        """``completed`` restarts at 0 when a server ignored our Range request."""

    def advance(self, task, nbytes: int) -> None:
        pass

    def finish(self, task) -> None:
        pass


@dataclass
class RetryPolicy:
    """``attempts`` failures in a row without progress give up; delays double from ``base_delay``."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, failure: int) -> float:
        return min(self.max_delay, self.base_delay * (2 ** failure))

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        return cls(base_delay=float(os.environ.get(RETRY_DELAY_ENV, 1.0)))


class _Transient(Exception):
    """A failure worth retrying (connection reset, timeout, 5xx, short body)."""


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000.0
    return f"{n} B"


def ensure_free_space(folder: Path, needed: int, what: str, hint: str = "") -> None:
    """Fail before writing when ``needed`` bytes will not fit on the disk that holds ``folder``."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise DownloadError(f"not enough disk space for {what} in {folder}: needs {human(needed)}, "
                            f"{human(free)} free; free some space{hint} or pass --dest on a larger disk")


def check_file(path: Path, expect: Expect) -> Optional[str]:
    """None when ``path`` matches ``expect``, else a short description of the mismatch."""
    size = path.stat().st_size
    if expect.size is not None and size != expect.size:
        return f"size {size:,} bytes, expected {expect.size:,}"
    algo = "md5" if expect.md5 else "sha256" if (expect.sha256 or expect.sha256_prefix) else None
    if algo is None:
        return None
    digest = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    got, want = digest.hexdigest(), (expect.md5 or expect.sha256 or expect.sha256_prefix).lower()
    return None if got.startswith(want) and len(want) >= 8 else f"{algo} {got}, expected {want}"


def _http_error(url: str, status: int, page: Optional[str]) -> DownloadError:
    hint = f"check the source page {page}" if page else "check the URL"
    return DownloadError(f"{url}: HTTP {status} ({'not found' if status in (404, 410) else 'access denied'}); "
                         f"{hint}, or download it by hand into DEST and re-run")


class Fetcher:
    """Downloads single files; one instance can serve many threads (each thread gets its own Session)."""

    def __init__(self, retry: Optional[RetryPolicy] = None, progress: Optional[Progress] = None,
                 session_factory=requests.Session, timeout: float = 60.0):
        self.retry = retry or RetryPolicy.from_env()
        self.progress = progress or Progress()
        self.timeout = timeout
        self.cancel = threading.Event()
        self._local = threading.local()
        self._session_factory = session_factory

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = self._session_factory()
        return self._local.session

    def fetch(self, url: str, target: Union[str, Path], expect: Expect = Expect(), *,
              page: Optional[str] = None, overwrite: bool = False) -> Path:
        """Download ``url`` to ``target`` (resuming ``target.part``); returns ``target`` once it is verified.

        A mismatch moves the file aside as ``target.corrupt`` and downloads it once more from scratch; a
        second mismatch raises DownloadError.
        """
        target = Path(target)
        if target.exists() and not overwrite:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        if expect.md5_url:
            expect = Expect(md5=self._published_md5(expect.md5_url, page), size=expect.size)
        for attempt in (1, 2):
            part = self._transfer(url, target, page)
            problem = check_file(part, expect)
            if problem is None:
                os.replace(part, target)
                return target
            corrupt = target.with_name(target.name + ".corrupt")
            os.replace(part, corrupt)
            if attempt == 2:
                raise DownloadError(f"{url}: checksum failed twice ({problem}); kept as {corrupt}. The server "
                                    f"(or --mirror) may serve another version: report it, or fetch it by hand")
        raise AssertionError("unreachable")

    def _published_md5(self, md5_url: str, page: Optional[str]) -> str:
        for failure in range(self.retry.attempts):
            try:
                r = self.session.get(md5_url, timeout=self.timeout)
            except requests.RequestException:
                self.retry.sleep(self.retry.delay(failure))
                continue
            if r.status_code < 400:
                match = re.search(r"\b[0-9a-fA-F]{32}\b", r.text)
                if not match:
                    raise DownloadError(f"{md5_url}: no md5 sum in the published checksum file")
                return match.group(0).lower()
            if r.status_code < 500 and r.status_code != 429:
                raise _http_error(md5_url, r.status_code, page)
            self.retry.sleep(self.retry.delay(failure))
        raise DownloadError(f"{md5_url}: checksum file unreachable after {self.retry.attempts} attempts; re-run later")

    def _transfer(self, url: str, target: Path, page: Optional[str]) -> Path:
        part = target.with_name(target.name + ".part")
        task = self.progress.add(target.name)
        failures = 0
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                self._request(url, part, task, page)
                self.progress.finish(task)
                return part
            except _Transient as exc:
                progressed = (part.stat().st_size if part.exists() else 0) > before
                failures = 1 if progressed else failures + 1
                if failures >= self.retry.attempts and not progressed:
                    raise DownloadError(f"{url}: {exc}; gave up after {self.retry.attempts} attempts "
                                        f"(re-run the same command to resume from {part.name})") from None
                self.retry.sleep(self.retry.delay(failures - 1))

    def _request(self, url: str, part: Path, task, page: Optional[str]) -> None:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
                length = self._check_status(r, url, part, offset, page)
                if length is None and r.status_code == 416:
                    return
                if r.status_code == 200:
                    offset = 0
                total = offset + length if length is not None else None
                if length:
                    ensure_free_space(part.parent, length, url)
                self.progress.set_total(task, total, offset)
                with open(part, "ab" if offset else "wb") as fh:
                    for chunk in r.raw.stream(CHUNK, decode_content=False):
                        if self.cancel.is_set():
                            raise KeyboardInterrupt
                        fh.write(chunk)
                        self.progress.advance(task, len(chunk))
        except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError) as exc:
            raise _Transient(f"{type(exc).__name__}: {str(exc)[:120]}") from None
        if total is not None and part.stat().st_size < total:
            raise _Transient(f"connection closed at byte {part.stat().st_size:,} of {total:,}")

    @staticmethod
    def _check_status(r, url: str, part: Path, offset: int, page: Optional[str]) -> Optional[int]:
        """Content-Length of a usable answer; None for 416 on a complete ``.part``; raises otherwise."""
        code = r.status_code
        if code == 416 and offset:
            full = re.search(r"/(\d+)", r.headers.get("Content-Range", ""))
            if full and int(full.group(1)) == offset:
                return None
            part.unlink()
            raise _Transient("server refused the resume offset; restarting the file")
        if code in (401, 403, 404, 410):
            raise _http_error(url, code, page)
        if code == 429 or code >= 500:
            raise _Transient(f"HTTP {code}")
        if code == 206 and offset:
            start = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                part.unlink()
                raise _Transient("server resumed at another offset; restarting the file")
        elif code != 200:
            raise DownloadError(f"{url}: unexpected HTTP {code}")
        length = r.headers.get("Content-Length")
        return int(length) if length is not None else None

    def fetch_all(self, jobs: Sequence[PlannedFile], dest: Path, workers: int = 4,
                  overwrite: bool = False) -> List[Path]:
        """Fetch files on ``workers`` threads; every failure is collected and reported after the rest finish."""
        errors: List[GeolocError] = []

        def one(pf: PlannedFile) -> Path:
            return self.fetch(pf.url, dest / pf.path, pf.expect, page=pf.manual_page, overwrite=overwrite)

        paths = []
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="geoloc-dl") as pool:
            futures = [pool.submit(one, pf) for pf in jobs]
            try:
                for fut in futures:
                    try:
                        paths.append(fut.result())
                    except GeolocError as exc:
                        errors.append(exc)
            except KeyboardInterrupt:
                self.cancel.set()
                for fut in futures:
                    fut.cancel()
                raise
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise DownloadError(f"{len(errors)} of {len(jobs)} files failed (re-run to resume); first: {errors[0]}")
        return paths


def default_dest(src: Source) -> Path:
    return Path(src.default_dest) if src.default_dest else Path("data") / src.name


def download_source(name: str, dest: Optional[Path] = None, *, parts: Optional[str] = None, jobs: int = 4,
                    extract: bool = True, mirror: Optional[str] = None, delete_archives: bool = False,
                    overwrite: bool = False, catalog: Optional[Catalog] = None,
                    fetcher: Optional[Fetcher] = None) -> Path:
    """Download, verify and unpack source ``name`` into ``dest``; returns ``dest``.

    Re-runs skip finished files and archives already unpacked (recorded in DEST's manifest, so archives
    deleted with ``delete_archives`` are not fetched again). Manual sources pick up the files the user put in
    ``dest`` and unpack them; ``geoloc data verify`` then checks the layout.
    """
    src = (catalog or load_catalog()).get(name)
    dest = Path(dest) if dest is not None else default_dest(src)
    plan = src.plan(src.select_parts(parts), mirror)
    manifest = archive.Manifest(dest)
    if src.manual:
        for pf in plan:
            problem = (dest / pf.path).exists() and check_file(dest / pf.path, pf.expect)
            if problem:
                raise DataError(f"{dest / pf.path}: {problem}; download it again from {src.homepage}")
    else:
        todo = [pf for pf in plan if overwrite or not ((dest / pf.path).exists() or manifest.done(pf.path))]
        needed = sum((pf.known_bytes or 0) * (2 if extract and pf.extract_to else 1) for pf in todo)
        ensure_free_space(dest, needed, f"{src.name} ({len(todo)} files)", ", fetch fewer --parts" if src.parts else "")
        (fetcher or Fetcher()).fetch_all(todo, dest, workers=jobs, overwrite=overwrite)
    for pf in plan:
        path = dest / pf.path
        if extract and pf.extract_to and path.exists():
            archive.extract(path, dest / pf.extract_to, manifest=manifest, key=pf.path,
                            exclude=pf.exclude, overwrite=overwrite)
            if delete_archives:
                path.unlink()
    return dest
