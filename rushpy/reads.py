"""Every read of a network's tasks and workers, as one component.

:class:`Reads` serves both :class:`~rushpy.Controller` and
:class:`~rushpy.Worker` (decentralized workers read everything a controller
reads). It has no hooks to override: what differs between its owners, such
as how lost workers are detected while waiting, is passed in as a
:class:`LostWatch`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Any, Literal

import anyio

from rushpy.announcements import Outcomes
from rushpy.announcements import parse as parse_announcement
from rushpy.cache import ResultCache
from rushpy.closing import LOST_CHECK_INTERVAL, KeyWaits, LostWatch, OnStates, step
from rushpy.errors import TaskError, UnknownTaskError
from rushpy.models import TASK_STATES, TaskState
from rushpy.session import Session
from rushpy.store import NetworkStatus
from rushpy.table import Table, flatten_task
from rushpy.validation import check_keys, check_timeout

__all__ = ["LOST_CHECK_INTERVAL", "LostWatch", "Reads", "normalize_states", "stream_states"]

def stream_states(states: Iterable[str | TaskState]) -> list[TaskState]:
    """Validate the states of the result stream: ``finished`` and/or ``failed``.

    Raises:
        TaskError: a state is not finished or failed, or none is given.

    """
    if isinstance(states, (str, TaskState)):
        states = [states]
    out = normalize_states(list(states or ()))
    if not out or any(s not in (TaskState.FINISHED, TaskState.FAILED) for s in out):
        raise TaskError(
            f"the result stream has states 'finished' and 'failed', got {[s.value for s in out]}: "
            "pass states=('finished',), ('failed',) or ('finished', 'failed')"
        )
    return out


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


class Reads:
    """Counts, fetches, the finished-task cache and the waits of one network.

    Args:
        session: The owner's open session.

    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._store = session.store
        self.cache = ResultCache(session.store)
        self.outcomes = Outcomes()
        self._closing = KeyWaits(session, self.outcomes, self._check_lost, self._explain_unknown)
        # When this network was opened: a server younger than that restarted since.
        self._opened = time.monotonic()
        # One lost-worker check at a time, at most one per interval, for all waiters.
        self._lost_lock = anyio.Lock()
        self._lost_checked = -LOST_CHECK_INTERVAL

    def on_event(self, channel: str, data: bytes) -> None:
        """Feed a pub/sub message: announcements (F, X) go to the cache and to the waiters.

        A reset (``R`` on the events channel) makes the cache check, before its
        next read, whether the network's lists shrank under it.
        """
        if channel == self._session.keys.events and data == b"R":
            self.cache.suspect_reset()
            return
        if channel != self._session.keys.results:
            return
        announcement = parse_announcement(data)
        if announcement is None:
            return
        self.outcomes.record(announcement)
        self.cache.announce(
            announcement.first, announcement.keys, failed=announcement.failed, rows=announcement.rows
        )

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
        return await self.cache.table()

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

    async def fetch_new_tasks(
        self, timeout: float, states: Iterable[str | TaskState], lost: LostWatch | None
    ) -> Table:
        """Tasks in ``states`` (finished, failed) no earlier call returned, waiting up to ``timeout`` s."""
        check_timeout(timeout, allow_none=False)
        wanted = stream_states(states)
        if timeout > 0:
            await self._wait_new(timeout, wanted, lost)  # reads first: no separate update
        else:
            await self._update(wanted, announced_only=False)
        return self.cache.take_new(wanted)

    async def wait_for_new_tasks(
        self, timeout: float | None, states: Iterable[str | TaskState], lost: LostWatch | None
    ) -> bool:
        """Wait until tasks in ``states`` exist that :meth:`fetch_new_tasks` has not returned."""
        check_timeout(timeout, allow_none=True)
        wanted = stream_states(states)
        if self.cache.has_new(wanted):
            return True
        return await self._wait_new(timeout, wanted, lost)

    async def _update(self, states: list[TaskState], *, announced_only: bool) -> None:
        if TaskState.FINISHED in states:
            if announced_only:
                await self.cache.update(announced_only=True)
            else:
                await self.cache.update_all()
        if TaskState.FAILED in states:
            await self.cache.update_failed(announced_only=announced_only)

    async def _wait_new(self, timeout: float | None, states: list[TaskState], lost: LostWatch | None) -> bool:
        events = self._session.events
        channel = self._session.keys.results
        await events.subscribe(channel)  # a worker hears announcements only once it waits
        deadline = None if timeout is None else time.monotonic() + timeout
        woken = False
        self.cache.listening += 1
        try:
            while True:
                seen = events.counter(channel)
                if lost is not None:
                    await self._check_lost(lost)
                await self._update(states, announced_only=woken)
                if self.cache.has_new(states):
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                woken = await events.wait([channel], [seen], step(remaining, lost))
                if not woken and deadline is not None and time.monotonic() >= deadline:
                    # Timed out with no event (a reconnection counts as one): nothing
                    # new since the read above, so another LRANGE would be wasted.
                    return False
        finally:
            self.cache.listening -= 1

    async def _check_lost(self, lost: LostWatch) -> list[str]:
        """Run the owner's lost-worker check, at most once per interval for all waiters.

        Every waiter of one controller wakes each :data:`LOST_CHECK_INTERVAL`
        s; one check then serves them all, so many waiters cost one check.
        """
        if self._lost_lock.locked() or time.monotonic() - self._lost_checked < LOST_CHECK_INTERVAL:
            return []
        async with self._lost_lock:
            self._lost_checked = time.monotonic()
            return await lost.detect()

    # -- one task, given tasks -----------------------------------------------------------
    async def fetch_task(self, key: str) -> dict[str, Any]:
        """One task's row with its state, in O(1) whatever the network's size."""
        if not isinstance(key, str):
            raise TaskError(f"a task key is a string; got {key!r} of type {type(key).__name__}")
        (found,) = await self._store.reads.lookup_rows([key])
        if found is None:
            raise UnknownTaskError(await self._explain_unknown([key]))
        return flatten_task(key, found[0], found[1])

    async def fetch_tasks(self, keys: Sequence[str]) -> Table:
        """Rows of ``keys`` in their order, each with its state (O(1) per key)."""
        keys = check_keys(keys)
        found = await self._store.reads.lookup_rows(keys)
        unknown = [k for k, f in zip(keys, found, strict=True) if f is None]
        if unknown:
            raise UnknownTaskError(await self._explain_unknown(unknown))
        return Table([flatten_task(k, f[0], f[1]) for k, f in zip(keys, found, strict=True) if f])

    async def wait_for_tasks(
        self, keys: Sequence[str], timeout: float | None, lost: LostWatch | None, on_states: OnStates = None
    ) -> Table:
        """Wait until every task in ``keys`` is finished or failed; return their rows (see ``closing``)."""
        return await self._closing.wait_for_tasks(keys, timeout, lost, on_states)

    def as_completed(
        self, keys: Sequence[str], timeout: float | None, lost: LostWatch | None, on_states: OnStates = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield each task's row as it finishes or fails for good (:mod:`rushpy.closing`)."""
        return self._closing.as_completed(keys, timeout, lost, on_states)

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
        """One row per worker (columns: :meth:`rushpy.store.WorkerStore.worker_rows`)."""
        return Table(await self._store.workers.worker_rows())
