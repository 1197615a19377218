"""SDNet data: SEN1-2 layout, npz-prep (layout, positives-only train, scene-disjoint split, bad files),
memory-mapped reading with bounded memory, the synthetic set, and the two data commands."""

import pickle
import zipfile

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from geocli import config
from geocli.data import sen12_npz as prep
from geocli.data.formats import sen12
from geocli.data.synth.sen12 import SynthSpec, generate
from geocli.errors import DataError, UsageError

SPEC = SynthSpec(seasons=2, scenes=3, patches=3, size=96, seed=1)


def _cfg(**kw):
    c = dict(config.resolve("sdnet", "default", None, [])["prep"])
    c.update(max_per_image=6, min_distance=8, test_fraction=0.34, **kw)
    return c


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("sen12")
    generate(root, spec=SPEC)
    return root


def test_synth_writes_the_sen12_layout(raw):
    pairs, orphans = sen12.scan(raw)
    assert len(pairs) == 18 and not orphans
    p = pairs[0]
    assert p.sar == raw / "ROIs1158_spring" / "s1_0" / "ROIs1158_spring_s1_0_p1.png"
    assert p.optical == raw / "ROIs1158_spring" / "s2_0" / "ROIs1158_spring_s2_0_p1.png"
    import cv2

    assert cv2.imread(str(p.optical), cv2.IMREAD_UNCHANGED).shape == (96, 96, 3)
    assert cv2.imread(str(p.sar), cv2.IMREAD_UNCHANGED).shape == (96, 96)
    assert generate(raw, spec=SPEC)["done"]  # same spec: kept
    with pytest.raises(UsageError, match="--overwrite"):
        generate(raw, spec=SynthSpec(seasons=1, scenes=1, patches=1, size=96))


def test_npz_layout_positives_only_train_balanced_test_and_scene_split(raw, tmp_path):
    s = prep.prepare(raw, tmp_path / "npz", _cfg(), seed=0)
    for name in ("train.npz", "test.npz"):
        with zipfile.ZipFile(tmp_path / "npz" / name) as zf:  # members stored: memory-mappable
            assert [i.filename for i in zf.infolist()] == ["arr_0.npy", "arr_1.npy"]
            assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    with np.load(tmp_path / "npz" / "train.npz", allow_pickle=False) as z:
        tr, trl = z["arr_0"], z["arr_1"]
    with np.load(tmp_path / "npz" / "test.npz", allow_pickle=False) as z:
        te, tel = z["arr_0"], z["arr_1"]
    assert tr.dtype == np.uint8 and tr.shape[1:] == (64, 128) and te.shape[1:] == (64, 128)
    assert (trl == 1).all() and len(tr) == s["train_rows"] > 0
    assert tel.sum() * 2 == len(tel) == s["test_rows"] > 0  # balanced matches / non-matches
    # the optical half of a row is the grayscale optical crop, the SAR half the SAR crop at the same place
    pairs, _ = sen12.scan(raw)
    first = pairs[0]
    opt, sar = prep.read_gray(first.optical), prep.read_gray(first.sar)
    centre = prep.keypoints(opt, _cfg())[0]
    if first.scene not in {tuple(x.split("/s1_")) for x in s["test_scenes"]}:
        np.testing.assert_array_equal(tr[0], np.hstack([prep.crop(opt, centre), prep.crop(sar, centre)]))
    # scene-disjoint: no patch of a test scene in train (rows compared by content), no scene in both
    test_scenes = {(x.split("/s1_")[0], int(x.split("/s1_")[1])) for x in s["test_scenes"]}
    assert 0 < len(test_scenes) < 6 and s["scenes"] == {"train": 6 - len(test_scenes), "test": len(test_scenes)}
    train_opt = {r[:, :64].tobytes() for r in tr}
    assert not train_opt & {r[:, :64].tobytes() for r in te}
    for p in pairs:  # each scene's patches all went to the split of its scene
        o = prep.read_gray(p.optical)
        for k in prep.keypoints(o, _cfg()):
            in_train = prep.crop(o, k).tobytes() in train_opt
            assert in_train == (p.scene not in test_scenes)
    # non-matches: the SAR half comes from another image (never the matching crop)
    matched_sar = {r[:, 64:].tobytes() for r in te[tel == 1]}
    for r in te[tel == 0]:  # a non-match pairs an optical crop with the SAR crop of another image
        own = [m for m in te[tel == 1] if np.array_equal(m[:, :64], r[:, :64])]
        assert own and not any(np.array_equal(m[:, 64:], r[:, 64:]) for m in own)
        assert r[:, 64:].tobytes() in matched_sar
    assert set(s["per_season"]) <= {f"{a}/{b}" for a in sen12.SEASONS for b in ("train", "test")}
    # deterministic: the same input and seed give byte-identical files
    prep.prepare(raw, tmp_path / "again", _cfg(), seed=0)
    for name in ("train.npz", "test.npz"):
        assert (tmp_path / "npz" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    with pytest.raises(UsageError, match="--overwrite"):
        prep.prepare(raw, tmp_path / "npz", _cfg(), seed=0)


def test_split_scenes_is_disjoint_seeded_and_keeps_both_sides():
    scenes = [("ROIs1158_spring", i) for i in range(10)] * 3
    test = prep.split_scenes(scenes, 0.2, seed=0)
    assert len(test) == 2 and test <= set(scenes)
    assert prep.split_scenes(scenes, 0.2, seed=0) == test and prep.split_scenes(scenes, 0.2, seed=5) != test
    assert len(prep.split_scenes(scenes[:2], 0.01, 0)) == 1  # two scenes: one each way


def test_bad_files_are_skipped_and_listed_missing_twin_is_an_error(raw, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(raw, root)
    (root / "synth_sen12.json").unlink()
    empty = sen12.sar_path(root, "ROIs1158_spring", 0, 2)
    empty.write_bytes(b"")
    corrupt = sen12.optical_path(root, "ROIs1158_spring", 1, 1)
    corrupt.write_bytes(b"not a png")
    s = prep.prepare(root, tmp_path / "out", _cfg(), seed=0)
    listed = (tmp_path / "out" / "skipped.txt").read_text()
    assert str(empty) in listed and str(corrupt) in listed and s["skipped"] == 2
    orphan = sen12.optical_path(root, "ROIs1868_summer", 2, 3)
    orphan.unlink()
    twin = sen12.sar_path(root, "ROIs1868_summer", 2, 3)
    with pytest.raises(DataError, match="ROIs1868_summer_s1_2_p3.png: its optical twin .*--skip-bad"):
        prep.prepare(root, tmp_path / "out2", _cfg(), seed=0)
    s = prep.prepare(root, tmp_path / "out3", _cfg(), seed=0, skip_bad=True)
    assert str(twin) in (tmp_path / "out3" / "skipped.txt").read_text()
    with pytest.raises(DataError, match="no SEN1-2 season folders"):
        prep.prepare(tmp_path / "out3", tmp_path / "out4", _cfg())


def _write(path, rows, labels):
    w = prep.RowWriter(path, chunk_rows=256)
    for r, l in zip(rows, labels):
        w.add(r, l)
    return w.finish()


def _rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_mapped_reading_does_not_load_the_file(tmp_path):
    from geocli.models.sdnet.data import PairBatches, open_train, to_batch

    n = 4000  # 4000 x 8 KB = 33 MB
    rng = np.random.default_rng(0)
    path = tmp_path / "train.npz"
    w = prep.RowWriter(path, chunk_rows=500)
    for i in range(n):
        w.add(rng.integers(0, 256, (64, 128), dtype=np.uint8), 1)
    w.finish()
    images = prep.member_memmap(path, "arr_0")
    assert isinstance(images, np.memmap) and images.shape == (n, 64, 128)
    assert path.stat().st_size > 30e6
    loader = PairBatches(path)
    state = pickle.dumps(loader)
    assert len(state) < 1000  # its state is the path and the member's offset, not the data
    loader(np.arange(64), seed=0)  # warm up: first-call allocations
    before = _rss_kb()
    for step in range(40):  # 2560 random rows = 21 MB of the file
        idx = rng.choice(n, 64, replace=False)
        opt, sar = loader(idx, seed=(0, 0, step, 0))
        assert opt.shape == sar.shape == (64, 1, 64, 64) and opt.dtype == np.float32
    grown_mb = (_rss_kb() - before) / 1024
    assert grown_mb < 4, f"RSS grew by {grown_mb:.1f} MB reading 2560 rows of a 33 MB file"
    # rows come back in the order asked for
    opt, _ = pickle.loads(state)([7, 3], seed=0)
    want, _ = to_batch(images[[7, 3]])
    np.testing.assert_array_equal(opt, want)
    assert len(open_train(path)) == n


def test_train_file_with_a_non_match_is_refused_and_compressed_members_are_explained(tmp_path):
    from geocli.models.sdnet.data import open_train

    rows = np.zeros((3, 64, 128), np.uint8)
    _write(tmp_path / "t.npz", rows, [1, 0, 1])
    with pytest.raises(DataError, match="1 rows are labelled 0"):
        open_train(tmp_path / "t.npz")
    np.savez_compressed(tmp_path / "c.npz", rows, np.ones(3, np.int32))
    with pytest.raises(DataError, match="compressed and cannot be memory-mapped"):
        prep.member_memmap(tmp_path / "c.npz", "arr_0")
    np.savez(tmp_path / "port.npz", rows, np.ones(3, np.int64))  # what the port's files look like
    assert len(open_train(tmp_path / "port.npz")) == 3


def test_normalise_is_the_port_min_max_then_half_shift():
    from geocli.models.sdnet.data import normalise

    p = np.array([[[0, 50], [100, 200]]], np.uint8).repeat(32, 1).repeat(32, 2)
    x = normalise(p)
    assert x.shape == (1, 1, 64, 64) and x.min() == -1.0 and x.max() == 1.0
    assert (normalise(np.full((1, 64, 64), 7, np.uint8)) == -1.0).all()  # constant patch -> -1


def test_data_commands(raw, tmp_path):
    from geocli.models.sdnet.commands import npz_prep_sen12, synth_sen12
    from geocli.registry import data_commands

    kinds = {(c.kind, c.name) for k in ("npz-prep", "synth") for c in data_commands(k)}
    assert {("npz-prep", "sen12"), ("synth", "sen12")} <= kinds
    app = typer.Typer()
    app.command("npz-prep")(npz_prep_sen12)
    app.command("synth")(synth_sen12)
    runner = CliRunner()
    r = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--seasons", "1", "--scenes", "2",
                            "--patches", "2", "--size", "96"])
    assert r.exit_code == 0, r.output
    assert "4 optical/SAR pairs written" in r.output
    r = runner.invoke(app, ["npz-prep", "--root", str(tmp_path / "s"), "--set", "prep.test_fraction=0.5",
                            "--set", "prep.max_per_image=4"])
    assert r.exit_code == 0, r.output
    assert "train.npz 3 rows (1 scenes), test.npz 6 rows" in r.output and "pairs/s" in r.output
    assert (tmp_path / "s" / "npz" / "train.npz").is_file()
