"""Safe extraction: hostile members are refused with nothing written, re-runs are incremental."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from geocli.data import archive
from geocli.data.archive import MANIFEST_NAME, Manifest, extract
from geocli.errors import DataError


def make_tar(path: Path, members, mode="w:gz") -> Path:
    """``members``: (name, bytes) for files, or (name, TarInfo-type, linkname) for links and devices."""
    with tarfile.open(path, mode) as tf:
        for m in members:
            info = tarfile.TarInfo(m[0])
            if len(m) == 2:
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
            else:
                info.type, info.linkname = m[1], m[2]
                tf.addfile(info)
    return path


def make_zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def tree(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def box(tmp_path):
    """dest lives two levels down, so an escape would land in tmp_path (checked afterwards)."""
    dest = tmp_path / "a" / "dest"
    return tmp_path, dest


@pytest.mark.parametrize("members, why", [
    ([("ok.txt", b"fine"), ("../evil", b"x")], "'..' in its path"),
    ([("ok.txt", b"fine"), ("sub/../../evil", b"x")], "'..' in its path"),
    ([("/tmp/evil-abs", b"x")], "absolute path"),
    ([("ok.txt", b"fine"), ("link", tarfile.SYMTYPE, "../../evil")], "points outside"),
    ([("link", tarfile.SYMTYPE, "/etc")], "points outside"),
    ([("in", tarfile.SYMTYPE, "."), ("sub", tarfile.SYMTYPE, "in/.."), ("sub/x", b"x")], "through a symlink"),
    ([("d", tarfile.SYMTYPE, "sub"), ("d/evil", b"x")], "through a symlink"),
    ([("deep/deep/l2", tarfile.SYMTYPE, "."), ("l1", tarfile.SYMTYPE, "deep/deep/l2/../../..")], "points outside"),
    ([("hard", tarfile.LNKTYPE, "../../etc/passwd")], "points outside"),
    ([("l", tarfile.SYMTYPE, "."), ("hard", tarfile.LNKTYPE, "l/x")], "through a symlink"),
    ([("dev", tarfile.CHRTYPE, "")], "device"),
    ([("fifo", tarfile.FIFOTYPE, "")], "device, FIFO"),
])
def test_hostile_tar_members_are_refused_and_nothing_is_written(box, members, why):
    tmp, dest = box
    bad = make_tar(tmp / "bad.tgz", members)
    with pytest.raises(DataError, match=why) as exc:
        extract(bad, dest, manifest=Manifest(dest))
    assert "bad.tgz" in str(exc.value) and "refusing member" in str(exc.value)
    assert tree(dest) == []  # nothing at all: the check runs before the first write
    assert sorted(p.name for p in tmp.rglob("*")) == ["bad.tgz"]  # no escape into tmp either


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_hostile_zip_members_are_refused(box, name):
    tmp, dest = box
    bad = make_zip(tmp / "bad.zip", [("ok.txt", b"fine"), (name, b"x")])
    with pytest.raises(DataError, match="refusing member"):
        extract(bad, dest)
    assert tree(dest) == [] and not (tmp / "evil.txt").exists()


def test_zip_symlink_pointing_outside_is_refused(box):
    tmp, dest = box
    path = tmp / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("escape")
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "../../outside")
    with pytest.raises(DataError, match="points outside"):
        extract(path, dest)


def test_symlink_already_in_dest_cannot_be_followed_outside(box):
    tmp, dest = box
    (tmp / "outside").mkdir()
    dest.mkdir(parents=True)
    (dest / "jump").symlink_to(tmp / "outside")
    arc = make_tar(tmp / "ok.tgz", [("jump/x.txt", b"x")])
    with pytest.raises(DataError, match="leads outside"):
        extract(arc, dest)
    assert tree(tmp / "outside") == []


def test_good_archive_extracts_with_inside_links_and_records_the_manifest(box):
    tmp, dest = box
    arc = make_tar(tmp / "good.tgz", [("img/a.jpg", b"A" * 10), ("img/b.jpg", b"B"),
                                      ("latest", tarfile.SYMTYPE, "img/a.jpg"),
                                      ("copy.jpg", tarfile.LNKTYPE, "img/a.jpg")])
    manifest = Manifest(dest)
    assert extract(arc, dest, manifest=manifest, key="archives/good.tgz") == dest
    assert (dest / "img/a.jpg").read_bytes() == b"A" * 10
    assert (dest / "latest").is_symlink() and (dest / "latest").read_bytes() == b"A" * 10
    assert (dest / "copy.jpg").read_bytes() == b"A" * 10
    record = json.loads((dest / MANIFEST_NAME).read_text())["archives"]["archives/good.tgz"]
    assert record["members"] == 4 and record["written"] == 4
    assert arc.exists()  # archives are never deleted by extraction


def test_second_run_skips_an_archive_in_the_manifest(box, monkeypatch):
    tmp, dest = box
    arc = make_tar(tmp / "good.tar", [("x.txt", b"x")], mode="w")
    extract(arc, dest, manifest=Manifest(dest))
    monkeypatch.setattr(archive, "entries", lambda p: pytest.fail("re-read an extracted archive"))
    extract(arc, dest, manifest=Manifest(dest))  # a fresh Manifest reads the JSON from disk


def test_interrupted_extraction_keeps_finished_files_and_completes(box):
    tmp, dest = box
    arc = make_zip(tmp / "z.zip", [("one.txt", b"1111"), ("two.txt", b"2222")])
    dest.mkdir(parents=True)
    (dest / "one.txt").write_bytes(b"1111")  # written by the interrupted run
    extract(arc, dest, manifest=Manifest(dest))
    record = json.loads((dest / MANIFEST_NAME).read_text())["archives"]["z.zip"]
    assert (record["written"], record["kept_existing"]) == (1, 1)
    assert (dest / "two.txt").read_bytes() == b"2222"


def test_a_different_existing_file_is_never_overwritten_without_the_flag(box):
    tmp, dest = box
    arc = make_zip(tmp / "z.zip", [("notes.txt", b"from the archive")])
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_bytes(b"the user's own notes")
    with pytest.raises(DataError, match="already exists and differs.*--overwrite"):
        extract(arc, dest)
    assert (dest / "notes.txt").read_bytes() == b"the user's own notes"
    extract(arc, dest, overwrite=True)
    assert (dest / "notes.txt").read_bytes() == b"from the archive"


def test_excluded_members_are_not_extracted(box):
    tmp, dest = box
    arc = make_tar(tmp / "paris.tgz", [("paris/louvre/paris_louvre_000136.jpg", b"<html>302"),
                                       ("paris/louvre/paris_louvre_000001.jpg", b"\xff\xd8\xff")])
    extract(arc, dest, exclude=["paris_louvre_000136.jpg"])
    assert tree(dest / "paris/louvre") == ["paris_louvre_000001.jpg"]


def test_not_an_archive_is_a_clear_error(box):
    tmp, dest = box
    junk = tmp / "page.tgz"
    junk.write_bytes(b"<html>login required</html>")
    with pytest.raises(DataError, match="not a tar or zip archive"):
        extract(junk, dest)
