"""The public read methods that Controller and Worker share.

:class:`ReadMethods` holds no state and defines no hook: every method forwards
to the owner's :class:`~rushpy.reads.Reads` component. It exists so the two
classes expose the same documented read API (decentralized workers read
everything a controller reads) without writing it twice.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from contextlib import aclosing
from typing import Any, overload

from rushpy.config import RedisConfig
from rushpy.deadline import call_deadline
from rushpy.progress import task_progress
from rushpy.reads import LostWatch, Reads
from rushpy.session import Session
from rushpy.store import NetworkStatus
from rushpy.table import Table

__all__ = ["ReadMethods"]


class ReadMethods:
    """Read methods of a network client; the owner sets ``_session``, ``_reads`` and ``_lost_watch``.

    ``_detect_lost_default`` says whether waits detect lost workers when the
    caller does not say: a controller does, a worker does not.
    """

    _session: Session
    _reads: Reads
    _lost_watch: LostWatch
    _detect_lost_default: bool = False

    @property
    def network_id(self) -> str:
        """Id of the network."""
        return self._session.keys.network_id

    @property
    def config(self) -> RedisConfig:
        """Server settings (the password is a ``SecretStr``: never printed)."""
        return self._session.config

    # -- counts ----------------------------------------------------------------------
    async def status(self) -> NetworkStatus:
        """Counts of tasks per state and of workers, in one round trip."""
        return await self._reads.status()

    async def n_queued_tasks(self) -> int:
        """Tasks waiting in the shared queue and in priority queues."""
        return (await self._reads.status()).n_queued_tasks

    async def n_queued_priority_tasks(self) -> int:
        """Tasks waiting in workers' priority queues."""
        return (await self._reads.status()).n_queued_priority_tasks

    async def n_running_tasks(self) -> int:
        """Tasks being run."""
        return (await self._reads.status()).n_running_tasks

    async def n_finished_tasks(self) -> int:
        """Tasks with a result."""
        return await self._reads.n_finished_tasks()

    async def n_failed_tasks(self) -> int:
        """Tasks that failed."""
        return (await self._reads.status()).n_failed_tasks

    async def n_tasks(self) -> int:
        """All tasks of the network."""
        return (await self._reads.status()).n_tasks

    async def n_workers(self) -> int:
        """Workers that ever registered."""
        return (await self._reads.status()).n_workers

    async def n_running_workers(self) -> int:
        """Workers that are up."""
        return (await self._reads.status()).n_running_workers

    # -- keys by state ---------------------------------------------------------------
    async def tasks_with_state(self, states: str | Iterable[str] | None = None) -> dict[str, list[str]]:
        """Task keys per state (one consistent snapshot).

        Args:
            states: States to include (default all).

        """
        return await self._reads.tasks_with_state(states)

    @overload
    async def is_running_task(self, keys: str) -> bool: ...  # type: ignore[overload-overlap]
    @overload
    async def is_running_task(self, keys: Sequence[str]) -> list[bool]: ...

    async def is_running_task(self, keys: str | Sequence[str]) -> bool | list[bool]:
        """Whether the task (or each task) is running."""
        return await self._reads.in_set("running", keys)

    @overload
    async def is_failed_task(self, keys: str) -> bool: ...  # type: ignore[overload-overlap]
    @overload
    async def is_failed_task(self, keys: Sequence[str]) -> list[bool]: ...

    async def is_failed_task(self, keys: str | Sequence[str]) -> bool | list[bool]:
        """Whether the task (or each task) failed."""
        return await self._reads.in_set("failed", keys)

    # -- fetching ---------------------------------------------------------------------
    async def fetch_queued_tasks(self) -> Table:
        """Queued tasks: the shared queue (head first), then priority queues."""
        return await self._reads.fetch_queued_tasks()

    async def fetch_priority_tasks(self) -> Table:
        """Tasks in workers' priority queues; column ``priority`` names the worker."""
        return await self._reads.fetch_priority_tasks()

    async def fetch_running_tasks(self) -> Table:
        """Tasks being run."""
        return await self._reads.fetch_running_tasks()

    async def fetch_failed_tasks(self) -> Table:
        """Failed tasks, with their ``condition``."""
        return await self._reads.fetch_failed_tasks()

    async def fetch_finished_tasks(self) -> Table:
        """Every finished task in finish order (served from the cache plus new results).

        Safe to call from many coroutines at once: no row is ever repeated.
        """
        return await self._reads.fetch_finished_tasks()

    async def fetch_tasks(self, keys: Sequence[str] | None = None) -> Table:
        """Every task of the network with its state, in creation order; or the tasks ``keys``.

        Args:
            keys: Task keys: their rows in this order, each with its state, read
                in O(1) per key whatever the network's size (``None``: every task,
                from one consistent snapshot).

        Raises:
            UnknownTaskError: a key is not a task of this network.

        """
        if keys is None:
            return await self._reads.fetch_tasks_with_state(None)
        return await self._reads.fetch_tasks(keys)

    async def fetch_task(self, key: str) -> dict[str, Any]:
        """One task's row (``key``, ``state``, ``worker_id``, inputs, results, ``condition``, ...).

        Its cost does not depend on the network's size: the state is told by
        two set-membership checks and the task's own fields, never by reading
        every key.

        Raises:
            UnknownTaskError: ``key`` is not a task of this network.

        """
        return await self._reads.fetch_task(key)

    async def fetch_tasks_with_state(self, states: str | Iterable[str] | None = None) -> Table:
        """Tasks in the given states (default all), from one consistent snapshot.

        Rows come in creation order; the ``state`` column says where each task was
        at the moment of the snapshot.
        """
        return await self._reads.fetch_tasks_with_state(states)

    def _watch(self, detect_lost_workers: bool | None) -> LostWatch | None:
        """The lost-worker check of a wait: on when asked, else the owner's default."""
        on = self._detect_lost_default if detect_lost_workers is None else detect_lost_workers
        return self._lost_watch if on else None

    async def fetch_new_tasks(
        self,
        timeout: float = 0,
        states: Iterable[str] = ("finished",),
        detect_lost_workers: bool | None = None,
    ) -> Table:
        """Tasks not returned by an earlier call (the result stream), waiting up to ``timeout`` s for one.

        Every task that finishes, and with ``states=("finished", "failed")``
        every task that fails for good (after its retries; cancelled; corrupt;
        failed by a lost worker; pushed failed), is returned exactly once,
        to one of the coroutines that call this method on one controller (or
        worker). Failed rows carry ``state`` ``"failed"`` and the ``condition``;
        finished rows come first. A task retried by hand (``retry_tasks``)
        comes again with its next outcome. Cost grows with the number of new
        results, not with the archive.

        Args:
            timeout: Seconds to wait for a new row (0: return at once).
            states: ``"finished"`` and/or ``"failed"``.
            detect_lost_workers: While waiting, look for lost workers every
                :data:`~rushpy.reads.LOST_CHECK_INTERVAL` s and settle their
                tasks. ``None``: on for a controller, off for a worker.

        Raises:
            TaskError: ``states`` names another state.
            ConnectionFailedError: the server is unreachable, or hung past the
                timeout plus ``min(socket_timeout, 5)`` seconds.

        """
        with call_deadline(timeout):
            return await self._reads.fetch_new_tasks(timeout, states, self._watch(detect_lost_workers))

    async def wait_for_new_tasks(
        self,
        timeout: float | None = None,
        states: Iterable[str] = ("finished",),
        detect_lost_workers: bool | None = None,
    ) -> bool:
        """Wait until tasks in ``states`` exist that :meth:`fetch_new_tasks` has not returned.

        Args:
            timeout: Seconds to wait at most (``None``: no limit).
            states: ``"finished"`` and/or ``"failed"`` (tasks that failed for good).
            detect_lost_workers: As in :meth:`fetch_new_tasks` (``None``: on for
                a controller, off for a worker).

        Returns:
            ``True`` when there are new rows, ``False`` when ``timeout`` passed first.

        Raises:
            TaskError: ``states`` names another state.
            ConnectionFailedError: the server is unreachable, or hung past the
                timeout plus ``min(socket_timeout, 5)`` seconds.

        """
        with call_deadline(timeout):
            return await self._reads.wait_for_new_tasks(timeout, states, self._watch(detect_lost_workers))

    async def wait_for_tasks(
        self,
        keys: Sequence[str],
        timeout: float | None = None,
        detect_lost_workers: bool | None = None,
        progress: bool | None = None,
    ) -> Table:
        """Wait until every task in ``keys`` is finished or failed; return their rows.

        Each wake-up checks only the keys still open, at O(1) per key: the cost
        does not grow with the network.

        Args:
            keys: Task keys.
            timeout: Seconds to wait at most (``None``: no limit).
            detect_lost_workers: Look for lost workers every
                :data:`~rushpy.reads.LOST_CHECK_INTERVAL` s while waiting and settle
                their tasks, so the wait never hangs on a dead worker. ``None``
                (the default): on for a controller, off for a worker.
            progress: Draw a bar with counts per state (finished, failed,
                running, queued; needs rich). ``None`` (the default): only when
                standard error is a terminal (see :mod:`rushpy.progress`).

        Raises:
            TaskTimeoutError: ``timeout`` passed first; the message says how many
                are open and names workers without a fresh heartbeat that run them.
            UnknownTaskError: a key is not a task of this network.
            WorkerError: with lost-worker detection, workers were lost and none
                is left running to finish the open tasks.
            ConnectionFailedError: the server is unreachable, or hung past the
                timeout plus ``min(socket_timeout, 5)`` seconds.

        """
        watch = self._watch(detect_lost_workers)
        with task_progress(progress, "wait_for_tasks") as on_states, call_deadline(timeout):
            return await self._reads.wait_for_tasks(keys, timeout, watch, on_states)

    async def as_completed(
        self,
        keys: Sequence[str],
        timeout: float | None = None,
        detect_lost_workers: bool | None = None,
        progress: bool | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield each task's row as it finishes or fails for good, in completion order.

        Example:
            >>> async for row in rush.as_completed(keys, timeout=60):
            ...     print(row["key"], row["state"])

        Args:
            keys: Task keys (a key given twice is yielded once).
            timeout: Seconds, from the first iteration, until every task must be
                done (``None``: no limit).
            detect_lost_workers: As in :meth:`wait_for_tasks`.
            progress: As in :meth:`wait_for_tasks`.

        Raises:
            TaskTimeoutError: ``timeout`` passed first; the message says how many are open.
            UnknownTaskError: a key is not a task of this network.
            WorkerError: as in :meth:`wait_for_tasks`.

        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with task_progress(progress, "as_completed") as on_states:
            rows = self._reads.as_completed(keys, timeout, self._watch(detect_lost_workers), on_states)
            async with aclosing(rows):
                while True:
                    # The deadline bounds each step, never the caller's code between rows.
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    with call_deadline(left):
                        try:
                            row = await anext(rows)
                        except StopAsyncIteration:
                            return
                    yield row

    def reset_cache(self) -> None:
        """Forget cached finished tasks; the next fetch reads them again."""
        self._reads.cache.reset()

    async def worker_info(self) -> Table:
        """One row per worker, in one round trip.

        Columns: ``worker_id``, ``state`` (running, terminated, killed, lost),
        ``pid``, ``hostname``, ``started_at``, ``last_beat`` (UTC time of its
        last heartbeat while its heartbeat key lives, else ``None``),
        ``n_finished`` and ``n_failed`` (results and failures it recorded,
        written with its log records, alone at most every 2 s), ``running``
        (keys it runs now), ``last_error`` (the latest failure or crash: ``type``, ``message``,
        ``at``), ``heartbeat``, then the other fields it registered with.
        """
        return await self._reads.worker_info()
