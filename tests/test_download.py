"""The HTTP engine against a real local server: resume, Range-ignoring servers, checksums, retries, jobs."""

from __future__ import annotations

import hashlib
import os

import pytest
from http_fixture import http_server  # noqa: F401 - pytest fixture

from geocli.data.catalog import Expect, PlannedFile
from geocli.data.download import Fetcher, RetryPolicy, ensure_free_space
from geocli.errors import DownloadError

DATA = os.urandom(300_000)
MD5 = hashlib.md5(DATA).hexdigest()


def fetcher(sleeps=None, attempts=5) -> Fetcher:
    """No real sleeping: the delays are recorded instead."""
    sleeps = [] if sleeps is None else sleeps
    return Fetcher(RetryPolicy(attempts=attempts, base_delay=1.0, sleep=sleeps.append), timeout=10)


def test_interrupted_download_resumes_with_range_and_ends_byte_identical(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA, drop_after=100_000, drops=1)
    out = fetcher().fetch(url, tmp_path / "f.bin", Expect(md5=MD5, size=len(DATA)))
    assert out.read_bytes() == DATA
    log = http_server.requests_for("/f.bin")
    assert [(rng, code) for _, rng, code in log] == [(None, 200), ("bytes=100000-", 206)]
    assert not (tmp_path / "f.bin.part").exists()


def test_rerun_continues_an_existing_part_file(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA)
    (tmp_path / "f.bin.part").write_bytes(DATA[:123_456])
    fetcher().fetch(url, tmp_path / "f.bin", Expect(md5=MD5))
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert http_server.requests_for("/f.bin") == [("/f.bin", "bytes=123456-", 206)]


def test_server_that_ignores_range_restarts_the_file_cleanly(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA, drop_after=50_000, drops=1, ignore_range=True)
    fetcher().fetch(url, tmp_path / "f.bin", Expect(md5=MD5))
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert [(rng, code) for _, rng, code in http_server.requests_for("/f.bin")] == [(None, 200),
                                                                                  ("bytes=50000-", 200)]


def test_complete_part_file_answered_416_is_verified_and_renamed(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA)
    (tmp_path / "f.bin.part").write_bytes(DATA)
    fetcher().fetch(url, tmp_path / "f.bin", Expect(md5=MD5))
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert http_server.requests_for("/f.bin")[0][2] == 416


def test_corrupt_file_is_moved_aside_and_fetched_again(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA, corrupt=1)
    out = fetcher().fetch(url, tmp_path / "f.bin", Expect(md5=MD5))
    assert out.read_bytes() == DATA
    corrupt = tmp_path / "f.bin.corrupt"
    assert corrupt.exists() and corrupt.read_bytes() != DATA
    assert len(http_server.requests_for("/f.bin")) == 2


def test_persistent_corruption_is_a_clear_error_and_no_final_file(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA, corrupt=5)
    with pytest.raises(DownloadError, match=r"checksum failed twice \(md5 [0-9a-f]{32}, expected " + MD5):
        fetcher().fetch(url, tmp_path / "f.bin", Expect(md5=MD5))
    assert not (tmp_path / "f.bin").exists()
    assert (tmp_path / "f.bin.corrupt").exists()


def test_wrong_size_counts_as_corrupt(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA)
    with pytest.raises(DownloadError, match="size 300,000 bytes, expected 300,001"):
        fetcher().fetch(url, tmp_path / "f.bin", Expect(size=300_001))


def test_404_names_the_url_and_the_page_to_visit(http_server, tmp_path):
    url = http_server.url("/missing.zip")
    with pytest.raises(DownloadError) as exc:
        fetcher().fetch(url, tmp_path / "m.zip", page="https://example.org/dataset-page")
    msg = str(exc.value)
    assert url in msg and "HTTP 404" in msg and "https://example.org/dataset-page" in msg
    assert len(http_server.requests_for("/missing.zip")) == 1  # a 404 is not retried


def test_403_is_not_retried(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA, statuses=[403])
    with pytest.raises(DownloadError, match="HTTP 403 .access denied"):
        fetcher().fetch(url, tmp_path / "f.bin")


def test_5xx_is_retried_with_exponential_backoff_then_succeeds(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA, statuses=[500, 503, 502])
    sleeps = []
    fetcher(sleeps).fetch(url, tmp_path / "f.bin", Expect(md5=MD5))
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert sleeps == [1.0, 2.0, 4.0]


def test_5xx_forever_gives_up_with_the_attempt_count(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA, statuses=[500] * 10)
    with pytest.raises(DownloadError, match="HTTP 500; gave up after 3 attempts"):
        fetcher(attempts=3).fetch(url, tmp_path / "f.bin")


def test_connection_refused_is_retried_then_reported(tmp_path):
    sleeps = []
    with pytest.raises(DownloadError, match="gave up after 2 attempts"):
        fetcher(sleeps, attempts=2).fetch("http://127.0.0.1:9/x.bin", tmp_path / "x.bin")
    assert sleeps == [1.0]


def test_published_md5_file_is_used(http_server, tmp_path):
    url = http_server.add("/images_000.tar", DATA)
    md5_url = http_server.add("/md5.images_000.txt", f"{MD5}  images_000.tar\n".encode())
    fetcher().fetch(url, tmp_path / "images_000.tar", Expect(md5_url=md5_url))
    assert (tmp_path / "images_000.tar").read_bytes() == DATA
    bad = http_server.add("/md5.bad.txt", b"0" * 32 + b"  images_000.tar\n")
    with pytest.raises(DownloadError, match="checksum failed twice"):
        fetcher().fetch(url, tmp_path / "again.tar", Expect(md5_url=bad))


def test_existing_final_file_is_kept_without_a_request(http_server, tmp_path):
    url = http_server.add("/f.bin", DATA)
    (tmp_path / "f.bin").write_bytes(b"mine")
    fetcher().fetch(url, tmp_path / "f.bin", Expect(md5=MD5))
    assert (tmp_path / "f.bin").read_bytes() == b"mine"
    assert http_server.log == []


def test_parallel_jobs_fetch_every_file_concurrently(http_server, tmp_path):
    blobs = {f"/p{i}.bin": os.urandom(10_000 + i) for i in range(6)}
    jobs = [PlannedFile(url=http_server.add(p, b, delay=0.15), path=p.lstrip("/"),
                        expect=Expect(md5=hashlib.md5(b).hexdigest())) for p, b in blobs.items()]
    paths = fetcher().fetch_all(jobs, tmp_path, workers=3)
    assert {p.name: p.read_bytes() for p in paths} == {p.lstrip("/"): b for p, b in blobs.items()}
    assert http_server.max_active >= 2


def test_parallel_failures_are_collected_after_the_rest_finish(http_server, tmp_path):
    ok = PlannedFile(url=http_server.add("/ok.bin", DATA), path="ok.bin", expect=Expect(md5=MD5))
    gone = [PlannedFile(url=http_server.url(f"/gone{i}"), path=f"gone{i}", expect=Expect()) for i in range(2)]
    with pytest.raises(DownloadError, match="2 of 3 files failed"):
        fetcher().fetch_all([gone[0], ok, gone[1]], tmp_path, workers=2)
    assert (tmp_path / "ok.bin").read_bytes() == DATA


def test_disk_space_is_checked_before_writing(http_server, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DownloadError, match=r"needs 300.0 KB, 1.0 KB free"):
        ensure_free_space(tmp_path, len(DATA), "f.bin")
    url = http_server.add("/f.bin", DATA)
    with pytest.raises(DownloadError, match="not enough disk space"):
        fetcher().fetch(url, tmp_path / "f.bin")
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
