"""Recording what a worker's tasks produced: results, failures, self-created tasks.

Every outcome carries the attempt the worker claimed (from the
:class:`~rushpy.worker.tracking.TaskTracker`), so ``complete.lua`` records it
only while that attempt still runs on this worker: first writer wins, and a
late outcome (the task was cancelled, or re-queued after the worker was
declared lost) is discarded.

:class:`Results` also counts what it recorded (:class:`TaskCounts`, shipped
to the worker's hash by the log sink, shown by ``worker_info()``) and writes
one status line per failed task, so an operator sees every failure in the
worker's output and its log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rushpy.errors import TaskError
from rushpy.logs import status_logger
from rushpy.models import Condition
from rushpy.store import Store
from rushpy.validation import broadcast, check_keys, check_mappings
from rushpy.worker.tracking import TaskTracker

__all__ = ["TaskCounts", "Results"]

status = status_logger()

_MESSAGE_CHARS = 300
"""Characters of a failure's message shown in its status line."""

Item = tuple[str, int | None, Mapping[str, Any]]
"""``(key, attempt, fields)``: fields are ``ys``/``ys_extra`` or ``condition``."""


@dataclass(slots=True)
class TaskCounts:
    """What a worker recorded since it started.

    Attributes:
        finished: Results recorded.
        failed: Failures taken (recorded as final, or re-queued with attempts left).
        last_error: The latest failure taken, with when (UTC), or ``None``.

    """

    finished: int = 0
    failed: int = 0
    last_error: dict[str, Any] | None = None


class Results:
    """Writes the outcomes of one worker's tasks.

    Args:
        store: Store of the network.
        worker_id: Id of the worker.
        tracker: The attempts of the tasks the worker claimed.

    """

    def __init__(self, store: Store, worker_id: str, tracker: TaskTracker) -> None:
        self._store = store
        self._worker_id = worker_id
        self._tracker = tracker
        self.counts = TaskCounts()
        """Totals of what this worker recorded (read by the log sink)."""

    async def push_running(
        self,
        xss: Sequence[Mapping[str, Any]],
        xss_extra: Sequence[Mapping[str, Any] | None] | None,
    ) -> list[str]:
        """Create tasks that the worker runs itself; returns their keys."""
        xss = check_mappings(xss, "xss")
        extras = broadcast(xss, xss_extra, "xss_extra")
        tasks = [{"xs": xs, "xs_extra": extra} for xs, extra in zip(xss, extras, strict=True)]
        keys = await self._store.tasks.create_running(self._worker_id, tasks)
        for key in keys:
            self._tracker.claimed(key, 1)
        return keys

    async def finish(
        self,
        keys: Sequence[str],
        yss: Sequence[Mapping[str, Any]],
        yss_extra: Sequence[Mapping[str, Any] | None] | None,
    ) -> list[bool]:
        """Record results; per key whether it was recorded."""
        keys = check_keys(keys)
        results = broadcast(keys, check_mappings(yss, "yss"), "yss")
        extras = broadcast(keys, yss_extra, "yss_extra")
        items = [
            (k, self._tracker.attempt(k), {"ys": ys, "ys_extra": extra})
            for k, ys, extra in zip(keys, results, extras, strict=True)
        ]
        return [code != 0 for code in await self.complete("finished", items)]

    async def fail(
        self,
        keys: Sequence[str],
        conditions: Sequence[Condition | BaseException | Mapping[str, Any] | str],
    ) -> list[bool]:
        """Record failures (or re-queue tasks with attempts left); per key whether it was taken."""
        keys = check_keys(keys)
        items = []
        for i, (key, condition) in enumerate(
            zip(keys, broadcast(keys, conditions, "conditions"), strict=True)
        ):
            if condition is None:
                raise TaskError(f"conditions[{i}] is None: pass an exception, a message or a Condition")
            try:
                fields = {"condition": Condition.coerce(condition).to_dict()}
            except TypeError as exc:
                raise TaskError(str(exc)) from None
            items.append((key, self._tracker.attempt(key), fields))
        return [code != 0 for code in await self.complete("failed", items)]

    async def complete(self, state: Literal["finished", "failed"], items: Sequence[Item]) -> list[int]:
        """Write outcomes and stop tracking their tasks.

        Returns:
            Per item the code of ``complete.lua``: 1 recorded, 2 re-queued
            (a failure with attempts left), 0 discarded.

        """
        codes = await self._store.tasks.complete(self._worker_id, state, items)
        for key, _, _ in items:
            self._tracker.forget(key)
        taken = [(item, code) for item, code in zip(items, codes, strict=True) if code != 0]
        if state == "finished":
            self.counts.finished += len(taken)
            return codes
        self.counts.failed += len(taken)
        for (key, attempt, fields), code in taken:
            condition = fields.get("condition") or {}
            message = str(condition.get("message", "")).strip().splitlines()
            status.warning(
                "task failed" + (", re-queued (attempts left)" if code == 2 else ""),
                key=key,
                attempt=attempt,
                type=condition.get("type"),
                message=(message[0] if message else "")[:_MESSAGE_CHARS],
                worker_id=self._worker_id,
            )
        if taken:
            condition = dict(taken[-1][0][2].get("condition") or {})
            self.counts.last_error = {**condition, "at": dt.datetime.now(dt.UTC)}
        return codes
