"""Centroids-ReID data: Market/Duke file-name parsing, dataset layouts, the P x K sampler, augmentation."""

import numpy as np
import pytest

from geocli.data.formats import reid
from geocli.errors import DataError
from geocli.models.creid import data as cdata
from geocli.models.creid.sampler import PKSampler


def _touch(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_parse_name_uses_the_base_name_and_zero_based_cameras():
    assert reid.parse_name("0002_c1s1_000451_03.jpg") == (2, 0)
    assert reid.parse_name("0001_c2_f0046182.jpg") == (1, 1)  # Duke
    assert reid.parse_name("-1_c3s2_000001_00.jpg") == (-1, 2)  # Market junk
    # a folder that looks like a pid/camera must not be parsed (the reference searches the full path)
    assert reid.parse_name("/data/0099_c9_run/0007_c4s3_000123_01.jpg") == (7, 3)
    with pytest.raises(DataError, match="pattern"):
        reid.parse_name("/data/0099_c9_run/photo.jpg")


def test_market_layout_sorted_junk_dropped_distractors_kept_train_relabelled(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    _touch(root / "bounding_box_train", ["0010_c2s1_000002_01.jpg", "0003_c1s1_000001_01.jpg",
                                         "0010_c1s1_000001_01.jpg", "0500_c6s1_000001_01.jpg"])
    _touch(root / "query", ["0010_c3s1_000001_00.jpg", "0003_c2s1_000001_00.jpg"])
    _touch(root / "bounding_box_test", ["0000_c1s1_000009_01.jpg", "-1_c2s1_000003_01.jpg",
                                        "0010_c1s1_000005_01.jpg", "0003_c4s1_000008_02.jpg", "Thumbs.db"])
    ds = reid.load(tmp_path)  # found below the given folder
    assert ds.root == root and ds.format == "market1501"
    assert [p.name for p in ds.train.paths] == sorted(p.name for p in ds.train.paths)
    assert ds.train.pids.tolist() == [3, 10, 10, 500]
    assert ds.labels.tolist() == [0, 1, 1, 2] and ds.label_pids == [3, 10, 500]
    assert ds.train.cams.tolist() == [0, 0, 1, 5]
    assert ds.query.pids.tolist() == [3, 10]  # raw pids, sorted names
    assert ds.gallery.pids.tolist() == [0, 3, 10]  # -1 dropped, 0 kept, Thumbs.db ignored
    assert ds.gallery.cams.tolist() == [0, 3, 0]


def test_duke_is_recognised_and_folder_layout_reads_identities(tmp_path):
    duke = tmp_path / "DukeMTMC-reID"
    _touch(duke / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c8_f0000001.jpg"])
    _touch(duke / "query", ["0005_c1_f0000002.jpg"])
    _touch(duke / "bounding_box_test", ["0005_c7_f0000003.jpg"])
    ds = reid.load(duke)
    assert ds.format == "dukemtmc" and ds.train.cams.tolist() == [1, 7]

    own = tmp_path / "own"
    _touch(own / "train" / "bob", ["a.jpg", "b_c2.jpg"])
    _touch(own / "train" / "alice", ["x.jpg"])
    _touch(own / "query" / "carol", ["q_c1.jpg"])
    _touch(own / "gallery" / "carol", ["g.jpg"])
    ds = reid.load(own)
    assert ds.format == "folder"
    assert ds.train.pids.tolist() == [0, 1, 1]  # alice, bob, bob (names numbered in sorted order)
    assert ds.train.cams.tolist() == [-2, -2, 1]
    assert ds.query.cams.tolist() == [0] and ds.gallery.cams.tolist() == [-2]  # unknown never "same camera"


def test_msmt17_lists(tmp_path):
    (tmp_path / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n")
    (tmp_path / "list_val.txt").write_text("0001/0001_000_15_0303morning_0016_0.jpg 1\n")
    (tmp_path / "list_query.txt").write_text("0002/0002_000_03_0303morning_0017_0.jpg 2\n")
    (tmp_path / "list_gallery.txt").write_text("0002/0002_001_05_0303morning_0018_0.jpg 2\nbad line here\n")
    with pytest.raises(DataError, match="list_gallery.txt:2"):
        reid.load(tmp_path)
    (tmp_path / "list_gallery.txt").write_text("0002/0002_001_05_0303morning_0018_0.jpg 2\n")
    ds = reid.load(tmp_path)
    assert ds.format == "msmt17" and ds.train.cams.tolist() == [0, 14] and ds.gallery.cams.tolist() == [4]


def test_not_a_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a re-identification dataset"):
        reid.load(tmp_path)


def test_pk_sampler_blocks_distinct_ids_and_short_identities():
    labels = np.repeat(np.arange(6), [1, 2, 4, 5, 8, 9])
    sampler = PKSampler(labels, p=3, k=4)
    # chunks: ceil(n'/4) with n' = n-1 when n % 4 == 1: 1->1, 2->1, 4->1, 5->1, 8->2, 9->2
    assert [sampler.chunks_of(len(g)) for g in sampler.groups] == [1, 1, 1, 1, 2, 2]
    assert sampler.batches_per_epoch() == 8 // 3
    for seed in range(5):
        order = sampler(np.random.default_rng(seed))
        assert len(order) == 2 * 12  # every epoch has the same length
        blocks = labels[order].reshape(-1, 3, 4)
        assert (blocks == blocks[:, :, :1]).all()  # P contiguous blocks of K, one identity each
        assert all(len(set(b[:, 0])) == 3 for b in blocks)  # P distinct identities per batch
    order = sampler(np.random.default_rng(0))
    np.testing.assert_array_equal(order, sampler(np.random.default_rng(0)))  # a pure function of the seed
    # identity 0 has one image: sampled with replacement (the reference pads with zero "mock" images)
    single = [b for b in order.reshape(-1, 4) if labels[b[0]] == 0]
    for block in single:
        assert (block == np.flatnonzero(labels == 0)[0]).all()
    # without replacement inside a chunk when an identity has enough images
    for block in order.reshape(-1, 4):
        if (labels == labels[block[0]]).sum() >= 4:
            assert len(set(block)) == 4


def test_train_loader_is_deterministic_and_erases_with_the_mean(tmp_path):
    import cv2

    paths = []
    for i in range(4):
        p = tmp_path / f"{i:04d}_c1s1_000001_00.jpg"
        cv2.imwrite(str(p), np.full((40, 20, 3), 60 * i, np.uint8))
        paths.append(p)
    cfg = {"size": [16, 8], "flip": 0.5, "pad": 2, "erase": 1.0, "erase_area": [0.02, 0.4], "erase_ratio": 0.3}
    loader = cdata.TrainLoader(paths, [0, 0, 1, 1], cfg)
    a, la = loader([0, 1, 2, 3], seed=(0, 1, 2, 0))
    b, _ = loader([0, 1, 2, 3], seed=(0, 1, 2, 0))
    c, _ = loader([0, 1, 2, 3], seed=(0, 1, 3, 0))
    assert a.shape == (4, 3, 16, 8) and a.dtype == np.float32 and la.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # erasing (p=1) fills a box with the raw ImageNet mean in normalised space
    for x in a:
        assert np.isclose(x[0], 0.485).any() and np.isclose(x[2], 0.406).any()


def test_data_verify_counts_images_as_the_parser_does(tmp_path):
    from geocli.data.verify import _reid

    root = tmp_path / "Market-1501-v15.09.15"
    _touch(root / "bounding_box_train", ["0001_c1s1_000001_00.jpg", "0001_c2s1_000001_00.jpg"])
    _touch(root / "query", ["0002_c1s1_000001_00.jpg"])
    _touch(root / "bounding_box_test", ["0002_c2s1_000001_00.jpg", "0000_c1s1_000001_00.jpg",
                                        "-1_c1s1_000001_00.jpg"])
    rule = {"reid": "Market-1501-v15.09.15", "train": 2, "query": 1, "gallery": 2}
    assert _reid(rule, tmp_path, None).status == "ok"  # the junk image is not counted
    wrong = _reid({**rule, "gallery": 3}, tmp_path, None)
    assert wrong.status == "mismatch" and "gallery 2 (expected 3)" in wrong.detail
