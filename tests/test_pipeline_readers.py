"""Random-access readers: MindRecord rows by index (against MindSpore's own reader), memory-mapped .npz
members, image files, and memory that does not grow with the number of records."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geocli.data import readers
from geocli.errors import DataError


def write_mindrecord(path: Path, rows, schema, shards=1, index=None):
    from mindspore.mindrecord import FileWriter

    writer = FileWriter(str(path), shard_num=shards, overwrite=True)
    writer.add_schema(schema, "test")
    if index is not None:
        writer.add_index(index)
    writer.write_raw_data(rows)
    writer.commit()


SCHEMA = {"file_id": {"type": "string"}, "label": {"type": "int64"}, "data": {"type": "bytes"},
          "pose": {"type": "float32", "shape": [7]}, "score": {"type": "float64"}}


def rows_of(n):
    rng = np.random.default_rng(0)
    return [{"file_id": f"{i:016x}", "label": int(i * 7 % 13), "data": rng.bytes(int(rng.integers(0, 3000))),
             "pose": rng.standard_normal(7).astype(np.float32), "score": float(i) / 3} for i in range(n)]


@pytest.mark.parametrize("shards", [1, 3])
def test_rows_by_index_equal_mindspores_reader(tmp_path, shards):
    from mindspore.mindrecord import FileReader

    rows = rows_of(120)
    write_mindrecord(tmp_path / "x.mindrecord", rows, SCHEMA, shards=shards)
    reader = readers.MindRecordRows(tmp_path / "x.mindrecord")
    assert len(reader) == 120 and len(reader.files) == shards
    expected = []
    for f in reader.files:  # MindSpore's own reader, shard by shard, in stored order
        fr = FileReader(str(f))
        expected += list(fr.get_next())
        fr.close()
    copy = pickle.loads(pickle.dumps(reader))  # what a worker process receives
    for i in np.random.default_rng(1).permutation(120):
        got, want = copy[i], expected[i]
        assert got["data"] == want["data"] and got["file_id"] == want["file_id"]
        assert got["label"] == want["label"] and got["score"] == pytest.approx(float(want["score"]))
        np.testing.assert_array_equal(got["pose"], want["pose"])
    assert sorted(reader.column("label").tolist()) == sorted(r["label"] for r in rows)
    only = readers.MindRecordRows(tmp_path / "x.mindrecord", columns=["label"])
    assert set(only[5]) == {"label"}
    assert reader.where(119).endswith(f"x.mindrecord{shards - 1 if shards > 1 else ''} row {119 - reader.offsets[-2]}")


def test_truncated_and_missing_files_are_named(tmp_path):
    write_mindrecord(tmp_path / "x.mindrecord", rows_of(50), SCHEMA)
    reader = readers.MindRecordRows(tmp_path / "x.mindrecord")
    data = (tmp_path / "x.mindrecord").read_bytes()
    (tmp_path / "x.mindrecord").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"x.mindrecord row 49: file is truncated"):
        reader[49]
    with pytest.raises(DataError, match="not found"):
        readers.MindRecordRows(tmp_path / "nothing.mindrecord")
    with pytest.raises(DataError, match="no field 'nope'"):
        readers.MindRecordRows(tmp_path / "x.mindrecord", columns=["nope"])


def test_npz_members_are_memory_mapped_and_compressed_ones_refused(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(5, dtype=np.int64), f=np.asfortranarray(x[0]))
    arrays = pickle.loads(pickle.dumps(readers.NpzMembers(tmp_path / "a.npz")))
    assert set(arrays.names) == {"x", "y", "f"}
    assert isinstance(arrays["x"], np.memmap)
    np.testing.assert_array_equal(arrays["x"][1], x[1])
    np.testing.assert_array_equal(arrays["f"], x[0])
    np.save(tmp_path / "b.npy", x)
    np.testing.assert_array_equal(readers.open_npy(tmp_path / "b.npy")[1, 2], x[1, 2])
    np.savez_compressed(tmp_path / "c.npz", x=x)
    with pytest.raises(DataError, match=r"c.npz: array 'x' is compressed.*np.savez"):
        readers.NpzMembers(tmp_path / "c.npz")["x"]


def test_image_files_decode_to_rgb_and_name_bad_files(tmp_path):
    import cv2

    image = np.zeros((8, 10, 3), np.uint8)
    image[..., 2] = 255  # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "red.png"), image)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    files = readers.ImageFiles(["red.png", "bad.jpg", "gone.jpg"], root=tmp_path)
    assert files.decode(0).shape == (8, 10, 3) and files.decode(0)[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(DataError, match=r"bad.jpg: cannot be decoded as an image"):
        files.decode(1)
    with pytest.raises(DataError, match=r"gone.jpg: cannot be read"):
        files.decode(2)


class RowLoad:
    """A loader over MindRecord rows: the blob's bytes summed and the label, per row."""

    def __init__(self, path):
        self.rows = readers.MindRecordRows(path)

    def __call__(self, indices, seed):
        got = [self.rows[i] for i in indices]
        return (np.array([len(r["data"]) + sum(r["data"][:8]) for r in got]), np.array([r["label"] for r in got]))


RSS_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_pipeline_readers import RowLoad
from geocli.runtime.plan import IndexedSource

def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

if __name__ == "__main__":
    n = int(sys.argv[1])
    source = IndexedSource(n, 250, RowLoad({path!r}), seed=0, workers=0)
    steps = source.steps_per_epoch()
    peak, seen = 0, 0
    for step, (sizes, labels) in enumerate(source.epoch(0)):
        seen += len(labels)
        if step == steps // 10:
            early = anon_kb()
        peak = max(peak, anon_kb())
    print(seen, early, peak)
"""


def test_memory_does_not_grow_with_the_number_of_records(tmp_path):
    """Read every row of a 50,000-record MindRecord file and only 5,000 of them: the anonymous memory
    (what the loader holds; file pages are cache) stays flat within the epoch and between the two."""
    path = tmp_path / "big.mindrecord"
    blob = bytes(range(256)) * 2
    write_mindrecord(path, [{"file_id": f"{i:016x}", "label": i % 1000, "data": blob} for i in range(50_000)],
                     {"file_id": {"type": "string"}, "label": {"type": "int64"}, "data": {"type": "bytes"}},
                     index=["label"])
    script = tmp_path / "rss.py"
    script.write_text(RSS_SCRIPT.format(tests=str(Path(__file__).parent), path=str(path)))
    result = {}
    for n in (5_000, 50_000):
        out = subprocess.run([sys.executable, str(script), str(n)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        seen, early, peak = map(int, out.stdout.split())
        assert seen == n
        assert peak - early < 4096, (n, early, peak)  # kB: no growth while reading
        result[n] = peak
    assert result[50_000] - result[5_000] < 4096, result  # kB: ten times the records, same memory
