"""A worker's task methods: pop, create running tasks, record results and failures.

A stateless, hook-free mixin of :class:`~rushpy.worker.core.Worker` (as the
controller's public methods are grouped in mixins): each method checks its
arguments and forwards to the worker's components.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rushpy.deadline import call_deadline
from rushpy.models import Condition, PoppedTask
from rushpy.validation import check_count, check_timeout
from rushpy.worker.claims import Claims
from rushpy.worker.results import Results

__all__ = ["TaskMethods"]


class TaskMethods:
    """Task methods of a worker; the owner sets the attributes annotated below."""

    _claims: Claims
    _results: Results

    # -- popping ------------------------------------------------------------------------
    async def pop_task(self, timeout: float | None = 0) -> PoppedTask | None:
        """Pop one task, waiting up to ``timeout`` seconds (``None``: until one comes).

        Returns:
            The task, already marked running on this worker, or ``None``.

        """
        tasks = await self.pop_tasks(1, timeout=timeout)
        return tasks[0] if tasks else None

    async def pop_tasks(self, n: int, timeout: float | None = 0) -> list[PoppedTask]:
        """Pop up to ``n`` tasks at once (one round trip when tasks are waiting).

        Waits up to ``timeout`` seconds (``None``: no limit) for the first one;
        returns early (empty) when the worker is terminated.

        Raises:
            ConfigError: ``n`` is not an integer >= 1, or ``timeout`` not >= 0.

        """
        check_count(n, "n", minimum=1, hint="pop at least 1 task")
        check_timeout(timeout, allow_none=True)
        with call_deadline(timeout):  # a hung server cannot hold the pop past its timeout
            return await self._claims.pop(n, timeout)

    # -- writing ------------------------------------------------------------------------
    async def push_running_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Create tasks that this worker runs itself (decentralized mode); returns keys.

        A list of one ``xss_extra`` applies to every task.
        """
        return await self._results.push_running(xss, xss_extra)

    async def finish_tasks(
        self,
        keys: Sequence[str],
        yss: Sequence[Mapping[str, Any]],
        yss_extra: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[bool]:
        """Record results of running tasks; a list of one ``ys`` (or extra) applies to every key.

        Returns:
            Per key whether the result was recorded; ``False`` when this worker no
            longer runs that attempt of the task (it was cancelled, re-queued after
            the worker was declared lost, or recorded already): first writer wins.

        """
        return await self._results.finish(keys, yss, yss_extra)

    async def fail_tasks(
        self,
        keys: Sequence[str],
        conditions: Sequence[Condition | BaseException | Mapping[str, Any] | str],
    ) -> list[bool]:
        """Record failures of running tasks; a condition may be an exception or a message.

        A list of one condition applies to every key. A task with attempts left
        (``max_retries``) goes back to the queue instead of failing; its
        condition joins the task's ``conditions`` history either way.

        Returns:
            Per key whether the failure was taken (recorded or re-queued); ``False``
            as for :meth:`finish_tasks`.

        """
        return await self._results.fail(keys, conditions)
