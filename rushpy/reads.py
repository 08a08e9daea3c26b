"""Every read of a network's tasks and workers, as one component.

:class:`Reads` serves both :class:`~rushpy.Controller` and
:class:`~rushpy.Worker` (decentralized workers read everything a controller
reads). It has no hooks to override: what differs between its owners, such
as how lost workers are detected while waiting, is passed in as a
:class:`LostWatch`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rushpy.cache import ResultCache
from rushpy.errors import TaskError, TaskTimeoutError, UnknownTaskError, WorkerError
from rushpy.models import TASK_STATES, TaskState
from rushpy.session import Session
from rushpy.store import NetworkStatus
from rushpy.table import Table, flatten_task
from rushpy.validation import check_keys, check_timeout

__all__ = ["LOST_CHECK_INTERVAL", "LostWatch", "Reads", "normalize_states"]

LOST_CHECK_INTERVAL = 0.5
"""Seconds between lost-worker checks while ``wait_for_tasks(..., detect_lost_workers=True)`` waits."""


def normalize_states(states: str | TaskState | Iterable[str | TaskState] | None) -> list[TaskState]:
    """Validate state names; ``None`` means all states.

    Raises:
        TaskError: a name is not one of queued, running, finished, failed.

    """
    if states is None:
        return list(TASK_STATES)
    if isinstance(states, (str, TaskState)):
        states = [states]
    out: list[TaskState] = []
    for state in states:
        try:
            value = TaskState(state)
        except ValueError:
            raise TaskError(
                f"unknown task state {state!r}: use any of {[s.value for s in TASK_STATES]}"
            ) from None
        if value not in out:
            out.append(value)
    return out


@dataclass(frozen=True, slots=True)
class LostWatch:
    """How a waiter detects lost workers: given by the owner of a :class:`Reads`.

    Attributes:
        detect: Finds and settles lost workers; returns the ids found by this call.
        workers_left: Whether any worker can still run open tasks.

    """

    detect: Callable[[], Awaitable[list[str]]]
    workers_left: Callable[[], Awaitable[bool]]


class Reads:
    """Counts, fetches, the finished-task cache and the waits of one network.

    Args:
        session: The owner's open session.

    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._store = session.store
        self.cache = ResultCache(session.store)
        # When this network was opened: a server younger than that restarted since.
        self._opened = time.monotonic()

    def on_event(self, channel: str, data: bytes) -> None:
        """Feed a pub/sub message: finished-task announcements go to the cache."""
        if channel != self._session.keys.events or not data.startswith(b"F "):
            return
        parts = data.split(b" ")
        try:
            first = int(parts[1])
        except ValueError:
            return
        self.cache.announce(first, parts[2:])

    # -- counts ---------------------------------------------------------------------
    async def status(self) -> NetworkStatus:
        """Counts of tasks per state and of workers, in one round trip."""
        return await self._store.reads.status()

    async def n_finished_tasks(self) -> int:
        """Tasks with a result."""
        return await self._store.reads.n_finished()

    # -- keys by state ---------------------------------------------------------------
    async def tasks_with_state(self, states: str | Iterable[str] | None) -> dict[str, list[str]]:
        """Task keys per state (one consistent snapshot)."""
        wanted = normalize_states(states)
        snap = await self._store.reads.snapshot()
        return {s.value: snap[s] for s in wanted}

    async def in_set(
        self, name: Literal["running", "failed"], keys: str | Sequence[str]
    ) -> bool | list[bool]:
        """Whether the task (or each task) is in the ``running`` or ``failed`` set."""
        if isinstance(keys, str):
            return (await self._store.reads.in_set(name, [keys]))[0]
        return await self._store.reads.in_set(name, check_keys(keys))

    # -- fetching ---------------------------------------------------------------------
    async def rows(self, keys: Sequence[str], state: TaskState | str) -> list[dict[str, Any]]:
        """Flat rows of ``keys`` in ``state`` (keys whose hash is gone are left out)."""
        tasks = await self._store.reads.read_tasks(keys)
        return [flatten_task(k, str(state), t) for k, t in zip(keys, tasks, strict=True) if t is not None]

    async def fetch_queued_tasks(self) -> Table:
        """Queued tasks: the shared queue (head first), then priority queues."""
        snap = await self._store.reads.snapshot()
        return Table(await self.rows(snap[TaskState.QUEUED], TaskState.QUEUED))

    async def fetch_priority_tasks(self) -> Table:
        """Tasks in workers' priority queues; column ``priority`` names the worker."""
        rows: list[dict[str, Any]] = []
        for worker_id, keys in (await self._store.reads.priority_keys()).items():
            for row in await self.rows(keys, TaskState.QUEUED):
                row["priority"] = worker_id
                rows.append(row)
        return Table(rows)

    async def fetch_running_tasks(self) -> Table:
        """Tasks being run."""
        return Table(await self.rows(await self._store.reads.members("running"), TaskState.RUNNING))

    async def fetch_failed_tasks(self) -> Table:
        """Failed tasks, with their ``condition``."""
        return Table(await self.rows(await self._store.reads.members("failed"), TaskState.FAILED))

    async def fetch_finished_tasks(self) -> Table:
        """Every finished task in finish order (the cache plus new results)."""
        return Table(await self.cache.rows())

    async def fetch_tasks_with_state(self, states: str | Iterable[str] | None) -> Table:
        """Tasks in the given states (default all), from one snapshot, in creation order."""
        wanted = normalize_states(states)
        snap = await self._store.reads.snapshot()
        where = {k: s for s in wanted for k in snap[s]}
        order = [k for k in await self._store.reads.all_keys() if k in where]
        if len(order) < len(where):
            # Keys not in the creation list (created by an older writer): append them.
            listed = set(order)
            order += [k for k in where if k not in listed]
        tasks = await self._store.reads.read_tasks(order)
        return Table(
            [flatten_task(k, where[k].value, t) for k, t in zip(order, tasks, strict=True) if t is not None]
        )

    async def fetch_new_tasks(self, timeout: float) -> Table:
        """Finished tasks no earlier call returned, waiting up to ``timeout`` s for one."""
        check_timeout(timeout, allow_none=False)
        if timeout > 0:
            await self._wait_new(timeout)  # reads the list first: no separate update
        else:
            await self.cache.update()
        return Table(self.cache.take_new())

    async def wait_for_new_tasks(self, timeout: float | None) -> bool:
        """Wait until finished tasks exist that :meth:`fetch_new_tasks` has not returned."""
        check_timeout(timeout, allow_none=True)
        if self.cache.has_new:
            return True
        return await self._wait_new(timeout)

    async def _wait_new(self, timeout: float | None) -> bool:
        events = self._session.events
        channel = self._session.keys.events
        deadline = None if timeout is None else time.monotonic() + timeout
        woken = False
        self.cache.listening += 1
        try:
            while True:
                seen = events.counter(channel)
                await self.cache.update(announced_only=woken)
                if self.cache.has_new:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                woken = await events.wait([channel], [seen], remaining)
        finally:
            self.cache.listening -= 1

    # -- waiting for given tasks -------------------------------------------------------
    async def wait_for_tasks(
        self, keys: Sequence[str], timeout: float | None, lost: LostWatch | None
    ) -> Table:
        """Wait until every task in ``keys`` is finished or failed; return their rows.

        With ``lost``, look for lost workers every :data:`LOST_CHECK_INTERVAL` s
        and raise :class:`WorkerError` once workers were lost and none is left.
        """
        keys = check_keys(keys)
        check_timeout(timeout, allow_none=True)
        events = self._session.events
        channel = self._session.keys.events
        network = self._session.keys.network_id
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = list(dict.fromkeys(keys))
        found_lost: list[str] = []
        while True:
            seen = events.counter(channel)
            if lost is not None:
                found_lost += await lost.detect()
            snap = await self._store.reads.snapshot()
            done = {k: TaskState.FINISHED for k in snap[TaskState.FINISHED]}
            done.update({k: TaskState.FAILED for k in snap[TaskState.FAILED]})
            open_keys = [k for k in wanted if k not in done]
            if not open_keys:
                tasks = await self._store.reads.read_tasks(wanted)
                return Table(
                    [flatten_task(k, done[k].value, t) for k, t in zip(wanted, tasks, strict=True) if t]
                )
            known = {k for s in (TaskState.QUEUED, TaskState.RUNNING) for k in snap[s]}
            unknown = [k for k in open_keys if k not in known]
            if unknown:
                raise UnknownTaskError(await self._explain_unknown(unknown))
            # Workers found lost by this wait, or earlier (a background check, another
            # detector): once none runs or starts, nobody runs the open tasks.
            if lost is not None and not await lost.workers_left():
                found = (
                    f"lost while waiting: {sorted(set(found_lost))}" if found_lost else "workers were lost"
                )
                raise WorkerError(
                    f"no worker of network {network!r} is running ({found}) and {len(open_keys)} of "
                    f"{len(wanted)} tasks are still open; start workers, or let the controller restart "
                    "lost local workers"
                )
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TaskTimeoutError(
                    f"{len(open_keys)} of {len(wanted)} tasks still open after {timeout} s "
                    "(queued or running); raise the timeout or check the workers with worker_info()"
                )
            step = remaining
            if lost is not None:
                step = LOST_CHECK_INTERVAL if remaining is None else min(remaining, LOST_CHECK_INTERVAL)
            await events.wait([channel], [seen], step)

    async def _explain_unknown(self, unknown: Sequence[str]) -> str:
        """Say why keys are unknown: a server that restarted empty, or keys that were never tasks."""
        network = self._session.keys.network_id
        head = f"{len(unknown)} key(s) are not tasks of network {network!r}, e.g. {unknown[0]!r}"
        uptime = await self._store.reads.server_uptime()
        # Uptime comes in whole seconds: one second of margin, so a server started just
        # before the network was opened does not pass for one that restarted since.
        if uptime + 1 < time.monotonic() - self._opened and not (await self.status()).n_tasks:
            return (
                f"{head}: the server restarted {uptime:.0f} s ago, after this network was opened, and "
                "came back without the network's data (it runs without persistence); turn persistence on "
                "(the server's appendonly yes, or EmbeddedServer(appendonly=True)) and push the tasks again"
            )
        return f"{head}; pass keys returned by push_tasks()"

    async def worker_info(self) -> Table:
        """One row per worker: ``worker_id``, ``state``, ``pid``, ``hostname``, ``started_at``."""
        infos = await self._store.workers.worker_infos()
        return Table(
            [
                {
                    "worker_id": i.worker_id,
                    "state": i.state.value,
                    "pid": i.pid,
                    "hostname": i.hostname,
                    "started_at": i.started_at,
                    "heartbeat": i.heartbeat,
                    **i.extra,
                }
                for i in infos
            ]
        )
