"""PoseNet's preprocessing: the paper's resize by default, the port's quirk on request, deterministic crops."""

from pathlib import Path

import numpy as np
import pytest

from geocli import config
from geocli.data.images import image_files
from geocli.errors import ConfigError, DataError, UsageError
from geocli.models.posenet import data as pdata

LANDSCAPE = np.random.default_rng(0).integers(0, 255, (108, 192, 3), dtype=np.uint8)  # a 16:9 frame


def test_default_resize_keeps_the_aspect_ratio():
    cfg = config.load_preset("posenet")
    assert pdata.resize(LANDSCAPE, cfg, "train").shape == (256, 455, 3)
    assert pdata.test_view(LANDSCAPE, cfg).shape == (224, 224, 3)


def test_port_preset_reproduces_the_portrait_quirk():
    cfg = config.load_preset("posenet", "port")
    assert pdata.resize(LANDSCAPE, cfg, "train").shape == (455, 256, 3)  # landscape in, portrait out
    assert pdata.resize(LANDSCAPE, cfg, "test").shape == (455, 224, 3)
    assert pdata.test_view(LANDSCAPE, cfg).shape == (224, 224, 3)


def test_crop_larger_than_the_resized_image_is_a_config_error():
    cfg = config.apply_overrides(config.load_preset("posenet"), ["data.train_size=200"])
    with pytest.raises(ConfigError, match="data.crop 224 is larger"):
        pdata.resize(LANDSCAPE, cfg, "train")


def test_batches_are_deterministic_per_seed_and_normalised():
    cfg = config.apply_overrides(config.load_preset("posenet"), ["data.crop=32"])
    ramp = np.add.outer(np.arange(40), 2 * np.arange(60)).astype(np.uint8)  # every offset looks different
    images = [np.repeat(ramp[:, :, None], 3, axis=2), np.full((40, 60, 3), 200, np.uint8)]
    frames = pdata.Frames(["a", "b"], np.arange(14, dtype=np.float32).reshape(2, 7), images)
    load = pdata.train_loader(frames, cfg)
    x1, y1 = load(np.array([0, 1]), seed=(1, 0, 0, 0))
    x2, _ = load(np.array([0, 1]), seed=(1, 0, 0, 0))
    x3, _ = load(np.array([0, 1]), seed=(1, 0, 1, 0))
    assert x1.shape == (2, 3, 32, 32) and x1.dtype == np.float32
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(x1, x3)
    np.testing.assert_array_equal(y1, frames.poses)
    mean = np.array(cfg["data"]["mean"]) * 255
    std = np.array(cfg["data"]["std"]) * 255
    np.testing.assert_allclose(x1[1, :, 0, 0], (200 - mean) / std, rtol=1e-5)


def test_missing_data_is_explained(tmp_path):
    with pytest.raises(UsageError, match="--data is required"):
        pdata.find_record(None, "train")
    with pytest.raises(DataError, match="geoloc data convert-mindrecord cambridge --scene"):
        pdata.find_record(tmp_path, "train")
    with pytest.raises(DataError, match="folder not found"):
        pdata.find_record(tmp_path / "nope", "train")


def test_image_files_expand_folders(tmp_path):
    (tmp_path / "seq1").mkdir()
    for name in ("seq1/b.png", "seq1/a.jpg", "seq1/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert image_files([tmp_path]) == [tmp_path / "seq1/a.jpg", tmp_path / "seq1/b.png"]
    with pytest.raises(UsageError, match="no such file"):
        image_files([Path(tmp_path / "missing.png")])
    with pytest.raises(DataError, match="cannot be decoded"):
        pdata.read_image_file(tmp_path / "seq1/b.png")
