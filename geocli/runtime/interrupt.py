"""Ctrl-C during training: finish the current step, save, exit 130.

Once MindSpore has run a kernel it installs a SIGINT handler of its own that terminates the process
(exit status 143, measured with MindSpore 2.10), which would lose the final checkpoint. So the training
command blocks SIGINT in the main thread before MindSpore starts its threads (they inherit the mask),
and the loop polls for a pending SIGINT between steps (:func:`requested`), turning it into a
KeyboardInterrupt at a point where the state is consistent.
"""

from __future__ import annotations

import signal
import threading

_deferred = False


def defer() -> None:
    """Block SIGINT for this thread and threads created from now on (main thread only)."""
    global _deferred
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        _deferred = True


def requested() -> bool:
    """True (once) if a SIGINT arrived while deferred; the signal is consumed."""
    if not _deferred or signal.SIGINT not in signal.sigpending():
        return False
    signal.sigtimedwait({signal.SIGINT}, 0)
    return True


def restore() -> None:
    global _deferred
    if _deferred:
        requested()  # drop a late Ctrl-C that arrived after the last step: training is over anyway
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        _deferred = False
