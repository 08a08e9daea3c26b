"""The :class:`Controller`: pushes tasks, starts and stops workers, reads results.

The controller composes its parts: a :class:`~rushpy.session.Session`
(connection, event listener, task group), a :class:`~rushpy.reads.Reads`
component (every read, the result cache), a
:class:`~rushpy.pool.LocalWorkerPool` (its worker processes) and a
:class:`~rushpy.lost.LostWorkerDetector` fed with the pool's process probe.
Its public methods are grouped by job in :mod:`rushpy.read_methods`,
:mod:`rushpy.task_methods` and :mod:`rushpy.supervision`.
"""

from __future__ import annotations

from types import TracebackType

import anyio

from rushpy.config import RedisConfig
from rushpy.inspect import InspectMethods
from rushpy.keys import DEFAULT_PREFIX, Keys
from rushpy.log_methods import LogMethods
from rushpy.logs import get_logger
from rushpy.lost import LostWorkerDetector
from rushpy.models import WorkerState
from rushpy.pool import LocalWorker, LocalWorkerPool
from rushpy.read_methods import ReadMethods
from rushpy.reads import LostWatch, Reads
from rushpy.session import Session
from rushpy.store import DEFAULT_MAX_TASK_BYTES, LARGE_OBJECT_BYTES
from rushpy.supervision import StopResult, WorkerMethods
from rushpy.task_data import TaskData
from rushpy.task_methods import TaskMethods, next_seed
from rushpy.validation import check_positive_seconds

__all__ = ["Controller", "LocalWorker", "StopResult", "next_seed"]

log = get_logger("rushpy.controller")


class Controller(ReadMethods, LogMethods, InspectMethods, TaskMethods, WorkerMethods):
    """Controller of a network: push tasks, manage workers, fetch results.

    One controller is safe to share between any number of coroutines (the
    request handlers of a web service, say): reads, waits and pushes may run
    concurrently.

    Example:
        >>> async with Controller("hpo", config=server.config) as rush:
        ...     await rush.start_local_workers(2, fun=objective)
        ...     keys = await rush.push_tasks([{"x": 1}, {"x": 2}])
        ...     table = await rush.wait_for_tasks(keys, timeout=30)

    Args:
        network_id: Id of the network.
        config: Server settings or URL; default :meth:`RedisConfig.from_env`.
        prefix: First component of every key.
        shutdown_timeout: Seconds local workers get to exit when the controller
            closes before they are killed.
        detect_lost_every: Run :meth:`detect_lost_workers` in the background every
            this many seconds while the controller is open (``None``: only on request).
        restart_lost_workers: Replace lost local workers, in the background check
            and in the waits (``wait_for_tasks``, ``as_completed``, the stream
            waits), which look for lost workers every
            :data:`~rushpy.reads.LOST_CHECK_INTERVAL` s by default
            (``detect_lost_workers=False`` turns that off per call).
        max_task_bytes: Largest encoded size of one task (its inputs, results or
            condition, default 64 MiB); a bigger one raises ``TaskError`` before
            anything is written.
        allow_evicting_server: Connect even when the server's ``maxmemory-policy``
            is ``allkeys-*``, which deletes any key (tasks, results, queues) when
            memory runs out. By default such a server is refused with a
            ``ConfigError`` on entry; a ``volatile-*`` policy (it may evict
            heartbeat keys) only logs a warning. See "Memory pressure" in
            ``docs/lifecycle.md``.
        seed: Root seed, an integer in [0, 2**64): every task pushed without an
            explicit seed gets the seed of its index in the network, and workers
            get their own streams (``Worker.seed``); stored in the network on
            entry (a network keeps one root seed). See ``docs/guide.md``, "Seeds".
        large_object_bytes: Task inputs whose encoding is larger (default 1 MiB)
            are stored once as large objects and passed by reference (``None``:
            never). See ``docs/guide.md``, "Constants and large objects".

    """

    # Waits detect lost workers unless told not to (docs/lifecycle.md, "Lost-worker detection").
    _detect_lost_default = True

    def __init__(
        self,
        network_id: str,
        config: RedisConfig | str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        shutdown_timeout: float = 10.0,
        detect_lost_every: float | None = None,
        restart_lost_workers: bool = False,
        max_task_bytes: int = DEFAULT_MAX_TASK_BYTES,
        allow_evicting_server: bool = False,
        seed: int | None = None,
        large_object_bytes: int | None = LARGE_OBJECT_BYTES,
    ) -> None:
        if detect_lost_every is not None:
            check_positive_seconds(detect_lost_every, "detect_lost_every")
        keys = Keys(network_id, prefix)
        self._session = Session(
            network_id,
            config,
            prefix=prefix,
            # A controller waits for results and workers: it hears both from the start.
            channels=[keys.results, keys.worker_events],
            on_event=self._on_event,
            owner="Controller",
            max_task_bytes=max_task_bytes,
            check_eviction=True,
            allow_evicting_server=allow_evicting_server,
        )
        self._keys = self._session.keys
        self._store = self._session.store
        self._task_data = TaskData(self._store, seed=seed, large_object_bytes=large_object_bytes)
        self._reads = Reads(self._session)
        self.shutdown_timeout = shutdown_timeout
        self.detect_lost_every = detect_lost_every
        self.restart_lost_workers = restart_lost_workers
        self._pool = LocalWorkerPool(
            self.config.to_url(include_password=True, include_options=True),
            terminate_timeout=shutdown_timeout,
        )
        self._lost = LostWorkerDetector(
            self._store,
            probe=lambda: {
                wid: f"its process exited with code {code}" for wid, code in self._pool.exit_codes().items()
            },
            starting=self._pool.starting,
        )
        self._lost_watch = LostWatch(detect=self._detect_while_waiting, workers_left=self._lost.workers_left)

    def _on_event(self, channel: str, data: bytes) -> None:
        self._reads.on_event(channel, data)

    def __repr__(self) -> str:
        return f"Controller(network_id={self.network_id!r}, config={self.config})"

    async def __aenter__(self) -> Controller:
        await self._session.__aenter__()
        try:
            await self._task_data.store_root_seed()  # before any worker reads it
        except BaseException as exc:
            await self._session.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if self.detect_lost_every is not None:
            self._session.task_group.start_soon(self._watch_workers, self.detect_lost_every)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            try:
                # Stop the background checks first: they may restart workers.
                await self._session.stop_tasks()
            finally:
                await self._shutdown_local()  # shielded: runs even when cancelled
        finally:
            await self._session.__aexit__(exc_type, exc, tb)

    async def _watch_workers(self, every: float) -> None:
        """Background lost-worker detection; survives connection trouble."""
        while True:
            await anyio.sleep(every)
            try:
                await self.detect_lost_workers(restart_local_workers=self.restart_lost_workers)
            except Exception as exc:  # keep watching through passing faults
                log.warning("lost-worker check failed; retrying", error=f"{type(exc).__name__}: {exc}")

    # -- reset ---------------------------------------------------------------------------------
    async def reset(self, workers: bool = True) -> None:
        """Delete the network's data.

        Args:
            workers: Also stop every worker (local ones are killed, remote ones asked
                to terminate) and forget them; with ``False`` only task data is
                deleted and running workers stay registered.

        """
        if workers:
            # Every local process still alive, also those no longer recorded as
            # running (lost while hung, say): they are forgotten below.
            await self._pool.kill_all()
            running = await self._store.workers.worker_ids(WorkerState.RUNNING)
            await self._store.workers.request_terminate(running)
        await self._store.reset(keep_workers=not workers)
        self._task_data.forget()
        await self._task_data.store_root_seed()
        self.reset_cache()
        # Waiters of any client of the network look their keys up again (gone now).
        await self._store.workers.publish_event(b"R")
