"""Connection life cycle and every read method, shared by Controller and Worker.

:class:`NetworkClient` owns the Redis client, the task store, the pub/sub
listener and a local cache of finished tasks. The cache makes
:meth:`NetworkClient.fetch_new_tasks` cost proportional to the number of new
results only: it reads the finished list from the cached offset on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self, overload

import anyio

from rushpy.config import RedisConfig
from rushpy.connection import check_connection, create_client
from rushpy.errors import TaskError, TaskTimeoutError, UnknownTaskError, WorkerError
from rushpy.events import EventListener
from rushpy.keys import DEFAULT_PREFIX, Keys
from rushpy.logs import get_logger
from rushpy.lost import find_lost_workers, settle_lost_workers
from rushpy.models import TASK_STATES, TaskState, WorkerState
from rushpy.store import NetworkStatus, Store
from rushpy.table import Table, flatten_task
from rushpy.validation import check_keys, check_timeout

__all__ = ["LOST_CHECK_INTERVAL", "NetworkClient", "normalize_states"]

log = get_logger("rushpy")

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


class NetworkClient:
    """Base of :class:`~rushpy.Controller` and :class:`~rushpy.Worker`.

    Args:
        network_id: Id of the network (letters, digits, ``_.-``).
        config: Server settings; default :meth:`RedisConfig.from_env`.
        prefix: First component of every key.

    """

    def __init__(
        self,
        network_id: str,
        config: RedisConfig | str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.keys = Keys(network_id, prefix)
        if config is None:
            config = RedisConfig.from_env()
        elif isinstance(config, str):
            config = RedisConfig.from_url(config)
        self.config: RedisConfig = config
        self._client = create_client(config)
        self.store = Store(self._client, self.keys)
        self._listener: EventListener | None = None
        self._cache: list[dict[str, Any]] = []
        self._seen = 0
        # Finished keys announced on the events channel, by index in the finished
        # list: lets a waiter read new results without reading the list first.
        self._announced: dict[int, str] = {}
        self._entered = False

    @property
    def network_id(self) -> str:
        """Id of the network."""
        return self.keys.network_id

    def _channels(self) -> list[str]:
        return [self.keys.events]

    # -- life cycle -------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await check_connection(self.config)
        await self.store.load_scripts()
        self._listener = EventListener(self.config, self._channels(), self._on_event)
        await self._listener.__aenter__()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        if self._listener is not None:
            await self._listener.__aexit__(None, None, None)
            self._listener = None
        with anyio.CancelScope(shield=True):  # may run while the owner is cancelled
            await self._client.aclose()

    def _on_event(self, channel: str, data: bytes) -> None:
        if channel != self.keys.events or not data.startswith(b"F "):
            return
        parts = data.split(b" ")
        try:
            first = int(parts[1])
        except ValueError:
            return
        if first + len(parts) - 2 <= len(self._cache):
            return  # already cached
        for offset, key in enumerate(parts[2:]):
            self._announced[first + offset] = key.decode()

    def _events(self) -> EventListener:
        if self._listener is None:
            raise RuntimeError(
                f"{type(self).__name__} is not open: use `async with {type(self).__name__}(...)`"
            )
        return self._listener

    # -- counts ----------------------------------------------------------------------
    async def status(self) -> NetworkStatus:
        """Counts of tasks per state and of workers, in one round trip."""
        return await self.store.status()

    async def n_queued_tasks(self) -> int:
        """Tasks waiting in the shared queue and in priority queues."""
        return (await self.status()).n_queued_tasks

    async def n_queued_priority_tasks(self) -> int:
        """Tasks waiting in workers' priority queues."""
        return (await self.status()).n_queued_priority_tasks

    async def n_running_tasks(self) -> int:
        """Tasks being run."""
        return (await self.status()).n_running_tasks

    async def n_finished_tasks(self) -> int:
        """Tasks with a result."""
        return await self.store.n_finished()

    async def n_failed_tasks(self) -> int:
        """Tasks that failed."""
        return (await self.status()).n_failed_tasks

    async def n_tasks(self) -> int:
        """All tasks of the network."""
        return (await self.status()).n_tasks

    async def n_workers(self) -> int:
        """Workers that ever registered."""
        return (await self.status()).n_workers

    async def n_running_workers(self) -> int:
        """Workers that are up."""
        return (await self.status()).n_running_workers

    # -- keys by state ---------------------------------------------------------------
    async def tasks_with_state(self, states: str | Iterable[str] | None = None) -> dict[str, list[str]]:
        """Task keys per state (one consistent snapshot).

        Args:
            states: States to include (default all).

        """
        wanted = normalize_states(states)
        snap = await self.store.snapshot()
        return {s.value: snap[s] for s in wanted}

    @overload
    async def is_running_task(self, keys: str) -> bool: ...  # type: ignore[overload-overlap]
    @overload
    async def is_running_task(self, keys: Sequence[str]) -> list[bool]: ...

    async def is_running_task(self, keys: str | Sequence[str]) -> bool | list[bool]:
        """Whether the task (or each task) is running."""
        if isinstance(keys, str):
            return (await self.store.in_set("running", [keys]))[0]
        return await self.store.in_set("running", check_keys(keys))

    @overload
    async def is_failed_task(self, keys: str) -> bool: ...  # type: ignore[overload-overlap]
    @overload
    async def is_failed_task(self, keys: Sequence[str]) -> list[bool]: ...

    async def is_failed_task(self, keys: str | Sequence[str]) -> bool | list[bool]:
        """Whether the task (or each task) failed."""
        if isinstance(keys, str):
            return (await self.store.in_set("failed", [keys]))[0]
        return await self.store.in_set("failed", check_keys(keys))

    # -- fetching ---------------------------------------------------------------------
    async def _rows(self, keys: Sequence[str], state: TaskState | str) -> list[dict[str, Any]]:
        tasks = await self.store.read_tasks(keys)
        return [flatten_task(k, str(state), t) for k, t in zip(keys, tasks, strict=True) if t is not None]

    async def fetch_queued_tasks(self) -> Table:
        """Queued tasks: the shared queue (head first), then priority queues."""
        snap = await self.store.snapshot()
        return Table(await self._rows(snap[TaskState.QUEUED], TaskState.QUEUED))

    async def fetch_priority_tasks(self) -> Table:
        """Tasks in workers' priority queues; column ``priority`` names the worker."""
        rows: list[dict[str, Any]] = []
        for worker_id, keys in (await self.store.priority_keys()).items():
            for row in await self._rows(keys, TaskState.QUEUED):
                row["priority"] = worker_id
                rows.append(row)
        return Table(rows)

    async def fetch_running_tasks(self) -> Table:
        """Tasks being run."""
        return Table(await self._rows(await self.store.members("running"), TaskState.RUNNING))

    async def fetch_failed_tasks(self) -> Table:
        """Failed tasks, with their ``condition``."""
        return Table(await self._rows(await self.store.members("failed"), TaskState.FAILED))

    async def fetch_finished_tasks(self) -> Table:
        """Every finished task in finish order (served from the cache plus new results)."""
        await self._update_cache()
        return Table(self._cache)

    async def fetch_tasks(self) -> Table:
        """Every task of the network with its state, in creation order."""
        return await self.fetch_tasks_with_state(None)

    async def fetch_tasks_with_state(self, states: str | Iterable[str] | None = None) -> Table:
        """Tasks in the given states (default all), from one consistent snapshot.

        Rows come in creation order; the ``state`` column says where each task was
        at the moment of the snapshot.
        """
        wanted = normalize_states(states)
        snap = await self.store.snapshot()
        where = {k: s for s in wanted for k in snap[s]}
        order = [k for k in await self.store.all_keys() if k in where]
        if len(order) < len(where):
            # Keys not in the creation list (created by an older writer): append them.
            listed = set(order)
            order += [k for k in where if k not in listed]
        tasks = await self.store.read_tasks(order)
        rows = [
            flatten_task(k, where[k].value, t) for k, t in zip(order, tasks, strict=True) if t is not None
        ]
        return Table(rows)

    async def _update_cache(self, *, announced_only: bool = False) -> int:
        """Read finished tasks past the cached offset; returns how many were added.

        With ``announced_only``, use the keys announced on the events channel when
        they continue the cache (one round trip instead of two); fall back to
        reading the finished list otherwise.
        """
        start = len(self._cache)
        keys: list[str] = []
        if announced_only:
            while (start + len(keys)) in self._announced:
                keys.append(self._announced[start + len(keys)])
        if not keys:
            keys = await self.store.finished_keys(start)
        if self._announced:
            self._announced = {i: k for i, k in self._announced.items() if i >= start + len(keys)}
        if not keys:
            return 0
        self._cache.extend(await self._rows(keys, TaskState.FINISHED))
        return len(keys)

    async def fetch_new_tasks(self, timeout: float = 0) -> Table:
        """Finished tasks not returned by an earlier call, waiting up to ``timeout`` s for one.

        Cost grows with the number of new results, not with the cache.
        """
        check_timeout(timeout, allow_none=False)
        await self._update_cache()
        if len(self._cache) == self._seen and timeout > 0:
            await self._wait_new(timeout)
        new = self._cache[self._seen :]
        self._seen = len(self._cache)
        return Table(new)

    async def wait_for_new_tasks(self, timeout: float | None = None) -> bool:
        """Wait until finished tasks exist that :meth:`fetch_new_tasks` has not returned.

        Returns:
            ``True`` when there are new results, ``False`` when ``timeout`` passed first.

        """
        check_timeout(timeout, allow_none=True)
        if len(self._cache) > self._seen:
            return True
        return await self._wait_new(timeout)

    async def _wait_new(self, timeout: float | None) -> bool:
        events = self._events()
        channel = self.keys.events
        deadline = None if timeout is None else time.monotonic() + timeout
        woken = False
        while True:
            seen = events.counter(channel)
            if await self._update_cache(announced_only=woken) or len(self._cache) > self._seen:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            woken = await events.wait([channel], [seen], remaining)

    # -- lost workers ---------------------------------------------------------------
    async def _lost_reasons(self) -> dict[str, str]:
        """Running workers that are gone, with the reason (the controller adds its own processes)."""
        return await find_lost_workers(self.store)

    async def detect_lost_workers(self) -> list[str]:
        """Find workers that are gone and settle their tasks; returns the ids found in this call.

        A worker is lost when its heartbeat expired, or, without a heartbeat, when
        it ran on this host and its process is gone. Its popped tasks go back to
        the queue; its running tasks go back while attempts remain
        (``max_retries``), else fail with a ``WorkerLost`` condition naming it.
        """
        return await settle_lost_workers(self.store, await self._lost_reasons())

    async def _detect_while_waiting(self) -> list[str]:
        return await self.detect_lost_workers()

    async def _workers_left(self) -> bool:
        """Whether any worker can still run open tasks (the controller adds its starting ones)."""
        return bool(await self.store.worker_ids(WorkerState.RUNNING))

    # -- waiting ------------------------------------------------------------------------
    async def wait_for_tasks(
        self,
        keys: Sequence[str],
        timeout: float | None = None,
        detect_lost_workers: bool = False,
    ) -> Table:
        """Wait until every task in ``keys`` is finished or failed; return their rows.

        Args:
            keys: Task keys.
            timeout: Seconds to wait at most (``None``: no limit).
            detect_lost_workers: Look for lost workers every
                :data:`LOST_CHECK_INTERVAL` s while waiting and settle their tasks,
                so the wait never hangs on a dead worker.

        Raises:
            TaskTimeoutError: ``timeout`` passed first; the message says how many are open.
            UnknownTaskError: a key is not a task of this network.
            WorkerError: with ``detect_lost_workers``, workers were lost while waiting
                and none is left running to finish the open tasks.

        """
        keys = check_keys(keys)
        check_timeout(timeout, allow_none=True)
        events = self._events()
        channel = self.keys.events
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = list(dict.fromkeys(keys))
        lost: list[str] = []
        while True:
            seen = events.counter(channel)
            if detect_lost_workers:
                lost += await self._detect_while_waiting()
            snap = await self.store.snapshot()
            done = {k: TaskState.FINISHED for k in snap[TaskState.FINISHED]}
            done.update({k: TaskState.FAILED for k in snap[TaskState.FAILED]})
            open_keys = [k for k in wanted if k not in done]
            if not open_keys:
                tasks = await self.store.read_tasks(wanted)
                return Table(
                    [flatten_task(k, done[k].value, t) for k, t in zip(wanted, tasks, strict=True) if t]
                )
            known = {k for s in (TaskState.QUEUED, TaskState.RUNNING) for k in snap[s]}
            unknown = [k for k in open_keys if k not in known]
            if unknown:
                raise UnknownTaskError(
                    f"{len(unknown)} key(s) are not tasks of network {self.network_id!r}, e.g. "
                    f"{unknown[0]!r}; pass keys returned by push_tasks()"
                )
            if lost and not await self._workers_left():
                raise WorkerError(
                    f"no worker of network {self.network_id!r} is running (lost while waiting: "
                    f"{sorted(set(lost))}) and {len(open_keys)} of {len(wanted)} tasks are still "
                    "open; start workers, or let the controller restart lost local workers"
                )
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TaskTimeoutError(
                    f"{len(open_keys)} of {len(wanted)} tasks still open after {timeout} s "
                    "(queued or running); raise the timeout or check the workers with worker_info()"
                )
            step = remaining
            if detect_lost_workers:
                step = LOST_CHECK_INTERVAL if remaining is None else min(remaining, LOST_CHECK_INTERVAL)
            await events.wait([channel], [seen], step)

    def reset_cache(self) -> None:
        """Forget cached finished tasks; the next fetch reads them again."""
        self._cache = []
        self._seen = 0

    async def worker_info(self) -> Table:
        """One row per worker: ``worker_id``, ``state``, ``pid``, ``hostname``, ``started_at``."""
        infos = await self.store.worker_infos()
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
