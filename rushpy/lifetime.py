"""Tie a child process's life to its parent's (Linux ``PR_SET_PDEATHSIG``).

The embedded server and the child processes that run timed plain functions
must not outlive the process that started them, even when that process is
killed and cannot clean up.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
