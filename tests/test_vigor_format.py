"""VIGOR layout parser on hand-made split files, label geometry, and the synthetic cities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geocli.data.formats import vigor as fmt
from geocli.errors import DataError

T = ["satellite_47.59931400000001_-122.302950.png", "satellite_47.59931400000001_-122.3024697338655.png",
     "satellite_47.59898593_-122.302950.png", "satellite_47.59898593_-122.3024697338655.png"]


def _row(pano: str, deltas=((74.0, -4.0), (74.0, 316.0), (-246.0, -4.0), (-246.0, 316.0))) -> str:
    return " ".join([pano] + [f"{t} {a} {b}" for t, (a, b) in zip(T, deltas)])


def _dataset(root: Path, label_rows, crlf: bool = False, city_rows=None) -> Path:
    sep = "\r\n" if crlf else "\n"
    for city in fmt.CITIES:
        base = root / "splits" / city
        base.mkdir(parents=True)
        (base / "satellite_list.txt").write_bytes(sep.join(T).encode())
        rows = (city_rows or {}).get(city, label_rows)
        for name in ("same_area_balanced_train.txt", "same_area_balanced_test.txt", "pano_label_balanced.txt"):
            (base / name).write_bytes((sep.join(rows) + sep).encode())
    return root


def test_names_split_from_the_right():
    assert fmt.tile_latlon("satellite_41.85205407245264_-87.69119741060825.png") == (41.85205407245264,
                                                                                     -87.69119741060825)
    assert fmt.pano_latlon("--Bm25YXcr-aJ-Nbdz0oIw,47.593046,-122.300124,.jpg") == (47.593046, -122.300124)


def test_good_and_crlf_files_parse_alike(tmp_path):
    rows = [_row("JJw0phoZG-6rhtKR5WoZEw,47.599247,-122.302945,.jpg"),
            _row("-Aa0phoZG-6rhtKR5WoZEw,47.599200,-122.302900,.jpg")]
    lf = fmt.load_split(_dataset(tmp_path / "lf", rows), "same-area", "train")
    crlf = fmt.load_split(_dataset(tmp_path / "crlf", rows, crlf=True), "same-area", "train")
    assert lf.pano_names == crlf.pano_names and lf.tile_names == crlf.tile_names
    assert not any("\r" in n for n in crlf.tile_names + crlf.pano_names)
    assert len(lf) == 8 and lf.n_tiles == 16  # 2 rows x 4 cities, 4 tiles x 4 cities
    assert lf.pano_names[1].startswith("-")  # an id beginning with '-' is a name, not an option
    assert lf.pano_paths[0] == "NewYork/panorama/JJw0phoZG-6rhtKR5WoZEw,47.599247,-122.302945,.jpg"
    np.testing.assert_array_equal(lf.positive[:2], [0, 0])
    np.testing.assert_array_equal(lf.semi[0], [1, 2, 3])
    np.testing.assert_array_equal(lf.deltas[0, 0], [74.0, -4.0])
    assert lf.tile_paths[4].startswith("Seattle/satellite/")


def test_cross_area_cities_and_corrected_resolution(tmp_path):
    root = _dataset(tmp_path, [_row("a,47.599247,-122.302945,.jpg")])
    train = fmt.load_split(root, "cross-area", "train")
    test = fmt.load_split(root, "cross-area", "test")
    assert train.pano_city == ["NewYork", "Seattle"] and test.pano_city == ["SanFrancisco", "Chicago"]
    assert train.n_tiles == 8 and np.all(train.m_per_px == 0.114)
    for city in fmt.CITIES:  # the corrected folder: same format, renamed files, satellite_list kept
        base = root / "splits__corrected" / city
        base.mkdir(parents=True)
        (base / "pano_label_balanced__corrected.txt").write_text(_row("a,47.599247,-122.302945,.jpg"))
    corrected = fmt.load_split(root, "cross-area", "train", "corrected")
    np.testing.assert_allclose(corrected.m_per_px, [0.113248, 0.100817])


def test_twelve_field_row_is_reported_with_file_and_line(tmp_path):
    bad = _row("b,47.599247,-122.302945,.jpg").rsplit(" ", 1)[0]  # 12 fields
    root = _dataset(tmp_path, [_row("a,47.599247,-122.302945,.jpg"), bad])
    with pytest.raises(DataError, match=r"NewYork[/\\]same_area_balanced_train.txt:2: 12 fields, expected 13"):
        fmt.load_split(root, "same-area", "train")


def test_unknown_tile_and_bad_number_are_reported(tmp_path):
    row = _row("a,47.599247,-122.302945,.jpg").replace(T[2], "satellite_1.0_2.0.png")
    with pytest.raises(DataError, match=r"pano_label_balanced.txt:1: tile satellite_1.0_2.0.png is not in"):
        fmt.load_split(_dataset(tmp_path / "a", [row]), "cross-area", "test")
    row = _row("a,47.599247,-122.302945,.jpg").replace(" 74.0 ", " x ", 1)
    with pytest.raises(DataError, match=r":1: could not convert"):
        fmt.load_split(_dataset(tmp_path / "b", [row]), "same-area", "test")


def test_label_geometry_round_trip_and_iou():
    # d0 > 0: the panorama is south of the centre; d1 < 0: east of it (d1 is minus dx)
    lat_c, lon_c = 47.599314, -122.302950
    lat, lon = fmt.offset_to_latlon(lat_c, lon_c, np.array([74.0, -4.0]), 0.114)
    assert lat < lat_c and lon > lon_c
    np.testing.assert_allclose(fmt.latlon_to_delta(lat_c, lon_c, lat, lon, 0.114), [74.0, -4.0], atol=1e-6)
    # the reference's IoU formula: 1 / (1 - (1-|d0|/L)(1-|d1|/L)/2) - 1
    d = np.array([[0.0, 0.0], [320.0, 0.0], [160.0, -320.0]])
    a = (1 - np.abs(d[:, 0]) / 640) * (1 - np.abs(d[:, 1]) / 640)
    np.testing.assert_allclose(fmt.iou_from_delta(d), 1 / (1 - a / 2) - 1)
    assert fmt.iou_from_delta(np.array([0.0, 0.0])) == pytest.approx(1.0)


def test_synthetic_cities_follow_the_layout(tmp_path):
    from geocli.data.synth.vigor import SynthSpec, synthesize

    spec = SynthSpec(grid=3, panos_per_tile=1, tile_px=48, pano_hw=(32, 64))
    summary = synthesize(tmp_path, spec)
    assert summary["tiles"] == 36 and not summary["reused"]
    assert synthesize(tmp_path, spec)["reused"]
    assert (tmp_path / "splits" / "NewYork" / "satellite_list.txt").read_bytes().count(b"\r\n") == 8
    splits = {}
    for labels in fmt.LABELS:
        split = splits[labels] = fmt.load_split(tmp_path, "cross-area", "train", labels)
        assert all((tmp_path / p).is_file() for p in split.pano_paths + split.tile_paths)
        # the positive is the nearest tile centre, the panorama lies inside all four tiles
        assert np.all(np.abs(split.deltas[:, 0]).max(axis=1) <= np.abs(split.deltas[:, 1:]).max(axis=2).min(axis=1))
        lat, lon = fmt.offset_to_latlon(split.tile_latlon[split.positive, 0], split.tile_latlon[split.positive, 1],
                                        split.deltas[:, 0], split.m_per_px)
        from geocli.metrics.geo import great_circle_m
        err = great_circle_m(lat, lon, split.pano_latlon[:, 0], split.pano_latlon[:, 1])
        assert err.max() < 0.2  # the labels lead back to the position in the file name
    # the original labels measure the same metres in 0.114 m pixels: wrong pixels in Seattle's tiles (issue #2)
    ratio = np.array([fmt.CORRECTED_M_PER_PX[c] for c in splits["original"].pano_city]) / 0.114
    np.testing.assert_allclose(splits["original"].deltas[:, 0], splits["corrected"].deltas[:, 0] * ratio[:, None],
                               atol=0.15)  # both rounded to 0.1 px
    with pytest.raises(Exception, match="not empty"):
        synthesize(tmp_path / "NewYork", spec)


def test_verify_counts_and_names_bad_rows(tmp_path):
    from geocli.data.synth.vigor import SynthSpec, synthesize
    from geocli.data.verify import verify_source

    synthesize(tmp_path, SynthSpec(grid=3, panos_per_tile=1, tile_px=32, pano_hw=(16, 32)))
    path = tmp_path / "splits" / "Chicago" / "same_area_balanced_test.txt"
    lines = path.read_bytes().split(b"\r\n")
    lines[1] = lines[1].rsplit(b" ", 1)[0]  # a 12-field row on line 2
    path.write_bytes(b"\r\n".join(lines))
    checks = {c.rule.split(" splits")[0]: c for c in verify_source("vigor", tmp_path).checks if " splits (" in c.rule}
    assert checks["Chicago"].status == "corrupt" and "same_area_balanced_test.txt:2: 12 fields" in checks["Chicago"].detail
    assert checks["Seattle"].status == "mismatch" and "tiles 9 (expected 20,776)" in checks["Seattle"].detail
