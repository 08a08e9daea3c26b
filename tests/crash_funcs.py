"""Task functions that crash a worker or stall its event loop (importable by worker processes)."""

from __future__ import annotations

import ctypes
import ctypes.util


class WorkerBug(BaseException):
    """Not an ``Exception``: it escapes the task's error handling and ends the worker loop, as a bug would."""


def crash_on_negative(x: int) -> dict[str, int]:
    """Crash the whole worker loop for a negative ``x``; square it otherwise."""
    if x < 0:
        raise WorkerBug(f"bug triggered by x={x}")
    return {"y": x * x}


def hold_gil(seconds: int) -> dict[str, int]:
    """Sleep in one C call that keeps the GIL (``ctypes.PyDLL`` does not release it).

    Every thread of the process stops meanwhile, the worker's event loop included.
    """
    libc = ctypes.PyDLL(ctypes.util.find_library("c"))
    libc.sleep(seconds)
    return {"slept": seconds}
