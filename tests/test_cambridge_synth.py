"""The synthetic Cambridge-layout scene: exact layout, true rotations, disjoint splits, re-runs, the CLI."""

import json

import cv2
import numpy as np
import pytest

from geocli.data.formats import cambridge as fmt
from geocli.data.synth import cambridge as synth
from geocli.errors import DataError

TINY = synth.SynthSpec(width=48, height=27, frames_per_sequence=5, supersample=1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("plaza")
    synth.synthesize(out, TINY)
    return out


def test_layout_is_exactly_cambridge(scene):
    for split in fmt.SPLITS:
        text = fmt.split_file(scene, split).read_text()
        assert text.startswith("Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n")
    train, _ = fmt.read(fmt.split_file(scene, "train"))
    test, _ = fmt.read(fmt.split_file(scene, "test"))
    assert (len(train), len(test)) == (4 * 5, 2 * 5)
    for row in train + test:
        assert row.image.startswith("seq") and "/frame" in row.image and row.image.endswith(".png")
        image = cv2.imread(str(scene / row.image))
        assert image.shape == (27, 48, 3) and image.std() > 5  # rendered, not blank


def test_train_and_test_sequences_are_disjoint_and_interleaved(scene):
    seqs = {split: {r.image.split("/")[0] for r in fmt.read(fmt.split_file(scene, split))[0]} for split in fmt.SPLITS}
    assert seqs["train"].isdisjoint(seqs["test"])
    layout = synth.sequence_layout(TINY)
    ys = {f"seq{n}": y for n, _, y in layout}
    train_y = sorted(ys[s] for s in seqs["train"])
    assert all(train_y[0] < ys[s] < train_y[-1] for s in seqs["test"])  # test lines lie between train lines


def test_labels_are_proper_rotations_matching_the_cameras(scene):
    rows, _ = fmt.read(fmt.split_file(scene, "train"))
    for row in rows:
        rot = synth.quaternion_to_rotation(row.wpqr)
        assert abs(np.linalg.det(rot) - 1) < 1e-5 and np.allclose(rot @ rot.T, np.eye(3), atol=1e-5)
        assert row.wpqr[0] >= 0 and abs(np.linalg.norm(row.wpqr) - 1) < 1e-5
    # the label is the world-to-camera rotation: the camera's optical axis (third row) points north-ish
    forward = synth.quaternion_to_rotation(rows[0].wpqr)[2]
    assert forward[1] > 0.3 and abs(forward[2]) < 0.3


def test_quaternion_conversion_round_trips_and_rejects_reflections():
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        np.testing.assert_allclose(synth.rotation_to_quaternion(synth.quaternion_to_rotation(q)), q, atol=1e-9)
    rot = synth.look_rotation(0.3, 0.1, 0.05)
    with pytest.raises(ValueError, match="det -1"):
        synth.rotation_to_quaternion(rot * np.array([[1], [1], [-1]]))


def test_reruns_skip_and_other_settings_or_foreign_data_need_overwrite(scene, tmp_path):
    stamp = (scene / "seq1" / "frame00001.png").stat().st_mtime_ns
    assert synth.synthesize(scene, TINY)["skipped"]
    assert (scene / "seq1" / "frame00001.png").stat().st_mtime_ns == stamp
    other = synth.SynthSpec(width=48, height=27, frames_per_sequence=3, supersample=1)
    with pytest.raises(DataError, match="other settings; pass --overwrite"):
        synth.synthesize(scene, other)
    foreign = tmp_path / "real"
    fmt.write(fmt.split_file(foreign, "train"), [fmt.PoseRow("seq1/a.png", (0, 0, 0), (1, 0, 0, 0))])
    with pytest.raises(DataError, match="not written by geoloc"):
        synth.synthesize(foreign, TINY)


def test_cli_synth(tmp_path, cli):
    out = tmp_path / "plaza"
    result = cli("data", "synth", "cambridge", "--out", out, "--frames", "3", "--width", "32", "--height", "18")
    assert result.exit_code == 0, result.output
    assert "train 12, test 6" in result.output
    assert json.loads((out / "synth.json").read_text())["spec"]["frames_per_sequence"] == 3
    result = cli("data", "synth", "cambridge", "--out", out, "--frames", "4", "--width", "32", "--height", "18")
    assert result.exit_code == 1 and "--overwrite" in result.output
    result = cli("data", "synth", "cambridge", "--out", out, "--frames", "4", "--width", "32", "--height", "18",
                 "--overwrite")
    assert result.exit_code == 0 and not (out / "seq1" / "frame00005.png").exists()
    assert (out / "seq1" / "frame00004.png").exists()
