"""GLDv2 for DELF: CSV parsing, relabelling, the port's split, the MindRecord conversion and its report."""

import csv

import cv2
import numpy as np
import pytest

from geocli.data import gldv2_mindrecord as conv
from geocli.data import readers
from geocli.data.formats import gldv2 as fmt
from geocli.errors import DataError


def port_split(labels, val_split, seed):
    """The port's _build_train_and_validation_splits (src/build_image_dataset.py l.245-307), on positions."""
    by_label = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    rs = np.random.RandomState(np.random.MT19937(np.random.SeedSequence(seed)))

    def shuffle_columns(array):
        columns = np.arange(array.shape[0])
        rs.shuffle(columns)
        return array[columns]

    val, train = [], []
    for indexes in by_label.values():
        subset = shuffle_columns(np.asarray(indexes))
        cutoff = max(1, int(val_split * len(subset)))
        val.append(subset[:cutoff])
        train.append(subset[cutoff:])
    return shuffle_columns(np.concatenate(val)), shuffle_columns(np.concatenate(train))


def test_relabel_sorts_landmark_ids_numerically():
    assert fmt.relabel([900, 12, 100, 12, 3]) == {3: 0, 12: 1, 100: 2, 900: 3}


def test_split_equals_the_ports_and_keeps_single_image_landmarks_for_training():
    rng = np.random.default_rng(0)
    labels = list(rng.integers(0, 9, 200))  # every label has several images
    ours = fmt.split(labels, 0.2, seed=0)
    port = port_split(labels, 0.2, seed=0)
    for a, b in zip(ours, port):
        np.testing.assert_array_equal(a, b)
    # per label: max(1, int(0.2 n)) validation images
    val, train = ours
    for label in set(labels):
        n = labels.count(label)
        assert sum(labels[i] == label for i in val) == max(1, int(0.2 * n))
    assert sorted(np.concatenate(ours).tolist()) == list(range(200))
    # the one deliberate difference: a single-image landmark (the port would put it in validation only)
    val, train = fmt.split([5, 7, 7, 7, 7, 7], 0.2, seed=3)
    assert 0 in train and 0 not in val
    assert sum(1 for i in val if i > 0) == 1
    val, train = fmt.split([1, 1, 2], 0.0, seed=0)
    assert len(val) == 0 and sorted(train) == [0, 1, 2]
    with pytest.raises(DataError, match="--val-split"):
        fmt.split([1, 2], 1.0, seed=0)


def _write_jpeg(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((12, 16, 3), value, np.uint8)
    image[::3] = 255 - value
    path.write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
    return path.read_bytes()


@pytest.fixture
def gld(tmp_path):
    """A hand-made GLDv2 folder: 3 landmarks listed out of id order, one missing image, one truncated
    JPEG, one file that is not an image, one landmark with a single image."""
    root = tmp_path / "gld"
    rows = {5000: [f"a{i:015x}" for i in range(6)], 17: [f"b{i:015x}" for i in range(5)], 300: ["c000000000000000"]}
    root.mkdir()
    with open(root / "train_clean.csv", "w") as f:
        f.write("landmark_id,images\n")
        for lid, ids in rows.items():
            f.write(f"{lid},{' '.join(ids)}\n")
    stored = {}
    for k, ids in enumerate(rows.values()):
        for j, fid in enumerate(ids):
            stored[fid] = _write_jpeg(fmt.image_path(root / "train", fid), 20 * k + j)
    fmt.image_path(root / "train", "a000000000000002").unlink()  # missing
    truncated = fmt.image_path(root / "train", "a000000000000003")
    truncated.write_bytes(stored["a000000000000003"][:60])
    fmt.image_path(root / "train", "b000000000000001").write_bytes(b"<html>404</html>")
    return root, rows, stored


def test_conversion_relabels_splits_stores_original_bytes_and_reports_skipped_images(gld):
    root, rows, stored = gld
    report = conv.convert(root, shards=2, val_split=0.2, seed=0)
    out = root / "mindrecord"
    assert report.classes == 3
    assert (out / "relabeling.csv").read_text() == "new_label,old_label\n0,17\n1,300\n2,5000\n"
    with open(out / "conversion_report.csv") as f:
        problems = {r["file_id"]: r["problem"] for r in csv.DictReader(f)}
    assert problems == {"a000000000000002": "missing", "a000000000000003": "unreadable: truncated JPEG (no end marker)",
                        "b000000000000001": "unreadable: not a decodable image"}
    assert report.count("missing") == 1 and report.count("unreadable") == 2

    new = {17: 0, 300: 1, 5000: 2}
    seen = {}
    for split in ("train", "validation"):
        shards = conv.split_shards(out, split)
        assert len(shards) == 2 and shards[0].name == f"{split}.mindrecord000"
        table = readers.MindRecordRows(shards)
        assert set(table.fields) == {"file_id", "label", "data"}
        for i in range(len(table)):
            row = table[i]
            seen[row["file_id"]] = split
            assert row["data"] == stored[row["file_id"]]  # the original file, not a re-encoding
            lid = next(k for k, ids in rows.items() if row["file_id"] in ids)
            assert row["label"] == new[lid]
    assert seen["c000000000000000"] == "train"  # single-image landmark stays in training
    assert set(seen) == set(stored) - set(problems)
    # landmark 5000 had 6 listed, 5 present: max(1, int(0.2 * 5)) = 1 validation image (the unreadable
    # one was assigned a split before it was found unreadable)
    assert report.rows["train"] + report.rows["validation"] == len(seen)


def test_conversion_resumes_keeps_finished_shards_and_refuses_a_changed_source(gld):
    root, rows, _ = gld
    first = conv.convert(root, shards=2)
    shard = conv.split_shards(root / "mindrecord", "train")[0]
    mtime = shard.stat().st_mtime_ns
    again = conv.convert(root, shards=2)
    assert len(again.up_to_date) == 4 and again.images_written == 0
    assert shard.stat().st_mtime_ns == mtime
    assert again.count("unreadable") == first.count("unreadable") == 2  # still reported from the first run
    # sources untouched
    assert fmt.image_path(root / "train", "c000000000000000").is_file()
    # another image appears: the relabelling/split change, which needs --overwrite
    _write_jpeg(fmt.image_path(root / "train", "a000000000000002"), 99)
    with pytest.raises(DataError, match="--overwrite"):
        conv.convert(root, shards=2)
    redone = conv.convert(root, shards=2, overwrite=True)
    assert redone.count("missing") == 0


def test_strict_stops_at_the_first_missing_image_naming_it(gld):
    root, _, _ = gld
    with pytest.raises(DataError, match=r"a000000000000002\.jpg.*missing.*--strict"):
        conv.convert(root, strict=True)
    fmt.image_path(root / "train", "a000000000000002").parent.mkdir(parents=True, exist_ok=True)
    _write_jpeg(fmt.image_path(root / "train", "a000000000000002"), 1)
    with pytest.raises(DataError, match="truncated|not a decodable"):
        conv.convert(root, strict=True, out=root / "strict")


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        conv.convert(tmp_path / "nope")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="train_clean.csv nor train.csv"):
        conv.convert(tmp_path)
    (tmp_path / "train_clean.csv").write_text("landmark,images\n1,abc\n")
    with pytest.raises(DataError, match=r"train_clean.csv:1: header lacks column 'landmark_id'"):
        conv.convert(tmp_path)
    (tmp_path / "train_clean.csv").write_text("landmark_id,images\nx1,abc\n")
    with pytest.raises(DataError, match=r"train_clean.csv:2: landmark_id 'x1'"):
        conv.convert(tmp_path)


def test_train_batches_are_random_resized_crops_from_the_seed(gld):
    from geocli.models.delf import data as ddata

    root, _, _ = gld
    conv.convert(root, shards=2, val_split=0.0)
    files = ddata.split_files(root, "train")
    load = ddata.TrainBatches(files, 32, (0.08, 1.0), (0.75, 4 / 3))
    images, labels = load([0, 3, 5], seed=(0, 1, 2, 0))
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.float32 and labels.dtype == np.int32
    assert -1.0 <= images.min() and images.max() <= 1.0  # (x - 128) / 128
    again, _ = load([0, 3, 5], seed=(0, 1, 2, 0))
    np.testing.assert_array_equal(images, again)
    other, _ = load([0, 3, 5], seed=(0, 1, 3, 0))
    assert not np.array_equal(images, other)
    import pickle

    assert pickle.loads(pickle.dumps(load))([0], seed=(0, 1, 2, 0))[0].shape == (1, 3, 32, 32)


def test_random_resized_crop_box_follows_the_scale_and_ratio_ranges():
    from geocli.models.delf.data import random_resized_crop_box

    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(100, 150, rng, (0.08, 1.0), (0.75, 4 / 3))
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 150
        assert 0.07 * 15000 <= h * w <= 15000 and 0.7 < w / h < 1.4
