"""Retrying Redis operations of a worker loop while the server is unreachable.

Connection loss does not end a worker loop: pops and writes are retried with
exponential backoff, and a warning is logged when Redis becomes unreachable
and again when it is back.
"""

from __future__ import annotations

import anyio

from rushpy.errors import ConnectionFailedError
from rushpy.logs import get_logger

__all__ = ["FIRST_BACKOFF", "MAX_BACKOFF", "TRANSIENT_ERRORS", "Backoff"]

log = get_logger("rushpy.worker")

FIRST_BACKOFF = 0.05
"""Seconds before the first retry; each further failure doubles the wait."""
MAX_BACKOFF = 2.0
"""Longest wait (seconds) between two attempts to reach Redis again."""
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailedError, OSError)
"""Errors that mean "Redis is unreachable for now": retried with backoff, never fatal.

The client raises every connection problem as :class:`~rushpy.errors.ConnectionFailedError`
(once its reconnect budget is spent); ``OSError`` covers socket errors of the
listener's own connection.
"""


class Backoff:
    """Exponential backoff between attempts to reach Redis, with logging.

    Args:
        what: What is being retried, for log records ("popping tasks").

    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay = FIRST_BACKOFF
        self.failing = False

    async def failed(self, exc: BaseException) -> None:
        """Log the failure and sleep before the next attempt."""
        log.warning(
            f"{self.what} failed: Redis unreachable; retrying",
            error=f"{type(exc).__name__}: {exc}",
            retry_in=round(self.delay, 3),
        )
        self.failing = True
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, MAX_BACKOFF)

    def succeeded(self) -> None:
        """Reset the delay; log the recovery if attempts had failed."""
        if self.failing:
            log.warning(f"{self.what}: connection to Redis restored")
        self.failing = False
        self.delay = FIRST_BACKOFF
