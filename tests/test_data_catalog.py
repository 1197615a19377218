"""The packaged catalog parses, every file states its checksum situation, parts and mirrors expand right,
and ground-truth pickles are read without running code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from geocli.data.catalog import CHECKSUM_KEYS, DEFAULT_CATALOG, NONE_PUBLISHED, load_catalog, rewrite_url
from geocli.data.verify import load_pickle
from geocli.errors import ConfigError, DataError, UsageError

RAW = yaml.safe_load(DEFAULT_CATALOG.read_text())
CATALOG = load_catalog(DEFAULT_CATALOG)
REQUIRED = {"gldv2", "oxford5k", "paris6k", "roxford5k", "rparis6k", "cambridge", "sen12", "market1501",
            "dukemtmc-reid", "vigor", "resnet50-keras", "resnet50-torchvision", "vgg16-keras", "delf-gld"}


def test_every_required_source_is_in_the_catalog():
    assert REQUIRED <= set(CATALOG.names())


@pytest.mark.parametrize("name", sorted(RAW["sources"]))
def test_every_file_names_a_checksum_or_a_size_or_says_none_is_published(name):
    raw = RAW["sources"][name]
    specs = raw.get("files", []) + raw.get("manual_files", [])
    for spec in specs:
        stated = [k for k in CHECKSUM_KEYS if spec.get(k) is not None]
        assert stated or spec.get("checksum") == NONE_PUBLISHED, spec
        assert not (stated and spec.get("checksum") == NONE_PUBLISHED), f"{spec} says both"
        for key, length in (("md5", 32), ("sha256", 64)):
            if key in spec:
                assert len(spec[key]) == length and int(spec[key], 16) >= 0
    src = CATALOG.get(name)
    assert src.title and src.licence and src.homepage.startswith("http")
    assert src.manual == bool(src.steps)
    if NONE_PUBLISHED in {s.get("checksum") for s in specs}:
        assert src.checksum_note, f"{name}: say in checksum_note that no checksum is published"
    for url in [s.get("url", "") for s in specs] + [s.get("md5_url", "") for s in specs]:
        assert url == "" or url.startswith(("http://", "https://"))


def test_published_weight_checksums():
    by_name = {n: CATALOG.get(n).files[0] for n in ("resnet50-keras", "resnet50-torchvision", "vgg16-keras")}
    assert by_name["resnet50-keras"]["md5"] == "4d473c1dd8becc155b73f8504c6f6626"
    assert by_name["resnet50-torchvision"]["sha256_prefix"] == "19c8e357"
    assert by_name["resnet50-torchvision"]["url"] == "https://download.pytorch.org/models/resnet50-19c8e357.pth"
    assert by_name["vgg16-keras"]["md5"] == "6d6bbae143d832006294945121d1f1fc"


def test_gldv2_parts_expand_to_tars_with_their_md5_files():
    src = CATALOG.get("gldv2")
    assert len(src.all_parts()) == 500 and src.all_parts()[0] == "000" and src.all_parts()[-1] == "499"
    assert src.select_parts("0-2,10,2") == ["000", "001", "002", "010"]
    plan = {pf.path: pf for pf in src.plan(["007"])}
    tar = plan["archives/images_007.tar"]
    assert tar.url == "https://s3.amazonaws.com/google-landmark/train/images_007.tar"
    assert tar.expect.md5_url == "https://s3.amazonaws.com/google-landmark/md5sum/train/md5.images_007.txt"
    assert tar.extract_to == "train"
    assert plan["train_clean.csv"].url == "https://s3.amazonaws.com/google-landmark/metadata/train_clean.csv"
    assert len(plan) == 5


@pytest.mark.parametrize("spec", ["500", "3-1", "x", "0-600", "-1"])
def test_bad_part_numbers_are_usage_errors(spec):
    with pytest.raises(UsageError, match=r"--parts .*0-499"):
        CATALOG.get("gldv2").select_parts(spec)


def test_cambridge_scenes_are_parts_with_their_repository_handles():
    src = CATALOG.get("cambridge")
    assert src.select_parts("kingscollege,Street") == ["KingsCollege", "Street"]
    plan = src.plan(["KingsCollege", "ShopFacade"])
    assert [pf.url for pf in plan] == [
        "https://www.repository.cam.ac.uk/bitstream/handle/1810/251342/KingsCollege.zip",
        "https://www.repository.cam.ac.uk/bitstream/handle/1810/251336/ShopFacade.zip"]
    assert plan[0].manual_page == "https://www.repository.cam.ac.uk/handle/1810/251342"
    with pytest.raises(UsageError, match="no part 'Louvre'"):
        src.select_parts("Louvre")
    with pytest.raises(UsageError, match="has no parts"):
        CATALOG.get("oxford5k").select_parts("1")


def test_paris_excludes_its_twenty_corrupt_images():
    plan = CATALOG.get("paris6k").plan()
    excluded = {pf.path: len(pf.exclude) for pf in plan}
    assert excluded == {"archives/paris_1-v1.tgz": 20, "archives/paris_2-v1.tgz": 20, "archives/paris_120310.tgz": 0}


def test_mirror_keeps_the_path_and_query():
    url = "https://s3.amazonaws.com/google-landmark/train/images_000.tar"
    assert rewrite_url(url, "http://127.0.0.1:8000/") == "http://127.0.0.1:8000/google-landmark/train/images_000.tar"
    assert rewrite_url(url + "?a=1", "http://m/base") == "http://m/base/google-landmark/train/images_000.tar?a=1"
    plan = CATALOG.get("oxford5k").plan(mirror="http://127.0.0.1:9")
    assert all(pf.url.startswith("http://127.0.0.1:9/~vgg/data/") for pf in plan)


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(UsageError, match="unknown source 'imagenet'.*gldv2.*vigor"):
        CATALOG.get("imagenet")


def test_catalog_can_be_swapped_by_env_and_is_checked(tmp_path, monkeypatch):
    bad = tmp_path / "cat.yaml"
    bad.write_text("sources:\n  x: {title: X, kind: dataset, access: automatic,\n"
                   "      files: [{url: 'http://h/x', path: x}]}\n")
    monkeypatch.setenv("GEOLOC_CATALOG", str(bad))
    with pytest.raises(ConfigError, match="names no checksum or size.*none-published"):
        load_catalog()
    bad.write_text(bad.read_text().replace("path: x}", "path: x, checksum: none-published}"))
    assert load_catalog().names() == ["x"]


def test_restricted_unpickler_loads_ground_truth_with_numpy_arrays(tmp_path):
    gnd = {"imlist": ["all_souls_000000"], "qimlist": ["all_souls_000013"],
           "gnd": [{"bbx": [1.0, 2.0, 3.0, 4.0], "easy": np.array([0]), "hard": np.array([], dtype=np.int64),
                    "junk": np.arange(3)}]}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"gnd{protocol}.pkl"
        path.write_bytes(pickle.dumps(gnd, protocol=protocol))
        loaded = load_pickle(path)
        assert loaded["imlist"] == gnd["imlist"]
        np.testing.assert_array_equal(loaded["gnd"][0]["junk"], np.arange(3))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path.cwd() / 'pwned'}",))


def test_restricted_unpickler_refuses_code_and_runs_nothing(tmp_path):
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps({"imlist": [], "gnd": _Evil()}))
    with pytest.raises(DataError, match=r"refused to unpickle .*(posix|os)\.system is not allowed"):
        load_pickle(path)
    assert not (Path.cwd() / "pwned").exists()
    path.write_bytes(pickle.dumps(eval))  # builtins.eval is a global too
    with pytest.raises(DataError, match="builtins.eval is not allowed"):
        load_pickle(path)
