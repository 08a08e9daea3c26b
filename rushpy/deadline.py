"""Deadlines of timed calls: a hung server cannot hold a method past its timeout.

A public method with a timeout (``wait_for_tasks(timeout=2)``, a worker's
``pop_task(timeout=1)``) runs its work inside :func:`call_deadline`; the
client (:mod:`rushpy.connection`) runs every command through :func:`bounded`,
which cuts a command off once it is left unanswered
``min(socket_timeout, DEADLINE_GRACE)`` seconds past that deadline and raises
:class:`~rushpy.errors.ConnectionFailedError`. A context variable carries the
deadline, so the layers between the method and the client need not pass it on.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import anyio

from rushpy.config import RedisConfig
from rushpy.errors import ConnectionFailedError

__all__ = ["DEADLINE_GRACE", "bounded", "call_deadline"]

T = TypeVar("T")

DEADLINE_GRACE = 5.0
"""Seconds (at most ``socket_timeout``) a command may outlast the deadline of the timed call that sent it.

A method with a timeout (``wait_for_tasks(timeout=2)``, ``pop_task(timeout=1)``)
runs under :func:`call_deadline`: against a hung server it raises
:class:`~rushpy.errors.ConnectionFailedError` at most its timeout plus
``min(socket_timeout, DEADLINE_GRACE)`` seconds after it was called.
"""

# (task, deadline on the monotonic clock, the call's timeout) of the timed call
# running in a task; see call_deadline.
_DEADLINE: ContextVar[tuple[asyncio.Task[Any] | None, float, float] | None] = ContextVar(
    "rushpy_call_deadline", default=None
)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: nothing to bound
        return None


@contextmanager
def call_deadline(timeout: float | None) -> Iterator[None]:
    """Bound the Redis commands this task sends inside the block by ``timeout`` seconds from now.

    Public methods with a timeout wrap their work in it, so that a hung server
    (a stopped process, a silent network partition) cannot hold them past their
    timeout: a command still unanswered ``min(socket_timeout, DEADLINE_GRACE)``
    seconds after the deadline raises :class:`ConnectionFailedError`. Only a
    command that gets no answer that long is cut: a healthy server's answers
    are never lost, and commands sent after the deadline (the last read of a
    wait) still get the grace.

    Only the task that entered the block is bounded, not tasks it starts (a
    worker's blocking moves outlive the pop that armed them). ``None`` adds no
    bound; nested blocks keep the earlier deadline.
    """
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or timeout < 0
    ):
        # No timeout, or an invalid one that the method itself refuses with a ConfigError.
        yield
        return
    task = _current_task()
    outer = _DEADLINE.get()
    deadline = time.monotonic() + timeout
    if outer is not None and outer[0] is task and outer[1] <= deadline:
        yield
        return
    token = _DEADLINE.set((task, deadline, float(timeout)))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


async def bounded(config: RedisConfig, command: object, run: Callable[[], Awaitable[T]]) -> T:
    """Await ``run()`` (one command), cut off under the deadline of :func:`call_deadline`.

    Args:
        config: Settings of the server (its socket timeout caps the grace; named in messages).
        command: The command's name, for the message.
        run: Sends the command and reads its answer.

    Raises:
        ConnectionFailedError: no answer within the grace after the deadline.

    """
    current = _DEADLINE.get()
    if current is None or current[0] is not _current_task():
        return await run()
    _, deadline, timeout = current
    grace = min(config.socket_timeout, DEADLINE_GRACE)
    with anyio.move_on_after(max(deadline - time.monotonic(), 0.0) + grace):
        return await run()
    name = command.decode() if isinstance(command, bytes) else str(command)
    raise ConnectionFailedError(
        f"the server at {config} did not answer {name} within the call's timeout of {timeout:g} s "
        f"(plus {grace:g} s of grace); it may be hung (a stopped process, a network partition) "
        "or overloaded: check the server, or call with a longer timeout"
    )
