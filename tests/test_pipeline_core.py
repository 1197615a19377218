"""The input pipeline without MindSpore: determinism, sharding, resume offsets, worker errors, orphans."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from geocli.data.pipeline import PoolSampler, WorkerPool, resolve_prefetch, resolve_workers
from geocli.errors import ConfigError, DataError
from geocli.runtime.plan import IndexedSource


class Load:
    """A picklable loader whose batches depend on the indices and on every draw of the seeded rng."""

    def __init__(self, fail_at=None, crash_at=None, bug_at=None):
        self.fail_at, self.crash_at, self.bug_at = fail_at, crash_at, bug_at

    def __call__(self, indices, seed):
        rng = np.random.default_rng(list(seed))
        indices = np.asarray(indices)
        if self.fail_at in indices:
            raise DataError(f"/data/gldv2.mindrecord3 row {self.fail_at}: cannot be decoded as an image")
        if self.crash_at in indices:
            os._exit(7)
        if self.bug_at in indices:
            return {}["missing"]
        noise = rng.random((len(indices), 4)).astype(np.float32)
        return indices[:, None] + noise, indices.copy()


def batches(source, epoch, start=0):
    out = list(source.epoch(epoch, start))
    source.close()
    return out


def same(a, b):
    return len(a) == len(b) and all(all(np.array_equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


def alive(pid: int) -> bool:
    """A process exists and is not a zombie (a container's init may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_batches_are_the_same_across_runs_worker_counts_and_resume_offsets():
    reference = batches(IndexedSource(90, 8, Load(), seed=5, workers=0), epoch=2)
    assert len(reference) == 90 // 8
    assert same(reference, batches(IndexedSource(90, 8, Load(), seed=5, workers=0), epoch=2))
    for workers in (1, 3):
        source = IndexedSource(90, 8, Load(), seed=5, workers=workers, prefetch=2)
        assert same(reference, batches(source, epoch=2)), workers
        assert same(reference[7:], batches(source, epoch=2, start=7)), workers  # resume skips, no decoding
    other = batches(IndexedSource(90, 8, Load(), seed=5, workers=0), epoch=3)
    assert not np.array_equal(reference[0][1], other[0][1])  # a new epoch draws a new order


def test_an_abandoned_epoch_does_not_leak_batches_into_the_next():
    source = IndexedSource(64, 4, Load(), seed=1, workers=2, prefetch=6)
    it = source.epoch(0)
    next(it)
    it.close()  # six batches were in flight
    assert same(batches(IndexedSource(64, 4, Load(), seed=1), epoch=1), batches(source, epoch=1))


def test_two_ranks_take_disjoint_halves_of_each_global_batch():
    single = batches(IndexedSource(100, 16, Load(), seed=9), epoch=0)
    rank0 = batches(IndexedSource(100, 8, Load(), seed=9, rank=0, group_size=2, workers=1), epoch=0)
    rank1 = batches(IndexedSource(100, 8, Load(), seed=9, rank=1, group_size=2), epoch=0)
    assert len(single) == len(rank0) == len(rank1) == 100 // 16
    for whole, a, b in zip(single, rank0, rank1):
        assert not set(a[1]) & set(b[1])
        np.testing.assert_array_equal(np.concatenate([a[1], b[1]]), whole[1])


def test_a_data_error_in_a_worker_is_raised_as_is():
    source = IndexedSource(40, 4, Load(fail_at=17), seed=0, workers=2, shuffle=False)
    with pytest.raises(DataError, match=r"^/data/gldv2.mindrecord3 row 17: cannot be decoded as an image$"):
        batches(source, epoch=0)


def test_another_exception_names_its_type_and_the_batch():
    source = IndexedSource(40, 4, Load(bug_at=9), seed=0, workers=1, shuffle=False)
    with pytest.raises(DataError, match=r"epoch 0 step 2, items 8, 9, 10, 11\): KeyError: 'missing' at test_pipeline_core.py"):
        batches(source, epoch=0)


def test_a_crashed_worker_is_an_error_not_a_hang():
    source = IndexedSource(40, 4, Load(crash_at=20), seed=0, workers=2, shuffle=False)
    started = time.time()
    with pytest.raises(DataError, match=r"data worker geoloc-data-\d \(pid \d+\) exited with code 7"):
        batches(source, epoch=0)
    assert time.time() - started < 20


def test_an_unpicklable_loader_with_workers_is_a_config_error():
    source = IndexedSource(40, 4, lambda idx, seed: (idx,), workers=1)
    with pytest.raises(ConfigError, match="picklable"):
        next(source.epoch(0))


def test_worker_counts_and_prefetch_are_validated():
    assert resolve_workers(0) == 0 and resolve_workers("3") == 3 and resolve_workers(2) == 2
    assert resolve_workers("auto") >= 1 and resolve_workers(None) >= 1 and resolve_workers(-1) >= 1
    for bad in ("many", -2, 1.5):
        with pytest.raises(ConfigError, match="data.workers"):
            resolve_workers(bad)
    assert resolve_prefetch("4") == 4
    with pytest.raises(ConfigError, match="data.prefetch"):
        resolve_prefetch(0)


class Mined(PoolSampler):
    """Items ordered hardest first by a pool the epoch hook computes."""

    def order(self, rng, hardness):
        return np.argsort(-hardness + 1e-3 * rng.random(len(hardness)))


def test_a_pool_sampler_round_trips_its_state():
    sampler = Mined()
    assert sampler.needs_refresh(0)
    sampler.refresh(3, hardness=np.arange(20.0))
    restored = Mined()
    restored.load_state_dict(sampler.state_dict())
    assert not restored.needs_refresh(3) and restored.needs_refresh(4)
    a = IndexedSource(20, 4, Load(), sampler=sampler)
    b = IndexedSource(20, 4, Load(), sampler=restored)
    assert same(batches(a, 3), batches(b, 3))


ORPHAN_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_pipeline_core import Load
from geocli.runtime.plan import IndexedSource
if __name__ == "__main__":
    source = IndexedSource(1000, 4, Load(), workers=2, prefetch=2)
    it = source.epoch(0)
    next(it)
    print(" ".join(map(str, source._pool.pids)), flush=True)
    time.sleep(120)
"""


def test_workers_die_with_a_killed_parent(tmp_path):
    script = tmp_path / "orphans.py"
    script.write_text(ORPHAN_SCRIPT.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and all(alive(p) for p in pids), proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


def test_close_stops_every_worker():
    pool = WorkerPool(Load(), 2)
    assert list(pool.map([(np.arange(3), (0, 0, 0, 0))], ahead=1))
    pids = pool.pids
    pool.close()
    assert pool.closed and not any(alive(p) for p in pids)
