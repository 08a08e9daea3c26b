"""The one task every peer runs: double ``x``, after sleeping ``sleep`` seconds.

Sync peers run :func:`evaluate`, async-native peers :func:`aevaluate`; both give
``2 * x`` so that a driver can check every result it sees.
"""

from __future__ import annotations

import asyncio
import time


def evaluate(x: int, sleep: float = 0.0) -> int:
    """Return ``2 * x`` after ``sleep`` s (a blocking sleep, like a CPU-bound evaluation)."""
    if sleep:
        time.sleep(sleep)
    return 2 * x


async def aevaluate(x: int, sleep: float = 0.0) -> int:
    """Return ``2 * x`` after ``sleep`` s without blocking the event loop."""
    if sleep:
        await asyncio.sleep(sleep)
    return 2 * x


def rush_evaluate(x: int, sleep: float = 0.0) -> dict[str, int]:
    """:func:`evaluate` with rushpy's result shape (a mapping of outputs)."""
    return {"y": evaluate(x, sleep)}


async def rush_aevaluate(x: int, sleep: float = 0.0) -> dict[str, int]:
    """:func:`aevaluate` with rushpy's result shape: what rushpy runs, like the hand-written loop."""
    return {"y": await aevaluate(x, sleep)}
