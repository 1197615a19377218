"""HDF5 feature store: escaping, incremental writes, identity attributes, surviving a kill."""

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from geocli.errors import DataError
from geocli.retrieval.store import FeatureStore, escape_name, unescape_name

AWKWARD_NAMES = ["oxford/all_souls_000013.jpg", "100%/a b.png", ".hidden", ".", "..", "é/ü", "a%2Fb"]


def test_escape_is_reversible_and_hdf5_safe():
    keys = [escape_name(n) for n in AWKWARD_NAMES]
    assert all("/" not in k and not k.startswith(".") for k in keys)
    assert len(set(keys)) == len(keys)
    assert [unescape_name(k) for k in keys] == AWKWARD_NAMES
    with pytest.raises(ValueError):
        escape_name("")


def test_write_read_roundtrip_and_skip_existing(tmp_path):
    path = tmp_path / "feats" / "db.h5"
    with FeatureStore(path, attrs={"model": "delf", "preset": "gldv2", "checkpoint": "abc"}) as store:
        for i, name in enumerate(AWKWARD_NAMES):
            assert store.write(name, {"global": np.full(3, i, np.float32), "scores": np.arange(i)})
        assert not store.write(AWKWARD_NAMES[0], {"global": np.zeros(3)})  # skipped
        assert store.read(AWKWARD_NAMES[0])["global"].tolist() == [0, 0, 0]
        assert store.write(AWKWARD_NAMES[0], {"global": np.ones(3)}, overwrite=True)
    with FeatureStore(path, mode="r") as store:
        assert sorted(store.names()) == sorted(AWKWARD_NAMES) and len(store) == len(AWKWARD_NAMES)
        assert "oxford/all_souls_000013.jpg" in store and "oxford" not in store
        assert store.read("oxford/all_souls_000013.jpg")["global"].tolist() == [1, 1, 1]
        assert store.attrs == {"model": "delf", "preset": "gldv2", "checkpoint": "abc"}
        names, matrix = store.stack_global("global", names=["é/ü", ".hidden"])
        assert names == ["é/ü", ".hidden"] and matrix.dtype == np.float32
        assert matrix[:, 0].tolist() == [5, 2]
        with pytest.raises(DataError, match="no features for image 'missing'"):
            store.read("missing")
        with pytest.raises(DataError, match="has no local"):
            store.read(".", ["local"])


def test_identity_attributes_must_match_when_appending(tmp_path):
    path = tmp_path / "db.h5"
    with FeatureStore(path, attrs={"model": "delf", "checkpoint": "ckpt-1"}) as store:
        store.write("a", {"global": np.zeros(2)})
    with FeatureStore(path, attrs={"model": "delf", "checkpoint": "ckpt-1"}) as store:
        assert store.names() == ["a"]
    with pytest.raises(DataError, match="checkpoint 'ckpt-1', not 'ckpt-2'"):
        FeatureStore(path, attrs={"checkpoint": "ckpt-2"})
    with FeatureStore(path, mode="w", attrs={"checkpoint": "ckpt-2"}) as store:  # start afresh
        assert store.names() == []


def test_stack_global_rejects_mixed_sizes_and_missing_files(tmp_path):
    with FeatureStore(tmp_path / "db.h5") as store:
        store.write("a", {"global": np.zeros(4)})
        store.write("b", {"global": np.zeros(5)})
        with pytest.raises(DataError, match="'b' has 5 values"):
            store.stack_global()
    with pytest.raises(DataError, match="not found"):
        FeatureStore(tmp_path / "none.h5", mode="r")


def test_leftover_partial_group_is_discarded(tmp_path):
    path = tmp_path / "db.h5"
    with FeatureStore(path) as store:
        store.write("done", {"global": np.zeros(2)})
    with h5py.File(path, "a") as f:  # what a kill in the middle of write() leaves behind
        f.create_group(".partial/half").create_dataset("global", data=np.zeros(1))
    with FeatureStore(path) as store:
        assert store.names() == ["done"] and len(store) == 1
        assert store.write("half", {"global": np.ones(2)})


def test_killed_writer_keeps_the_images_it_flushed(tmp_path):
    path = tmp_path / "db.h5"
    child = textwrap.dedent(f"""
        import sys, time, numpy as np
        from geocli.retrieval.store import FeatureStore
        store = FeatureStore({str(path)!r}, attrs={{"model": "delf"}})
        for i in range(5):
            store.write(f"img/{{i}}", {{"global": np.full(8, i, np.float32)}})
        print("written", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with FeatureStore(path) as store:  # append mode: a re-run picks up where the kill stopped
        assert sorted(store.names()) == [f"img/{i}" for i in range(5)]
        assert store.read("img/4")["global"].tolist() == [4.0] * 8
        assert not store.write("img/0", {"global": np.zeros(8)})
