"""The public read methods that Controller and Worker share.

:class:`ReadMethods` holds no state and defines no hook: every method forwards
to the owner's :class:`~rushpy.reads.Reads` component. It exists so the two
classes expose the same documented read API (decentralized workers read
everything a controller reads) without writing it twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import overload

from rushpy.config import RedisConfig
from rushpy.deadline import call_deadline
from rushpy.reads import LostWatch, Reads
from rushpy.session import Session
from rushpy.store import NetworkStatus
from rushpy.table import Table

__all__ = ["ReadMethods"]


class ReadMethods:
    """Read methods of a network client; the owner sets ``_session``, ``_reads`` and ``_lost_watch``."""

    _session: Session
    _reads: Reads
    _lost_watch: LostWatch

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

    async def fetch_tasks(self) -> Table:
        """Every task of the network with its state, in creation order."""
        return await self._reads.fetch_tasks_with_state(None)

    async def fetch_tasks_with_state(self, states: str | Iterable[str] | None = None) -> Table:
        """Tasks in the given states (default all), from one consistent snapshot.

        Rows come in creation order; the ``state`` column says where each task was
        at the moment of the snapshot.
        """
        return await self._reads.fetch_tasks_with_state(states)

    async def fetch_new_tasks(self, timeout: float = 0) -> Table:
        """Finished tasks not returned by an earlier call, waiting up to ``timeout`` s for one.

        Cost grows with the number of new results, not with the cache. With many
        coroutines calling it, every finished task is returned exactly once, to
        one of them. Against a hung server it raises ``ConnectionFailedError`` at
        most ``timeout`` plus ``min(socket_timeout, 5)`` seconds after the call.
        """
        with call_deadline(timeout):
            return await self._reads.fetch_new_tasks(timeout)

    async def wait_for_new_tasks(self, timeout: float | None = None) -> bool:
        """Wait until finished tasks exist that :meth:`fetch_new_tasks` has not returned.

        Returns:
            ``True`` when there are new results, ``False`` when ``timeout`` passed first.

        Raises:
            ConnectionFailedError: the server is unreachable, or hung past the
                timeout plus ``min(socket_timeout, 5)`` seconds.

        """
        with call_deadline(timeout):
            return await self._reads.wait_for_new_tasks(timeout)

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
                :data:`~rushpy.reads.LOST_CHECK_INTERVAL` s while waiting and settle
                their tasks, so the wait never hangs on a dead worker.

        Raises:
            TaskTimeoutError: ``timeout`` passed first; the message says how many are open.
            UnknownTaskError: a key is not a task of this network.
            WorkerError: with ``detect_lost_workers``, workers were lost while waiting
                and none is left running to finish the open tasks.
            ConnectionFailedError: the server is unreachable, or hung past the
                timeout plus ``min(socket_timeout, 5)`` seconds.

        """
        with call_deadline(timeout):
            return await self._reads.wait_for_tasks(
                keys, timeout, self._lost_watch if detect_lost_workers else None
            )

    def reset_cache(self) -> None:
        """Forget cached finished tasks; the next fetch reads them again."""
        self._reads.cache.reset()

    async def worker_info(self) -> Table:
        """One row per worker: ``worker_id``, ``state``, ``pid``, ``hostname``, ``started_at``."""
        return await self._reads.worker_info()
