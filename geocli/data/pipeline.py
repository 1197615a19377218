"""Decode batches in worker processes, a bounded number ahead of the training step.

Why a process pool of our own rather than MindSpore's dataset engine (figures in
docs/input-pipeline.md): the trainer's guarantees are that a batch is a pure function of
``(seed, epoch, step, rank)`` and that ``--resume`` starts at any step without decoding the batches
before it. Here the main process computes every batch's item indices and seed and only the decoding is
farmed out, so both hold by construction for any number of workers; the workers import no MindSpore.

Design, each point for a reason:

* ``spawn`` start method: the training process has MindSpore's thread pools running, and ``fork`` of a
  multi-threaded process can deadlock a child on a lock some other thread held. Spawned workers start
  clean (about a second each, once per run).
* One duplex pipe per worker and round-robin dispatch: results come back in submission order without a
  reorder buffer, and a dead worker is noticed at once through its process sentinel (no hang).
* Batches travel as pickle protocol 5 with out-of-band buffers: the array bytes go through the pipe
  once, without an extra copy into a pickle string.
* Workers ignore SIGINT (the main process decides what Ctrl-C means and stops them), die with their
  parent even after ``kill -9`` (Linux ``PR_SET_PDEATHSIG``, plus a parent-pid check), and are stopped
  by :meth:`WorkerPool.close`, by garbage collection, and at interpreter exit.
* A worker that raises sends back one line: a :class:`~geocli.errors.DataError` as it is (the readers
  name the file and row), anything else with its type and the batch it was building.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import pickle
import signal
import sys
import traceback
import weakref
from multiprocessing.connection import wait as wait_any
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from geocli.errors import ConfigError, DataError

Batch = Tuple[np.ndarray, ...]
Task = Tuple[np.ndarray, Tuple[int, ...]]  # (item indices, seed)
_POLL_SECONDS = 1.0


# ---- how many workers ------------------------------------------------------------------------------

def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def step_threads() -> int:
    """Cores the training step keeps busy: MindSpore's CPU thread count when it runs on the CPU, one
    host thread when an accelerator computes."""
    ms = sys.modules.get("mindspore")
    device = "cpu"
    if ms is not None:
        try:
            device = str(ms.get_context("device_target")).lower()
        except Exception:
            device = "cpu"
    if device != "cpu":
        return 1
    from geocli.runtime import context

    return context.configured_threads() or usable_cores()


def resolve_workers(value: Any, group_size: int = 1) -> int:
    """``data.workers`` -> a process count. ``auto`` / ``None`` / ``-1``: the cores this rank's step
    leaves free (ranks on one machine share its cores), at least 1; ``0``: decode in-process."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", ""):
            value = None
        else:
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"data.workers {value!r}: give a number of processes, 0 (in-process) or auto") from None
    if value is None or value == -1:
        per_rank = max(usable_cores() // max(group_size, 1), 1)
        return max(per_rank - step_threads(), 1)
    if not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"data.workers {value!r}: give a number of processes, 0 (in-process) or auto")
    return int(value)


def resolve_prefetch(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"data.prefetch {value!r}: give a number of batches (>= 1)") from None
    if n < 1:
        raise ConfigError(f"data.prefetch {value!r}: give a number of batches (>= 1)")
    return n


# ---- the worker process ----------------------------------------------------------------------------

def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans even after kill -9)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass  # other systems: the parent-pid check in the loop below still ends the worker
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _describe(exc: BaseException, indices, seed) -> str:
    if isinstance(exc, DataError):
        return str(exc)
    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        frame = tb[-1]
        where = f" at {os.path.basename(frame.filename)}:{frame.lineno}"
    items = ", ".join(str(int(i)) for i in list(indices)[:4]) + (", ..." if len(indices) > 4 else "")
    epoch_step = f"epoch {seed[1]} step {seed[2]}, " if isinstance(seed, tuple) and len(seed) >= 3 else ""
    return (f"data worker failed building a batch ({epoch_step}items {items}): "
            f"{type(exc).__name__}: {exc}{where}")


def _send_batch(conn, task_id: int, batch) -> None:
    buffers: List[pickle.PickleBuffer] = []
    head = pickle.dumps((task_id, "ok", batch), protocol=5, buffer_callback=buffers.append)
    conn.send_bytes(pickle.dumps((head, len(buffers))))
    for buf in buffers:
        conn.send_bytes(buf.raw())


def _recv_batch(conn):
    head, n = pickle.loads(conn.recv_bytes())
    buffers = [conn.recv_bytes() for _ in range(n)]
    return pickle.loads(head, buffers=buffers)


def _worker_main(load: Callable[..., Batch], conn, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    _die_with_parent(parent)
    while True:
        if not conn.poll(_POLL_SECONDS):
            if os.getppid() != parent:
                return
            continue
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task_id, indices, seed = message
        try:
            batch = load(indices, seed=seed)
            if not isinstance(batch, tuple):
                batch = tuple(batch)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
            try:
                conn.send_bytes(pickle.dumps((pickle.dumps((task_id, "error", _describe(exc, indices, seed))), 0)))
            except (OSError, BrokenPipeError):
                return
            continue
        try:
            _send_batch(conn, task_id, batch)
        except (OSError, BrokenPipeError):
            return


# ---- the pool --------------------------------------------------------------------------------------

def _shutdown(procs: List[Any], conns: List[Any]) -> None:
    """Stop workers: ask politely, then SIGTERM, then SIGKILL; always reap them."""
    for conn in conns:
        try:
            conn.send(None)
        except Exception:
            pass
    for proc in procs:
        proc.join(timeout=1.0)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=2.0)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2.0)
    for conn in conns:
        try:
            conn.close()
        except Exception:
            pass


class WorkerPool:
    """``workers`` processes running ``load(indices, seed=seed)``; results in submission order."""

    def __init__(self, load: Callable[..., Batch], workers: int, *, start_method: str = "spawn"):
        if workers < 1:
            raise ValueError("a WorkerPool needs at least one worker")
        try:
            pickle.dumps(load)
        except Exception as exc:
            raise ConfigError(f"data.workers={workers} needs a picklable load function "
                              f"(a module-level class instance), not {load!r} ({exc}); use data.workers=0") from None
        context = mp.get_context(start_method)
        self.procs, self.conns = [], []
        # Starting a spawn process starts multiprocessing's resource tracker, which UNBLOCKS SIGINT in
        # this thread afterwards; the trainer keeps SIGINT blocked (geocli.runtime.interrupt) so that
        # Ctrl-C ends a step cleanly instead of MindSpore's handler killing the process: restore the mask.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, []) if hasattr(signal, "pthread_sigmask") else None
        try:
            for i in range(workers):
                mine, theirs = context.Pipe(duplex=True)
                proc = context.Process(target=_worker_main, args=(load, theirs, os.getpid()),
                                       name=f"geoloc-data-{i}", daemon=True)
                proc.start()
                theirs.close()
                self.procs.append(proc)
                self.conns.append(mine)
        except BaseException:
            _shutdown(self.procs, self.conns)
            raise
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._pending: Deque[Tuple[int, int]] = collections.deque()  # (worker, task id) in flight
        self._next_id = 0
        self._turn = 0
        self._finalizer = weakref.finalize(self, _shutdown, self.procs, self.conns)

    @property
    def pids(self) -> List[int]:
        return [p.pid for p in self.procs]

    def __len__(self) -> int:
        return len(self.procs)

    def close(self) -> None:
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _submit(self, task: Task) -> None:
        worker = self._turn % len(self.procs)
        self._turn += 1
        indices, seed = task
        self.conns[worker].send((self._next_id, np.asarray(indices), seed))
        self._pending.append((worker, self._next_id))
        self._next_id += 1

    def _receive(self) -> Batch:
        worker, task_id = self._pending.popleft()
        conn, proc = self.conns[worker], self.procs[worker]
        while True:
            ready = wait_any([conn, proc.sentinel], timeout=_POLL_SECONDS)
            if conn in ready:
                try:
                    got_id, status, payload = _recv_batch(conn)
                except (EOFError, OSError):
                    got_id, status, payload = task_id, "dead", None
                break
            if proc.sentinel in ready or not proc.is_alive():
                got_id, status, payload = task_id, "dead", None
                break
        if status == "dead":
            proc.join(timeout=1.0)
            self.close()
            raise DataError(f"data worker {proc.name} (pid {proc.pid}) exited with code {proc.exitcode} while "
                            "building a batch (out of memory? a crash in a decoder? a script calling geocli "
                            "without `if __name__ == '__main__':`?); "
                            "run with --set data.workers=0 to see the error in-process")
        if got_id != task_id:  # cannot happen with FIFO pipes; guard against silent reordering
            self.close()
            raise RuntimeError(f"data worker {proc.name} answered task {got_id}, expected {task_id}")
        if status == "error":
            self._drain()
            raise DataError(payload)
        return payload

    def _drain(self) -> None:
        """Discard results of tasks submitted for an iteration that was abandoned (or failed)."""
        while self._pending:
            try:
                self._receive()
            except DataError:
                if self.closed:
                    return

    def map(self, tasks: Iterable[Task], ahead: int) -> Iterator[Batch]:
        """Batches of ``tasks`` in order, keeping up to ``ahead`` (at least one per worker) in flight."""
        if self.closed:
            raise RuntimeError("the data worker pool is closed")
        self._drain()
        ahead = max(ahead, len(self.procs))
        tasks = iter(tasks)
        exhausted = False
        while True:
            while not exhausted and len(self._pending) < ahead:
                try:
                    self._submit(next(tasks))
                except StopIteration:
                    exhausted = True
            if not self._pending:
                return
            yield self._receive()


# ---- samplers with state ---------------------------------------------------------------------------

class PoolSampler:
    """A sampler whose pool an epoch hook rebuilds (VIGOR's hard-negative mining), resumable.

    Subclasses implement :meth:`order` ``(rng, **pool) -> np.ndarray`` (the epoch's item order, same
    length every epoch). The epoch hook calls ``if sampler.needs_refresh(epoch): sampler.refresh(epoch,
    name=array, ...)``. The trainer saves :meth:`state_dict` in every checkpoint and restores it on
    ``--resume``, so a run resumed mid-epoch keeps the pool that epoch was mined with (the network it was
    mined from is gone) and the hook, seeing ``needs_refresh`` False, does not mine again.
    """

    def __init__(self, length: Optional[int] = None):
        self.length = length  # items per epoch: the trainer needs it before the first hook has run
        self.pool_epoch = -1
        self.pool: Dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        if self.length is not None:
            return int(self.length)
        if self.pool_epoch >= 0:
            return len(self(np.random.default_rng(0)))
        raise ConfigError(f"{type(self).__name__}: give the epoch length (PoolSampler.__init__(length=...)); "
                          "the trainer needs it before the first epoch hook fills the pool")

    def needs_refresh(self, epoch: int) -> bool:
        return self.pool_epoch != epoch

    def refresh(self, epoch: int, **arrays: Any) -> None:
        self.pool = {k: np.asarray(v) for k, v in arrays.items()}
        self.pool_epoch = int(epoch)

    def order(self, rng: np.random.Generator, **pool: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.order(rng, **self.pool))

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {"pool_epoch": np.array([self.pool_epoch], np.int64), **{f"pool.{k}": v for k, v in self.pool.items()}}

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        self.pool_epoch = int(np.asarray(state["pool_epoch"]).reshape(-1)[0])
        self.pool = {k[len("pool."):]: np.asarray(v) for k, v in state.items() if k.startswith("pool.")}


__all__: Sequence[str] = ("WorkerPool", "PoolSampler", "resolve_workers", "resolve_prefetch", "usable_cores")
