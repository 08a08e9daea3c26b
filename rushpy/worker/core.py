"""The :class:`Worker`: a network client that registers, pops tasks and records results.

The worker is assembled from components with one job each, and this module
wires them together:

- :class:`~rushpy.session.Session`: the connection, the event listener and
  the task group of its background work;
- :class:`~rushpy.reads.Reads`: every read method (decentralized workers read
  everything a controller reads);

- :class:`~rushpy.worker.stop.StopState`: whether and how to stop, fed by
  every stop source;
- :mod:`~rushpy.worker.registration`: registration, heartbeat (with its
  sidecar process, :mod:`~rushpy.worker.sidecar`), coming back after being
  declared lost, exit record;
- :class:`~rushpy.worker.claims.Claims`: pops, blocking moves, claims;
- :class:`~rushpy.worker.results.Results`: results and failures;
- :class:`~rushpy.worker.tracking.TaskTracker`: attempts and cancellations of
  the claimed tasks.

Background work (the listener, the heartbeat, the blocking moves, the
stop-request watcher) runs in the session's task group, cancelled first on
exit, before the worker records how it ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from rushpy.config import RedisConfig, heartbeat_settings, validate_identifier
from rushpy.keys import DEFAULT_PREFIX, Keys
from rushpy.log_methods import LogMethods
from rushpy.logs import get_logger
from rushpy.lost import LostWorkerDetector
from rushpy.read_methods import ReadMethods
from rushpy.reads import LostWatch, Reads
from rushpy.session import Session
from rushpy.store import DEFAULT_MAX_TASK_BYTES, Store, new_worker_id
from rushpy.worker.backoff import Backoff
from rushpy.worker.claims import Claims
from rushpy.worker.inputs import TaskInputs
from rushpy.worker.logsink import LogSink
from rushpy.worker.registration import Heartbeat, Presence, crash_error, record_exit, register
from rushpy.worker.results import Results
from rushpy.worker.sidecar import HeartbeatSidecar
from rushpy.worker.stop import StopState
from rushpy.worker.task_methods import TaskMethods
from rushpy.worker.tracking import TaskTracker

__all__ = ["EXIT_TIMEOUT", "Components", "Worker", "components"]

log = get_logger("rushpy.worker")

EXIT_TIMEOUT = 10.0
"""Seconds the shielded exit of a worker (settling its tasks, recording its state) may take."""


@dataclass(frozen=True, slots=True)
class Components:
    """The parts of a :class:`Worker` that the worker loop drives (not public API).

    Attributes:
        stop: The worker's stop state.
        tracker: Attempts and cancellations of the claimed tasks.
        results: Writes outcomes.
        store: The worker's store (a failed worker loop records its error).
        inputs: Constants, large objects and the worker's random stream.

    """

    stop: StopState
    tracker: TaskTracker
    results: Results
    store: Store
    inputs: TaskInputs


def components(worker: Worker) -> Components:
    """The components of ``worker``, for :func:`~rushpy.worker.run_function`."""
    return worker._components


class Worker(ReadMethods, LogMethods, TaskMethods):
    """A worker of a network.

    Example:
        >>> async with Worker("my-net") as worker:
        ...     task = await worker.pop_task(timeout=1)
        ...     if task:
        ...         await worker.finish_tasks([task.key], [{"y": task.xs["x"] ** 2}])

    Args:
        network_id: Id of the network.
        config: Server settings; default :meth:`RedisConfig.from_env`.
        worker_id: Id to register under; a unique one is generated if omitted.
        prefix: First component of every key.
        heartbeat_period: Seconds between heartbeats; ``None`` keeps no heartbeat.
        heartbeat_expire: Seconds after the last beat at which the heartbeat key
            expires (default three periods; at least two).
        max_task_bytes: Largest encoded size of one task's results or condition
            (and of tasks it creates); a bigger one raises ``TaskError``.
        heartbeat_sidecar: Start a sidecar process that beats while the event
            loop is blocked (:mod:`rushpy.worker.sidecar`). ``False`` when the
            process beats for all its workers with one sidecar
            (``--workers-per-process``, :mod:`rushpy.worker.process`).

    Attributes:
        worker_id: Id the worker registered under.
        heartbeat: ``(period, expire)`` in seconds, or ``None`` without a heartbeat.

    """

    def __init__(
        self,
        network_id: str,
        config: RedisConfig | str | None = None,
        *,
        worker_id: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        heartbeat_period: float | None = None,
        heartbeat_expire: float | None = None,
        max_task_bytes: int = DEFAULT_MAX_TASK_BYTES,
        heartbeat_sidecar: bool = True,
    ) -> None:
        self._own_sidecar = heartbeat_sidecar
        self.heartbeat = heartbeat_settings(heartbeat_period, heartbeat_expire)
        self.worker_id = validate_identifier(worker_id or new_worker_id(), "worker id")
        self._keys = Keys(network_id, prefix)
        self._session = Session(
            network_id,
            config,
            prefix=prefix,
            channels=self._stop_channels(),
            on_event=self._on_event,
            owner="Worker",
            max_task_bytes=max_task_bytes,
        )
        self._store = self._session.store
        self._reads = Reads(self._session)
        self._lost = LostWorkerDetector(self._store)
        self._lost_watch = LostWatch(detect=self._lost.detect, workers_left=self._lost.workers_left)
        self._stop = StopState(self.worker_id)
        self._presence = Presence(
            self._store, self.worker_id, None if self.heartbeat is None else self.heartbeat[1], self._stop
        )
        self._tracker = TaskTracker(self.worker_id)
        self._claims = Claims(
            self._store,
            self._keys,
            self.worker_id,
            self._stop,
            self._tracker,
            rejoin=self._presence.not_running,
        )
        self._results = Results(self._store, self.worker_id, self._tracker)
        self._log_sink = LogSink(self._store, self.worker_id, self._results.counts)
        self._inputs = TaskInputs(self._store, self.worker_id, tracker=self._tracker)
        self._components = Components(self._stop, self._tracker, self._results, self._store, self._inputs)
        self._heartbeat = None if self.heartbeat is None else self._new_heartbeat(*self.heartbeat)

    def _new_heartbeat(self, period: float, expire: float) -> Heartbeat:
        def sidecar() -> HeartbeatSidecar:
            return HeartbeatSidecar(
                self._session.config, self._keys, self.worker_id, period=period, expire=expire
            )

        return Heartbeat(
            self._store,
            self.worker_id,
            period,
            expire,
            on_refused=self._presence.not_running,
            sidecar=sidecar if self._own_sidecar else None,
        )

    def __repr__(self) -> str:
        return f"Worker(network_id={self.network_id!r}, worker_id={self.worker_id!r}, config={self.config})"

    async def detect_lost_workers(self) -> list[str]:
        """Find workers that are gone and settle their tasks; returns the ids found in this call.

        As :meth:`Controller.detect_lost_workers <rushpy.Controller.detect_lost_workers>`,
        without restarts: a worker loop can watch its peers.
        """
        return await self._lost.detect()

    # -- events -------------------------------------------------------------------------
    def _stop_channels(self) -> list[str]:
        return [
            self._keys.terminate_signal(self.worker_id),
            self._keys.terminate_all,
            self._keys.kill_signal(self.worker_id),
        ]

    def _on_event(self, channel: str, data: bytes) -> None:
        self._reads.on_event(channel, data)
        if channel == self._keys.events:
            if data.startswith(b"C "):
                for raw in data[2:].split(b" "):
                    self._tracker.cancel(raw.decode())
        elif channel == self._keys.kill_signal(self.worker_id):
            self._stop.kill("kill requested through the network")
        elif channel == self._keys.terminate_all:
            self._stop.request_drain()
        elif channel == self._keys.terminate_signal(self.worker_id):
            self._stop.terminate("terminate requested through the network")

    async def _watch_stop_requests(self) -> None:
        """Re-read the stop keys whenever a stop channel moves.

        Messages apply at once (:meth:`_on_event`); the keys are the record. A
        listener that lost its subscription bumps every channel without a
        message (some may have been missed): reading the keys then catches a
        request sent while it was away.
        """
        events = self._session.events
        channels = self._stop_channels()
        backoff = Backoff("reading stop requests")
        seen = [events.counter(c) for c in channels]
        owed = False  # a move was seen and the keys not read since
        while True:
            try:
                if not owed:
                    await events.wait(channels, seen, None)
                    # Taken before the read: a message during the read moves past it.
                    seen = [events.counter(c) for c in channels]
                    owed = True
                own, drain, kill = await self._store.workers.stop_requests(self.worker_id)
            except Exception as exc:  # Redis unreachable: retried after a pause
                await backoff.failed(exc)
                continue
            owed = False
            backoff.succeeded()
            self._stop.update(terminate=own, drain=drain, kill=kill)

    # -- life cycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Worker:
        await self._session.__aenter__()
        try:
            task_group = self._session.task_group
            self._claims.start(task_group)
            await register(self._store, self.worker_id, self.heartbeat)
            self._log_sink.start(task_group)  # its records and counts go to Redis from here on
            await self._inputs.load_root_seed()
            if self._heartbeat is not None:
                task_group.start_soon(self._heartbeat.run, name=f"rushpy-heartbeat-{self.worker_id}")
            task_group.start_soon(self._watch_stop_requests, name=f"rushpy-stop-{self.worker_id}")
            # Requests made before the worker subscribed (a drain set by push_tasks).
            own, drain, kill = await self._store.workers.stop_requests(self.worker_id)
            self._stop.update(terminate=own, drain=drain, kill=kill)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        log.debug("worker registered", network=self.network_id, worker_id=self.worker_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            # Its tasks end at once when cancelled (a cancelled blocking move drops
            # its connection), so stopping them takes no deadline.
            await self._session.stop_tasks()
        finally:
            try:
                self._claims.close()
                # Runs even when the caller is being cancelled, within a deadline.
                with anyio.CancelScope(shield=True) as scope:
                    scope.deadline = anyio.current_time() + EXIT_TIMEOUT
                    # A clean stop was asked for (terminate, drain, idle timeout, signal);
                    # any other way out is a crash, left for detection to settle and replace.
                    error = None if self._stop.terminated else crash_error(exc)
                    await record_exit(
                        self._store, self.worker_id, self._stop.final_state, self._stop.reason, error=error
                    )
                    await self._log_sink.close()  # after the exit record: the last lines say why
            finally:
                await self._session.__aexit__(exc_type, exc, tb)

    # -- random stream ------------------------------------------------------------------
    @property
    def seed(self) -> int | None:
        """The worker's own seed (for worker loops): from the network's root seed and the worker id.

        See :func:`rushpy.seeds.worker_seed`; ``None`` when the network has no root seed.
        """
        return self._inputs.seed

    def rng(self) -> Any:
        """The worker's ``numpy.random.Generator`` from :attr:`seed` (or fresh entropy); always the same one.

        Raises:
            WorkerFunctionError: numpy is not installed.

        """
        return self._inputs.rng()

    # -- stopping -----------------------------------------------------------------------
    @property
    def terminated(self) -> bool:
        """Whether the worker was asked to stop (by the controller, a signal, or itself)."""
        return self._stop.terminated

    @property
    def drain_requested(self) -> bool:
        """Whether the network asked every worker to exit once the queue is empty.

        Set by ``push_tasks(..., terminate_workers=True)``; :meth:`pop_tasks` then
        terminates the worker when it finds no task.
        """
        return self._stop.drain_requested

    @property
    def killed(self) -> bool:
        """Whether the worker was asked to stop at once (kill)."""
        return self._stop.killed

    def set_terminated(self, reason: str | None = None) -> None:
        """Ask this worker to stop: loops end after the tasks they are running.

        A :meth:`pop_task` that is waiting returns ``None`` at once. ``reason``
        goes into the worker's status lines (its output and its log).
        """
        self._stop.terminate(reason)

    def set_killed(self, reason: str | None = None) -> None:
        """Ask this worker to stop at once, and record its exit as a kill (state ``killed``).

        :func:`~rushpy.worker.run_function` cancels the tasks in flight and
        returns; on exit those tasks go back to the queue (attempts left) or fail.
        The worker command line calls it on a second SIGINT. ``reason`` goes
        into the worker's status lines.
        """
        self._stop.kill(reason)

    def is_cancelled(self, key: str) -> bool:
        """Whether a task this worker claimed was cancelled (``Controller.cancel_tasks``).

        :func:`~rushpy.worker.run_function` skips or interrupts cancelled tasks
        itself; a worker loop of your own checks this and stops working on the
        task (its outcome would be discarded anyway).
        """
        return self._tracker.is_cancelled(key)
