"""Retrying Redis operations of a worker loop while the server is unreachable or full.

Neither a lost connection nor a full server (``maxmemory`` reached) ends a
worker loop: pops and writes are retried with exponential backoff, and a
warning says why when the trouble starts and again when it is over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from rushpy.errors import ConnectionFailedError, ServerFullError
from rushpy.logs import get_logger

__all__ = ["FIRST_BACKOFF", "MAX_BACKOFF", "TRANSIENT_ERRORS", "Backoff", "retrying"]

log = get_logger("rushpy.worker")

T = TypeVar("T")

FIRST_BACKOFF = 0.05
"""Seconds before the first retry; each further failure doubles the wait."""
MAX_BACKOFF = 2.0
"""Longest wait (seconds) between two attempts to reach Redis again."""
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailedError, ServerFullError, OSError)
"""Errors that pass by themselves: retried with backoff, never fatal.

The client raises every connection problem as :class:`~rushpy.errors.ConnectionFailedError`
(once its reconnect budget is spent), and an ``OOM`` reply as
:class:`~rushpy.errors.ServerFullError` (nothing of the refused command was
written, so trying again later is safe); ``OSError`` covers socket errors of
the listener's own connection.
"""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ServerFullError):
        return "the server is out of memory (maxmemory reached); waiting for memory to be freed"
    return "Redis unreachable"


class Backoff:
    """Exponential backoff between attempts to reach Redis, with logging.

    The first failure of a run of failures is logged as a warning that says
    why (unreachable, or out of memory), later ones at debug level, and the
    recovery as a warning again: a long outage does not flood the log.

    Args:
        what: What is being retried, for log records ("popping tasks").

    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay = FIRST_BACKOFF
        self.failing = False

    async def failed(self, exc: BaseException) -> None:
        """Log the failure and sleep before the next attempt."""
        emit = log.debug if self.failing else log.warning
        emit(
            f"{self.what} failed: {_reason(exc)}; retrying",
            error=f"{type(exc).__name__}: {exc}",
            retry_in=round(self.delay, 3),
        )
        self.failing = True
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, MAX_BACKOFF)

    def succeeded(self) -> None:
        """Reset the delay; log the recovery if attempts had failed."""
        if self.failing:
            log.warning(f"{self.what}: Redis answers again")
        self.failing = False
        self.delay = FIRST_BACKOFF


async def retrying(
    what: str,
    operation: Callable[[], Awaitable[T]],
    errors: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
) -> T:
    """Run ``operation`` until it succeeds, retrying ``errors`` with :class:`Backoff`.

    Args:
        what: What is being retried, for log records ("registering").
        operation: Called anew for every attempt.
        errors: The errors worth waiting out; any other propagates at once.

    Returns:
        What the successful attempt returned.

    """
    backoff = Backoff(what)
    while True:
        try:
            result = await operation()
        except errors as exc:
            await backoff.failed(exc)
            continue
        backoff.succeeded()
        return result
