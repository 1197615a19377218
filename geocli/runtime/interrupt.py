"""Ctrl-C during training: finish the current step, save, exit 130.

Once MindSpore has run a kernel it installs a SIGINT handler of its own that terminates the process
(exit status 143, measured with MindSpore 2.10), which would lose the final checkpoint. So the training
command blocks SIGINT in the main thread before MindSpore starts its threads (they inherit the mask),
and the loop polls for a pending SIGINT between steps (:func:`requested`), turning it into a
KeyboardInterrupt at a point where the state is consistent.

Threads that already exist when :func:`defer` runs keep SIGINT unblocked, and MindSpore re-installs its
handler during every step (measured with MindSpore 2.10: the handler in libmindspore_ms_backend is back
after each step), so a Ctrl-C that lands on such a thread mid-step kills the run. ``geoloc train`` defers
before NumPy or MindSpore is imported, when the process has one thread; a script that imports NumPy
first (OpenBLAS starts its threads at import) should call :func:`defer` before that import.
:func:`unguarded_threads` says how many threads were too early, and the trainer warns about them.
"""

from __future__ import annotations

import os
import signal
import threading

_deferred = False
_reclaimed = False
_flagged = False
_early_threads = 0


def _record(signum, frame) -> None:
    global _flagged
    _flagged = True


def defer() -> None:
    """Block SIGINT for this thread and threads created from now on (main thread only)."""
    global _deferred, _early_threads
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        _deferred = True
        _early_threads = _thread_count() - 1


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: nothing to count, nothing to warn about
        return 1


def unguarded_threads() -> int:
    """Threads that existed before :func:`defer` and so may receive Ctrl-C (0 under ``geoloc train``)."""
    return _early_threads if _deferred else 0


def reclaim() -> None:
    """Take SIGINT back from MindSpore's handler; the trainer calls it after every step (one
    ``sigaction``), because MindSpore installs its handler while steps run (measured: during the second
    step). Threads started before :func:`defer` (NumPy's BLAS pool, when a script imported NumPy first)
    do not block SIGINT, and a Ctrl-C delivered to one of them would run MindSpore's handler and kill the
    run (exit 143, no checkpoint); Python's handler, installed here, only records it."""
    global _reclaimed
    if _deferred and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _record)
        _reclaimed = True


def requested() -> bool:
    """True (once) if a SIGINT arrived while deferred; the signal is consumed."""
    global _flagged
    if not _deferred:
        return False
    if _flagged:
        _flagged = False
        return True
    if signal.SIGINT not in signal.sigpending():
        return False
    signal.sigtimedwait({signal.SIGINT}, 0)
    return True


def restore() -> None:
    global _deferred, _reclaimed, _flagged
    if _deferred:
        requested()  # drop a late Ctrl-C that arrived after the last step: training is over anyway
        if _reclaimed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _reclaimed = False
        _flagged = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        _deferred = False
