"""``geoloc data list/download/verify`` through the real CLI, end to end against a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import yaml
from http_fixture import http_server  # noqa: F401 - pytest fixture
from typer.testing import CliRunner

from geocli.cli.main import app
from geocli.data.verify import verify_source

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 60
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 60


def run(*args: str):
    """Wide terminal, so Rich does not wrap the paths the assertions look for."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def targz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def tiny(http_server, tmp_path, monkeypatch):
    """A one-source catalog whose real-looking URLs are only reachable through --mirror (the local server)."""
    weights = b"w" * 5000
    pack = targz({"imgs/a.jpg": JPEG, "imgs/b.jpg": JPEG, "imgs/bad.jpg": b"<html>", "list.txt": b"a.jpg\nb.jpg\n"})
    http_server.add("/tiny/weights.bin", weights)
    http_server.add("/tiny/pack.tar.gz", pack)
    catalog = {"sources": {"tiny": {
        "title": "Tiny test source", "kind": "dataset", "access": "automatic", "homepage": "https://example.org/tiny",
        "licence": "test only", "checksum_note": "none published for nothing.txt",
        "files": [
            {"url": "https://example.invalid/tiny/weights.bin", "path": "weights.bin",
             "md5": hashlib.md5(weights).hexdigest(), "size": len(weights)},
            {"url": "https://example.invalid/tiny/pack.tar.gz", "path": "archives/pack.tar.gz", "extract_to": "data",
             "sha256": hashlib.sha256(pack).hexdigest(), "exclude": ["bad.jpg"]},
            {"url": "https://example.invalid/tiny/nothing.txt", "path": "nothing.txt", "checksum": "none-published"},
        ],
        "verify": [{"glob": "data/imgs/*.jpg", "count": 2, "images": True},
                   {"list": "data/list.txt", "root": "data/imgs", "images": True}],
    }}}
    http_server.add("/tiny/nothing.txt", b"hello")
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    monkeypatch.setenv("GEOLOC_CATALOG", str(path))
    monkeypatch.setenv("GEOLOC_RETRY_DELAY", "0")
    return http_server


def test_list_shows_every_source_with_size_licence_access_and_manual_steps():
    res = run("data", "list")
    assert res.exit_code == 0, res.output
    for name in ("gldv2", "oxford5k", "paris6k", "roxford5k", "rparis6k", "cambridge", "sen12", "market1501",
                 "dukemtmc-reid", "vigor", "resnet50-keras", "resnet50-torchvision", "vgg16-keras", "delf-gld"):
        assert name in res.stdout
    assert "94,765,736 bytes" in res.stdout and "none published" in res.stdout and "manual" in res.stdout
    assert "vigor needs a manual step" in res.stdout and "docs.google.com/forms" in res.stdout
    assert "rsync://m1436631@dataserv.ub.tum.de/m1436631/" in res.stdout


def test_download_end_to_end_through_the_mirror_then_rerun_is_a_no_op(tiny, tmp_path):
    dest = tmp_path / "out"
    res = run("data", "download", "tiny", "--dest", dest, "--mirror", tiny.base, "--jobs", "2")
    assert res.exit_code == 0, res.output
    assert (dest / "weights.bin").read_bytes() == b"w" * 5000
    assert sorted(p.name for p in (dest / "data/imgs").iterdir()) == ["a.jpg", "b.jpg"]  # bad.jpg excluded
    assert (dest / "archives/pack.tar.gz").exists()  # kept without --delete-archives
    manifest = json.loads((dest / ".geoloc-extracted.json").read_text())
    assert list(manifest["archives"]) == ["archives/pack.tar.gz"]
    assert "ready in" in res.stdout and "total" in res.stderr  # the progress display goes to stderr
    assert not list(dest.rglob("*.part"))
    served = len(tiny.log)
    again = run("data", "download", "tiny", "--dest", dest, "--mirror", tiny.base)
    assert again.exit_code == 0, again.output
    assert len(tiny.log) == served  # nothing fetched twice


def test_real_gldv2_entry_end_to_end_through_the_mirror(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOLOC_RETRY_DELAY", "0")
    for name in ("train.csv", "train_clean.csv", "train_attribution.csv", "train_label_to_category.csv"):
        http_server.add(f"/google-landmark/metadata/{name}", b"id,url,landmark_id\n")
    for part, image_id in (("000", "0123456789abcdef"), ("001", "fedcba9876543210")):
        tar = targz({f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg": JPEG})
        http_server.add(f"/google-landmark/train/images_{part}.tar", tar, drop_after=40, drops=1)
        md5_line = f"{hashlib.md5(tar).hexdigest()}  images_{part}.tar\n".encode()
        http_server.add(f"/google-landmark/md5sum/train/md5.images_{part}.txt", md5_line)
    dest = tmp_path / "gldv2"
    res = run("data", "download", "gldv2", "--parts", "0-1", "--dest", dest, "--mirror", http_server.base, "-j", "3")
    assert res.exit_code == 0, res.output
    assert (dest / "train/f/e/d/fedcba9876543210.jpg").exists() and (dest / "train_clean.csv").exists()
    assert ("/google-landmark/train/images_001.tar", "bytes=40-", 206) in http_server.log  # resumed
    assert run("data", "verify", "gldv2", dest, "--parts", "0-1").exit_code == 0
    assert run("data", "verify", "gldv2", dest, "--parts", "0-2").exit_code == 1  # part 2 never fetched


def test_quiet_silences_the_progress_display(tiny, tmp_path):
    res = run("-q", "data", "download", "tiny", "--dest", tmp_path / "q", "--mirror", tiny.base)
    assert res.exit_code == 0, res.output
    assert "total" not in res.stderr and "ready in" not in res.stdout


def test_delete_archives_removes_them_and_a_rerun_does_not_refetch(tiny, tmp_path):
    dest = tmp_path / "d"
    assert run("data", "download", "tiny", "--dest", dest, "--mirror", tiny.base, "--delete-archives").exit_code == 0
    assert not (dest / "archives/pack.tar.gz").exists() and (dest / "data/imgs/a.jpg").exists()
    served = len(tiny.log)
    res = run("data", "download", "tiny", "--dest", dest, "--mirror", tiny.base)
    assert res.exit_code == 0, res.output
    assert len(tiny.log) == served


def test_no_extract_downloads_and_verifies_only(tiny, tmp_path):
    dest = tmp_path / "n"
    assert run("data", "download", "tiny", "--dest", dest, "--mirror", tiny.base, "--no-extract").exit_code == 0
    assert (dest / "archives/pack.tar.gz").exists() and not (dest / "data").exists()


def test_404_is_one_line_naming_the_url_and_exit_1(tiny, tmp_path):
    del tiny.files["/tiny/nothing.txt"]
    res = run("data", "download", "tiny", "--dest", tmp_path / "e", "--mirror", tiny.base)
    assert res.exit_code == 1
    assert f"{tiny.base}/tiny/nothing.txt: HTTP 404" in res.stderr and "https://example.org/tiny" in res.stderr
    assert "Traceback" not in res.stderr


def test_disk_space_error_names_the_numbers(tiny, tmp_path, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1, 1, 100))
    res = run("data", "download", "tiny", "--dest", tmp_path / "s", "--mirror", tiny.base)
    assert res.exit_code == 1
    assert "not enough disk space" in res.stderr and "needs 5.0 KB, 100 B free" in res.stderr


@pytest.mark.parametrize("args, message", [
    (("download", "imagenet"), "unknown source 'imagenet'"),
    (("download", "gldv2", "--parts", "0-500"), "--parts '0-500'"),
    (("download", "resnet50-keras", "--mirror", "ftp://x"), "--mirror 'ftp://x'"),
    (("verify", "cambridge", ".", "--parts", "Louvre"), "no part 'Louvre'"),
])
def test_usage_errors_exit_2(args, message):
    res = run("data", *args)
    assert res.exit_code == 2, res.output
    assert message in res.stderr


def test_verify_complete_folder_passes_and_missing_file_fails(tiny, tmp_path):
    dest = tmp_path / "v"
    assert run("data", "download", "tiny", "--dest", dest, "--mirror", tiny.base).exit_code == 0
    ok = run("data", "verify", "tiny", dest)
    assert ok.exit_code == 0, ok.output
    assert "is complete" in ok.stdout
    (dest / "data/imgs/b.jpg").unlink()
    (dest / "data/imgs/a.jpg").write_bytes(b"<html>error page</html>")
    (dest / "weights.bin").write_bytes(b"x" * 5000)
    bad = run("data", "verify", "tiny", dest)
    assert bad.exit_code == 1
    assert "missing" in bad.stderr and "b.jpg" in bad.stderr and "corrupt" in bad.stderr
    assert "md5" in bad.stderr  # weights.bin fails its checksum
    assert "incomplete for tiny" in bad.stderr


def test_manual_source_prints_steps_then_verifies_the_folder(tmp_path):
    dest = tmp_path / "VIGOR"
    dest.mkdir()
    res = run("data", "download", "vigor", "--dest", dest)
    assert res.exit_code == 1
    assert "needs a manual step" in res.stderr and "docs.google.com/forms" in res.stderr
    assert "splits/Chicago/satellite_list.txt" in res.stderr
    # a tiny folder in the real VIGOR layout: its files and rows check out, but its counts are not the
    # published ones, which verify reports (issue 12: tiles and panoramas per city)
    sat, pano = "satellite_41.87_-87.63.png", "-1bYB9VHwKXGZbEjE8J7Ww,41.877934,-87.636425,.jpg"
    (dest / "Chicago/satellite").mkdir(parents=True)
    (dest / "Chicago/panorama").mkdir(parents=True)
    (dest / "Chicago/satellite" / sat).write_bytes(PNG)
    (dest / "Chicago/panorama" / pano).write_bytes(JPEG)
    splits = dest / "splits/Chicago"
    splits.mkdir(parents=True)
    (splits / "satellite_list.txt").write_text(sat + "\n")
    label = f"{pano} {sat} 1.0 2.0 {sat} 3 4 {sat} 5 6 {sat} 7 8\n"
    for name in ("same_area_balanced_train.txt", "same_area_balanced_test.txt", "pano_label_balanced.txt"):
        (splits / name).write_text(label)
    res = run("data", "verify", "vigor", dest, "--parts", "Chicago")
    assert res.exit_code == 1, res.output
    assert "tiles 1 (expected 22,308)" in res.output and "pano_label_balanced 1 (expected 25,479)" in res.output
    assert "1 of 4 checks failed" in res.output  # files, both lists and every row are fine


def test_manual_archive_placed_by_the_user_is_unpacked_then_verified(tmp_path):
    import zipfile

    dest = tmp_path / "market"
    dest.mkdir()
    with zipfile.ZipFile(dest / "Market-1501-v15.09.15.zip", "w") as zf:
        zf.writestr("Market-1501-v15.09.15/query/0001_c1s1_001051_00.jpg", JPEG)
    res = run("data", "download", "market1501", "--dest", dest)
    assert (dest / "Market-1501-v15.09.15/query/0001_c1s1_001051_00.jpg").exists()
    assert (dest / "Market-1501-v15.09.15.zip").exists()  # the user's archive is kept
    assert res.exit_code == 1 and "1 found, 3,367 missing" in res.stderr  # a real copy has 3,368 queries


def _gnd(n_db: int, n_q: int) -> dict:
    return {"imlist": [f"im{i}" for i in range(n_db)], "qimlist": [f"q{i}" for i in range(n_q)],
            "gnd": [{"easy": np.array([1]), "hard": np.array([2]), "junk": np.array([], dtype=np.int64)}] * n_q}


def test_verify_revisited_ground_truth_pickle(tmp_path, monkeypatch):
    root = tmp_path / "rox"
    (root / "jpg").mkdir(parents=True)
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(_gnd(4993, 70)))
    check = verify_source("roxford5k", root).checks[-1]
    assert (check.rule, check.status) == ("gnd_roxford5k.pkl images", "missing")
    assert check.detail.startswith("5063 of 5063 missing")
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(_gnd(10, 70)))
    assert verify_source("roxford5k", root).checks[-1].detail == "10 imlist entries, expected 4993"
    # the passing case, on a catalog sized for a test
    cat = tmp_path / "cat.yaml"
    cat.write_text(yaml.safe_dump({"sources": {"rox": {
        "title": "t", "kind": "dataset", "access": "manual", "steps": ["x"], "homepage": "https://x",
        "verify": [{"gnd": "gnd_roxford5k.pkl", "imlist": 10, "qimlist": 70, "in": "jpg/*.jpg"}]}}}))
    monkeypatch.setenv("GEOLOC_CATALOG", str(cat))
    for name in _gnd(10, 70)["imlist"] + _gnd(10, 70)["qimlist"]:
        (root / "jpg" / f"{name}.jpg").write_bytes(JPEG)
    assert verify_source("rox", root).ok


@pytest.mark.shared
def test_verify_oxford5k_against_the_real_ground_truth_files(shared_fixtures, tmp_path):
    root = tmp_path / "oxford5k"
    shutil.copytree(shared_fixtures / "oxford5k_gt", root / "gt")
    names = set()
    for f in (root / "gt").glob("*.txt"):
        names |= {line.split()[0].replace("oxc1_", "") for line in f.read_text().splitlines() if line.strip()}
    (root / "jpg").mkdir()
    for n in names:
        (root / "jpg" / f"{n}.jpg").write_bytes(JPEG)
    report = verify_source("oxford5k", root)
    status = {c.rule.split(" (")[0]: c.status for c in report.checks}
    assert status["gt/**/*_query.txt"] == "ok"  # 55 queries
    assert status["entries of gt/**/*.txt"] == "ok"
    assert status["jpg/**/*.jpg"] == "missing"  # only the referenced images exist, not all 5,062
    (root / "jpg/all_souls_000013.jpg").unlink()
    entries = next(c for c in verify_source("oxford5k", root).checks if c.rule.startswith("entries"))
    assert entries.status == "missing" and "all_souls_000013.jpg" in entries.detail


@pytest.mark.shared
def test_verify_cambridge_scene_against_the_real_split_file(shared_fixtures, tmp_path):
    scene = tmp_path / "cambridge/KingsCollege"
    scene.mkdir(parents=True)
    shutil.copy(shared_fixtures / "cambridge_kingscollege/dataset_test.txt", scene / "dataset_test.txt")
    header = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
    (scene / "dataset_train.txt").write_text(header + "seq1/frame00001.png 1 2 3 1 0 0 0\n")
    rows = (scene / "dataset_test.txt").read_text().splitlines()[3:] + ["seq1/frame00001.png"]
    for row in rows:
        img = scene / row.split()[0]
        img.parent.mkdir(parents=True, exist_ok=True)
        img.write_bytes(PNG)
    res = run("data", "verify", "cambridge", tmp_path / "cambridge", "--parts", "KingsCollege")
    assert res.exit_code == 0, res.output  # a scene unzipped by hand verifies too
    assert "344 present" in res.stdout  # 343 test rows + 1 train row
    (scene / "seq2").rename(scene / "seq2-moved")
    res = run("data", "verify", "cambridge", tmp_path / "cambridge", "--parts", "KingsCollege")
    assert res.exit_code == 1 and "seq2/frame" in res.stderr
