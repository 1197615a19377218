"""Cambridge -> MindRecord conversion: round trip, incremental re-runs, refusals, bad rows, the CLI."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from geocli.data import cambridge_mindrecord as conv
from geocli.data import mindrecord
from geocli.data.formats import cambridge as fmt
from geocli.errors import DataError


def make_scene(root: Path, n_train: int = 5, n_test: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split, n, seq in (("train", n_train, 1), ("test", n_test, 2)):
        rows = []
        for i in range(n):
            name = f"seq{seq}/frame{i + 1:05d}.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name), rng.integers(0, 255, (12 + i, 20, 3), dtype=np.uint8))
            q = rng.normal(size=4)
            rows.append(fmt.PoseRow(name, tuple(rng.normal(size=3).round(6)), tuple((q / np.linalg.norm(q)).round(6))))
        fmt.write(fmt.split_file(root, split), rows)
    return root


def test_page_and_header_sizes_fit_the_data():
    assert mindrecord.page_size_for(1000) == 1 << 15  # the minimum
    assert mindrecord.page_size_for(3_000_000) >= 4 * 3_000_000
    assert mindrecord.header_size_for(10, 10_000, 1 << 15) == 1 << 14


def test_round_trip_keeps_bytes_poses_and_names(tmp_path):
    scene = make_scene(tmp_path / "scene")
    report = conv.convert(scene)
    assert report.rows == {"train": 5, "test": 3} and report.up_to_date == []
    rows, _ = fmt.read(fmt.split_file(scene, "train"))
    stored = list(mindrecord.read(report.outputs["train"]))
    assert [r["file_name"] for r in stored] == [r.image for r in rows]
    for row, rec in zip(rows, stored):
        assert rec["image"] == (scene / row.image).read_bytes()
        assert rec["image_pose"].dtype == np.float32
        np.testing.assert_allclose(rec["image_pose"], row.pose, rtol=1e-6)
    manifest = json.loads(mindrecord.manifest_path(report.outputs["train"]).read_text())
    assert manifest["rows"] == 5
    # small datasets make small files (the defaults would give 48 MB)
    assert report.outputs["train"].stat().st_size < 1 << 20
    assert not list(report.outputs["train"].parent.glob(".tmp-*"))


def test_reruns_skip_and_changes_need_overwrite(tmp_path):
    scene = make_scene(tmp_path / "scene")
    first = conv.convert(scene)
    mtime = first.outputs["train"].stat().st_mtime_ns
    again = conv.convert(scene)
    assert again.up_to_date == ["train", "test"] and first.outputs["train"].stat().st_mtime_ns == mtime
    listing = fmt.split_file(scene, "train")
    listing.write_text("\n".join(listing.read_text().splitlines()[:-1]) + "\n")  # drop the last row
    with pytest.raises(DataError, match="different source; pass --overwrite"):
        conv.convert(scene)
    assert conv.convert(scene, overwrite=True).rows["train"] == 4


def test_files_not_written_by_geoloc_are_never_replaced(tmp_path):
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.mindrecord").write_text("mine")
    with pytest.raises(DataError, match=r"train.mindrecord: exists but was not completed by geoloc"):
        conv.convert(scene, out)
    assert (out / "train.mindrecord").read_text() == "mine"
    assert conv.convert(scene, out, overwrite=True).rows["train"] == 5


def test_missing_and_unreadable_images(tmp_path):
    scene = make_scene(tmp_path / "scene")
    (scene / "seq1/frame00002.png").unlink()
    (scene / "seq1/frame00004.png").write_bytes(b"not an image")
    listing = fmt.split_file(scene, "train")
    with pytest.raises(DataError) as info:
        conv.convert(scene)
    assert str(info.value) == f"{listing}:5: image seq1/frame00002.png not found"
    (scene / "seq1/frame00002.png").write_bytes((scene / "seq1/frame00001.png").read_bytes())
    with pytest.raises(DataError, match=rf"{listing}:7: image seq1/frame00004.png cannot be decoded"):
        conv.convert(scene)
    assert not (scene / "mindrecord" / "train.mindrecord").exists()  # nothing half-written
    (scene / "seq1/frame00002.png").unlink()
    report = conv.convert(scene, skip_bad=True)
    assert report.rows["train"] == 3
    assert [p.split(": ")[0] for p in report.skipped_rows] == [f"{listing}:5", f"{listing}:7"]
    assert [r["file_name"] for r in mindrecord.read(report.outputs["train"], ["file_name"])] == [
        "seq1/frame00001.png", "seq1/frame00003.png", "seq1/frame00005.png"]


def test_cli_convert_and_its_errors(tmp_path, cli):
    scene = make_scene(tmp_path / "scene")
    result = cli("data", "convert-mindrecord", "cambridge", "--scene", scene, "--out", tmp_path / "mr")
    assert result.exit_code == 0, result.output
    assert "written" in result.output and (tmp_path / "mr" / "test.mindrecord").is_file()
    result = cli("data", "convert-mindrecord", "cambridge", "--scene", scene, "--out", tmp_path / "mr")
    assert result.exit_code == 0 and "up to date" in result.output
    result = cli("data", "convert-mindrecord", "oxford", "--scene", scene)
    assert result.exit_code == 2 and "choose one of cambridge" in result.output
    (scene / "seq2/frame00001.png").unlink()
    result = cli("data", "convert-mindrecord", "cambridge", "--scene", scene, "--out", tmp_path / "mr2")
    assert result.exit_code == 1
    assert "dataset_test.txt:4: image seq2/frame00001.png not found" in result.output
