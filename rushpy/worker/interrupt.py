"""Interrupt a plain function running in a worker thread when its task is cancelled.

Python cannot stop a thread from outside, but it can schedule an exception in
it (``PyThreadState_SetAsyncExc``): the thread raises :class:`TaskInterrupted`
at its next bytecode. Pure-Python code stops at once; a call blocked in C (a
``time.sleep``, a long numpy operation) stops when that call returns. Plain
functions that must stop at a hard deadline run in a child process instead
(tasks with a timeout, see :mod:`rushpy.worker.child`).

The exception must never hit the wrong task: :class:`ThreadInterrupter` records
which task each thread runs under a lock, and a thread leaving a task clears
any exception scheduled for it but not yet raised, under the same lock.
"""

from __future__ import annotations

import ctypes
import threading

__all__ = ["TaskInterrupted", "ThreadInterrupter"]

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


class TaskInterrupted(BaseException):
    """Raised inside a task's thread when the task is cancelled.

    A ``BaseException``, so a function's ``except Exception`` does not swallow it.
    """


class ThreadInterrupter:
    """Knows which task each worker thread runs, and interrupts one on request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, str] = {}

    def begin(self, key: str) -> None:
        """Called in the thread before it runs task ``key``."""
        with self._lock:
            self._running[threading.get_ident()] = key

    def end(self) -> None:
        """Called in the thread after the task; cancels a pending interruption.

        An interruption may be raised while this runs; it is caught and the
        clean-up repeated, so the thread leaves with nothing pending.
        """
        ident = threading.get_ident()
        while True:
            try:
                with self._lock:
                    self._running.pop(ident, None)
                    _clear(ident)
                return
            except TaskInterrupted:
                continue

    def interrupt(self, key: str) -> bool:
        """Raise :class:`TaskInterrupted` in the thread running ``key``; ``False`` if none does."""
        with self._lock:
            for ident, running in self._running.items():
                if running == key:
                    _set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(TaskInterrupted))
                    return True
        return False


def _clear(ident: int) -> None:
    # A NULL exception (None) clears whatever is pending for the thread.
    _set_async_exc(ctypes.c_ulong(ident), None)
