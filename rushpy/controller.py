"""The :class:`Controller`: pushes tasks, starts and stops workers, reads results."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import anyio

from rushpy.config import RedisConfig, validate_identifier
from rushpy.errors import (
    ConfigError,
    NoStartArgumentsError,
    TaskError,
    WorkerTimeoutError,
)
from rushpy.functions import function_path
from rushpy.keys import DEFAULT_PREFIX
from rushpy.logs import get_logger
from rushpy.lost import LostWorkerDetector, pid_alive
from rushpy.models import Condition, TaskState, WorkerState
from rushpy.pool import PROBE_INTERVAL, SETTLE_TIMEOUT, LocalWorker, LocalWorkerPool
from rushpy.read_methods import ReadMethods
from rushpy.reads import LostWatch, Reads
from rushpy.session import Session
from rushpy.spec import WorkerSpec
from rushpy.validation import (
    broadcast,
    check_keys,
    check_mappings,
    check_max_retries,
    check_positive_seconds,
    check_same_length,
    check_task_timeouts,
    check_timeout,
)

__all__ = ["Controller", "LocalWorker", "StopResult", "next_seed"]

log = get_logger("rushpy.controller")


_MASK64 = (1 << 64) - 1


def next_seed(seed: int) -> int:
    """The seed a retried task gets with ``retry_tasks(..., next_seed=True)``.

    One SplitMix64 step: deterministic (the same seed always gives the same next
    seed, on any machine) and well mixed, so consecutive seeds give unrelated
    random streams.
    """
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def next_seed_of(seed: int | None) -> int | None:
    """:func:`next_seed` of ``seed``, or ``None`` for a task without a seed."""
    return None if seed is None else next_seed(int(seed))


def _check_seeds(seeds: Any, n: int) -> list[int | None]:
    if seeds is None:
        return [None] * n
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise TaskError(f"seeds must be a list with one integer (or None) per task, got {seeds!r:.80}")
    if len(seeds) != n:
        raise TaskError(f"seeds has {len(seeds)} entries but there are {n} tasks; pass one per task")
    for i, seed in enumerate(seeds):
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MASK64
        ):
            raise TaskError(f"invalid seeds[{i}]={seed!r}: use an integer in [0, 2**64), or None")
    return list(seeds)


@dataclass(frozen=True, slots=True)
class StopResult:
    """What :meth:`Controller.stop_workers` did.

    Attributes:
        stopped: Ids of workers asked to stop (terminate) or stopped (kill).
        unknown: Ids that are not workers of the network (reported, not fatal).
        not_running: Ids of workers that had already stopped.

    """

    stopped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    not_running: list[str] = field(default_factory=list)


class Controller(ReadMethods):
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
            and in ``wait_for_tasks(..., detect_lost_workers=True)``.

    """

    def __init__(
        self,
        network_id: str,
        config: RedisConfig | str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        shutdown_timeout: float = 10.0,
        detect_lost_every: float | None = None,
        restart_lost_workers: bool = False,
    ) -> None:
        if detect_lost_every is not None:
            check_positive_seconds(detect_lost_every, "detect_lost_every")
        self._session = Session(
            network_id, config, prefix=prefix, on_event=self._on_event, owner="Controller"
        )
        self._keys = self._session.keys
        self._store = self._session.store
        self._reads = Reads(self._session)
        self.shutdown_timeout = shutdown_timeout
        self.detect_lost_every = detect_lost_every
        self.restart_lost_workers = restart_lost_workers
        self._pool = LocalWorkerPool(
            self.config.to_url(include_password=True), terminate_timeout=shutdown_timeout
        )
        self._lost = LostWorkerDetector(self._store, probe=self._exited_local, starting=self._local_starting)
        self._lost_watch = LostWatch(detect=self._detect_while_waiting, workers_left=self._lost.workers_left)

    def _on_event(self, channel: str, data: bytes) -> None:
        self._reads.on_event(channel, data)

    @property
    def network_id(self) -> str:
        """Id of the network."""
        return self._keys.network_id

    @property
    def config(self) -> RedisConfig:
        """Server settings."""
        return self._session.config

    def __repr__(self) -> str:
        return f"Controller(network_id={self.network_id!r}, config={self.config})"

    async def __aenter__(self) -> Controller:
        await self._session.__aenter__()
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
            with anyio.CancelScope(shield=True):
                if self._session.is_open:
                    # Stop the background checks first: they may restart workers.
                    self._session.task_group.cancel_scope.cancel()
                await self._shutdown_local()
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

    # -- pushing tasks -------------------------------------------------------------------
    async def push_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        seeds: Sequence[int | None] | None = None,
        timeouts: float | Sequence[float | None] | None = None,
        max_retries: int | Sequence[int | None] | None = None,
        terminate_workers: bool = False,
    ) -> list[str]:
        """Queue tasks on the shared FIFO queue; returns their keys in order.

        All tasks travel in one pipelined round trip. Pushing nothing is a no-op.

        Args:
            xss: One mapping of inputs per task.
            xss_extra: Optional extra inputs per task (stored, not passed to the function).
            seeds: One integer seed (or ``None``) per task, stored with it and handed
                to the worker (``PoppedTask.seed``).
            timeouts: Seconds each task may run: one value for all or one per task
                (``None``: no limit). A task past its deadline fails (or retries)
                with a ``TaskTimeout`` condition.
            max_retries: How often a task that fails (its function raises, times out,
                or its worker is lost) goes back to the queue before it fails for
                good: one value for all or one per task (default 0: no retry).
            terminate_workers: Ask every worker to exit once it finds the queue empty.

        """
        tasks = self._task_fields(xss, xss_extra, seeds, timeouts, max_retries)
        keys = await self._store.create_tasks("queued", tasks)
        if terminate_workers:
            await self._store.request_terminate_all()
        return keys

    @staticmethod
    def _task_fields(
        xss: Sequence[Mapping[str, Any]],
        xss_extra: Sequence[Mapping[str, Any] | None] | None,
        seeds: Sequence[int | None] | None,
        timeouts: float | Sequence[float | None] | None,
        max_retries: int | Sequence[int | None] | None,
    ) -> list[dict[str, Any]]:
        xss = check_mappings(xss, "xss")
        extras = broadcast(xss, xss_extra, "xss_extra")
        seed_list = _check_seeds(seeds, len(xss))
        timeout_list = check_task_timeouts(timeouts, len(xss))
        retry_list = check_max_retries(max_retries, len(xss))
        return [
            {"xs": xs, "xs_extra": extra, "seed": seed, "timeout": timeout, "max_retries": retries}
            for xs, extra, seed, timeout, retries in zip(
                xss, extras, seed_list, timeout_list, retry_list, strict=True
            )
        ]

    async def push_priority_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        priority: Sequence[str | None],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        seeds: Sequence[int | None] | None = None,
        timeouts: float | Sequence[float | None] | None = None,
        max_retries: int | Sequence[int | None] | None = None,
    ) -> list[str]:
        """Queue tasks on given workers' own queues; returns keys in input order.

        A task whose worker is unknown, stopped or lost (or whose entry is
        ``None``) goes to the shared queue instead, so nothing waits forever.

        Args:
            xss: One mapping of inputs per task.
            priority: One worker id (or ``None``) per task.
            xss_extra: Optional extra inputs per task.
            seeds: As for :meth:`push_tasks`.
            timeouts: As for :meth:`push_tasks`.
            max_retries: As for :meth:`push_tasks`; a retry goes to the shared queue.

        """
        tasks = self._task_fields(xss, xss_extra, seeds, timeouts, max_retries)
        priority_list = check_same_length(tasks, priority, "priority")
        for wid in priority_list:
            if wid is not None and not isinstance(wid, str):
                raise TaskError(f"priority entries are worker ids (str) or None, got {wid!r}")
        candidates = sorted({w for w in priority_list if w is not None})
        running = dict(zip(candidates, await self._store.running_worker_flags(candidates), strict=True))
        rerouted = sorted(w for w, up in running.items() if not up)
        if rerouted:
            log.warning("workers not running; their tasks go to the shared queue", workers=rerouted)
        groups: dict[str | None, list[int]] = {}
        for i, wid in enumerate(priority_list):
            target = wid if wid is not None and running.get(wid) else None
            groups.setdefault(target, []).append(i)
        targets = list(groups)
        created = await self._store.create_queued_groups(
            [
                (
                    self._keys.queued if t is None else self._keys.priority_queue(t),
                    [tasks[i] for i in groups[t]],
                )
                for t in targets
            ]
        )
        keys: list[str] = [""] * len(tasks)
        for target, new_keys in zip(targets, created, strict=True):
            for i, key in zip(groups[target], new_keys, strict=True):
                keys[i] = key
        return keys

    async def push_finished_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        yss: Sequence[Mapping[str, Any]],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
        yss_extra: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Record tasks that were evaluated elsewhere as finished (e.g. a warm start)."""
        xss = check_mappings(xss, "xss")
        yss = check_mappings(yss, "yss")
        ys_list = broadcast(xss, yss, "yss")
        xe = broadcast(xss, xss_extra, "xss_extra")
        ye = broadcast(xss, yss_extra, "yss_extra")
        now = dt.datetime.now(dt.UTC)
        tasks = [
            {"xs": x, "ys": y, "xs_extra": a, "ys_extra": b}
            for x, y, a, b in zip(xss, ys_list, xe, ye, strict=True)
        ]
        return await self._store.create_tasks(
            "finished", tasks, common={"started_at": now, "finished_at": now}
        )

    async def push_failed_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        conditions: Sequence[Condition | BaseException | Mapping[str, Any] | str],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Record tasks as failed with a condition each (exception, message or mapping)."""
        xss = check_mappings(xss, "xss")
        condition_list = broadcast(xss, conditions, "conditions")
        if None in condition_list:
            raise TaskError("conditions must not contain None: pass an exception, a message or a mapping")
        extras = broadcast(xss, xss_extra, "xss_extra")
        try:
            conds = [Condition.coerce(c).to_dict() for c in condition_list if c is not None]
        except TypeError as exc:
            raise TaskError(str(exc)) from None
        tasks = [{"xs": x, "xs_extra": e, "condition": c} for x, e, c in zip(xss, extras, conds, strict=True)]
        now = dt.datetime.now(dt.UTC)
        return await self._store.create_tasks("failed", tasks, common={"finished_at": now})

    async def empty_queue(self) -> int:
        """Remove every queued task (shared and priority queues); they become failed.

        Their condition says they were removed from the queue. Returns how many.
        """
        condition = Condition("Removed", "removed from the queue by empty_queue()")
        moved = await self._store.dequeue(self._keys.queued, condition)
        for wid in await self._store.worker_ids():
            moved += await self._store.dequeue(self._keys.priority_queue(wid), condition)
        return moved

    async def cancel_tasks(self, keys: Sequence[str]) -> list[str]:
        """Cancel tasks that are queued or running; returns the keys cancelled.

        Each ends ``failed`` with a ``Cancelled`` condition and is never retried
        automatically. :meth:`retry_tasks` re-queues a task cancelled before it
        started (its attempts are left); one cancelled while running needs
        ``ignore_max_retries=True`` once its attempts are used up.
        A running task is interrupted on its worker: an ``async`` function is
        cancelled, a child process (plain function with a timeout) killed, a
        thread (other plain functions) interrupted at its next Python bytecode.
        A result that still arrives is discarded. Keys already finished or failed
        are left alone and not returned.
        """
        keys = list(dict.fromkeys(check_keys(keys)))
        condition = Condition("Cancelled", "the task was cancelled by cancel_tasks()")
        cancelled: list[str] = []
        todo = keys
        for _ in range(3):
            # A worker that registered after the lists were read may hold a key in
            # its pending list: look again for keys that are still open.
            queued, running = await self._store.cancel(todo, condition)
            cancelled += queued + running
            done = set(cancelled)
            todo = [k for k in todo if k not in done]
            if not todo:
                break
            snap = await self._store.snapshot()
            waiting = set(snap[TaskState.QUEUED]) | set(snap[TaskState.RUNNING])
            todo = [k for k in todo if k in waiting]
            if not todo:
                break
        return [k for k in keys if k in set(cancelled)]

    async def retry_tasks(
        self,
        keys: Sequence[str],
        ignore_max_retries: bool = False,
        next_seed: bool = False,
    ) -> list[str]:
        """Put failed tasks back in the queue; returns the keys re-queued.

        The attempt count and the ``conditions`` history stay; the final
        ``condition`` is cleared.

        Args:
            keys: Keys of failed tasks. Keys that are not failed are skipped (logged).
            ignore_max_retries: Also re-queue tasks whose attempts are used up
                (attempts > ``max_retries``), e.g. cancelled or finally failed ones.
            next_seed: Give each re-queued task with a seed the next seed
                (:func:`next_seed`), so the retry draws different random numbers.

        """
        keys = list(dict.fromkeys(check_keys(keys)))
        if not keys:
            return []
        seeds: list[int | None] | None = None
        if next_seed:
            rows = await self._store.read_tasks(keys)
            seeds = [next_seed_of(row.get("seed")) if row is not None else None for row in rows]
        retried = await self._store.retry(keys, ignore_max_retries=ignore_max_retries, seeds=seeds)
        skipped = len(keys) - len(retried)
        if skipped:
            log.warning(
                "retry_tasks: some tasks were not re-queued (not failed, or attempts used up "
                "without ignore_max_retries=True)",
                n=skipped,
            )
        return retried

    # -- workers (processes: rushpy.pool; command line and start arguments: rushpy.spec) ------
    @property
    def _local(self) -> dict[str, LocalWorker]:
        # Read-only view of the pool for code not yet asking the pool directly.
        return self._pool.workers

    async def start_local_workers(
        self,
        n_workers: int,
        fun: Callable[..., Any] | str | None = None,
        *,
        concurrency: int = 1,
        heartbeat_period: float | None = None,
        heartbeat_expire: float | None = None,
        idle_timeout: float | None = None,
        log_level: str = "warning",
    ) -> list[str]:
        """Start ``n_workers`` worker processes on this host; returns their ids.

        With ``fun`` the start arguments (function and every option below) are
        stored in the network, so workers started later with
        ``python -m rushpy.worker --network ID`` run the same function with the
        same options. Without ``fun`` the stored start arguments are used, and
        options given here with a value other than their default override them
        for these processes. Calling it again adds workers. The processes die
        with this process (see :mod:`rushpy.pool`).

        Args:
            n_workers: How many processes to start.
            fun: The function (importable, or defined in the running script) or its
                path ``module:function``; default the stored start arguments.
            concurrency: Tasks in flight per worker.
            heartbeat_period: Seconds between the workers' heartbeats (``None``: none).
            heartbeat_expire: Seconds until a heartbeat expires (default 3 periods).
            idle_timeout: Each worker exits once it found the queue empty for this
                many seconds (``None``: workers wait for work until stopped).
            log_level: Log level of the workers (their output goes to log files,
                see :attr:`local_workers`).

        Raises:
            ConfigError: an option is invalid.
            NoStartArgumentsError: no ``fun`` and the network stores no start arguments.

        """
        if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 1:
            raise ConfigError(f"invalid n_workers={n_workers!r}: start at least 1 worker")
        options: dict[str, Any] = {
            "concurrency": concurrency,
            "heartbeat_period": heartbeat_period,
            "heartbeat_expire": heartbeat_expire,
            "idle_timeout": idle_timeout,
            "log_level": log_level,
        }
        spec = WorkerSpec(
            network_id=self.network_id,
            prefix=self._keys.prefix,
            fun=None if fun is None else function_path(fun),
            **options,
        )
        if spec.fun is not None:
            await self._store.set_start_args(spec.to_start_args())
        else:
            stored = await self._store.get_start_args()
            if stored is None:
                raise NoStartArgumentsError(
                    f"network {self.network_id!r} has no stored start arguments: pass fun="
                )
            defaults = {name: info.default for name, info in WorkerSpec.model_fields.items()}
            given = {name: value for name, value in options.items() if value != defaults[name]}
            spec = WorkerSpec(network_id=self.network_id, prefix=self._keys.prefix, **given).resolve(stored)
        return self._spawn(n_workers, spec)

    def _spawn(self, n_workers: int, spec: WorkerSpec) -> list[str]:
        return self._pool.spawn(spec, n_workers)

    @property
    def local_workers(self) -> dict[str, LocalWorker]:
        """Worker processes started by this controller, by id."""
        return self._pool.workers

    def worker_script(
        self,
        fun: Callable[..., Any] | str | None = None,
        *,
        concurrency: int | None = None,
        python: str = "python",
    ) -> str:
        """The shell command that starts a worker of this network on any host.

        The command never contains the password: set ``RUSHPY_REDIS_PASSWORD`` in
        the worker's environment when the server needs one. Without ``fun`` the
        worker uses the stored start arguments.

        Raises:
            ConfigError: ``concurrency`` is invalid.
            WorkerFunctionError: ``fun`` cannot be found by import.

        """
        given: dict[str, Any] = {"network_id": self.network_id}
        if self._keys.prefix != DEFAULT_PREFIX:
            given["prefix"] = self._keys.prefix
        if fun is not None:
            given["fun"] = function_path(fun)
        if concurrency is not None:
            given["concurrency"] = concurrency
        argv = WorkerSpec(**given).to_argv()
        url = ["--url", self.config.to_url(include_password=False)]
        return shlex.join([python, "-m", "rushpy.worker", *argv[:2], *url, *argv[2:]])

    async def wait_for_workers(
        self,
        n: int | None = None,
        worker_ids: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[str]:
        """Wait until ``n`` workers run; with ``worker_ids``, ``n`` of those workers.

        ``n`` defaults to every id in ``worker_ids``, else to the number of local
        workers started. ``timeout=0`` checks once. Returns the running worker ids.

        Raises:
            ConfigError: no ``n`` and no ``worker_ids`` and no local workers, an
                invalid ``n`` or id, or ``n`` larger than the number of ``worker_ids``.
            WorkerTimeoutError: not enough workers came up in time.
            WorkerError: a local worker process exited before it registered (the
                message includes the end of its output).

        """
        check_timeout(timeout, allow_none=True)
        ids: list[str] | None = None
        if worker_ids is not None:
            if isinstance(worker_ids, str):
                raise ConfigError(f"invalid worker_ids={worker_ids!r}: pass a list of ids")
            ids = list(dict.fromkeys(validate_identifier(w, "worker id") for w in worker_ids))
        if n is None:
            n = len(ids) if ids is not None else len(self._pool)
            if ids is None and n == 0:
                raise ConfigError("wait_for_workers() needs n= or worker_ids= (no local workers started)")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"invalid n={n!r}: use an integer >= 0")
        if ids is not None and n > len(ids):
            raise ConfigError(
                f"invalid n={n}: it counts workers among worker_ids, which has only {len(ids)} "
                f"distinct id(s); pass n <= {len(ids)} or more ids"
            )
        events = self._session.events
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = events.counter(self._keys.events)
            running = await self._store.worker_ids(WorkerState.RUNNING)
            running_set = set(running)
            up = len(running) if ids is None else sum(w in running_set for w in ids)
            if up >= n:
                return running
            self._check_local_alive(await self._store.worker_ids())
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                missing = [w for w in ids or [] if w not in running_set]
                raise WorkerTimeoutError(
                    f"{up} worker(s) running after {timeout} s, waited for {n}"
                    + (f" of {ids}; missing ids {missing}" if missing else "")
                    + "; check the worker logs or raise the timeout"
                )
            # Registrations publish on the events channel; local process deaths do
            # not, so look at the processes again every PROBE_INTERVAL.
            step = PROBE_INTERVAL if len(self._pool) else remaining
            if remaining is not None and step is not None:
                step = min(step, remaining)
            await events.wait([self._keys.events], [seen], step)

    def _check_local_alive(self, registered: Sequence[str]) -> None:
        self._pool.check_started(set(registered))

    async def stop_workers(
        self,
        type: Literal["terminate", "kill"] = "terminate",  # noqa: A002 - name from the contract
        worker_ids: Sequence[str] | None = None,
    ) -> StopResult:
        """Stop workers (default: all running).

        ``terminate`` asks them to finish the tasks they run and exit. ``kill``
        stops local processes at once (SIGKILL); their running tasks fail with a
        condition naming the worker, and tasks they popped go back to the queue.
        Unknown ids are reported in the result and logged, not raised.
        """
        if type not in ("terminate", "kill"):
            raise ConfigError(f"invalid type={type!r}: use 'terminate' or 'kill'")
        known = set(await self._store.worker_ids())
        running = set(await self._store.worker_ids(WorkerState.RUNNING))
        if worker_ids is None:
            targets = sorted(running)
            unknown: list[str] = []
        else:
            targets = [w for w in worker_ids if w in known]
            unknown = [w for w in worker_ids if w not in known]
        if unknown:
            log.warning("stop_workers: unknown worker ids", unknown=unknown)
        result = StopResult(unknown=unknown)
        for wid in targets:
            if wid not in running and not self._pool.is_alive(wid):
                result.not_running.append(wid)
                continue
            result.stopped.append(wid)
        if type == "terminate":
            await self._store.request_terminate(result.stopped)
            return result
        for wid in result.stopped:
            await self._kill(wid)
        return result

    async def _kill(self, worker_id: str) -> None:
        if not await self._pool.kill(worker_id):
            info = await self._store.worker_infos([worker_id])
            pid = info[0].pid if info else None
            if (
                info
                and info[0].hostname == socket.gethostname()
                and pid
                and int(pid) != os.getpid()  # an in-process worker: never kill ourselves
                and pid_alive(int(pid))
            ):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
            # A remote (or in-process) worker cannot be signalled from here: its
            # kill key makes it stop at once. Either way its tasks are settled
            # below, so a result it still sends is discarded (first writer wins).
            await self._store.request_kill([worker_id])
        await self._settle_killed(worker_id)

    async def _settle_killed(self, worker_id: str) -> None:
        """Record a killed worker and settle its tasks (once, first writer wins)."""
        if await self._store.set_worker_state(worker_id, WorkerState.KILLED):
            settled = await self._store.requeue_worker_tasks(
                worker_id,
                Condition("WorkerKilled", f"worker {worker_id} was killed while running the task"),
            )
            if settled.requeued or settled.failed:
                log.info(
                    "settled the tasks of a killed worker",
                    worker_id=worker_id,
                    requeued=len(settled.requeued),
                    failed=len(settled.failed),
                )
        await self._store.publish_event()

    # -- lost workers ------------------------------------------------------------------------
    def _exited_local(self) -> dict[str, str]:
        """Local worker processes that exited, with the reason (lost-worker evidence)."""
        return {
            wid: f"its process exited with code {code}"
            for wid, local in self._local.items()
            if (code := local.process.poll()) is not None
        }

    def _local_starting(self) -> bool:
        """Whether local worker processes are alive (they count as workers left)."""
        return any(w.process.poll() is None for w in self._local.values())

    async def detect_lost_workers(self, restart_local_workers: bool = False) -> list[str]:
        """Find workers that are gone and settle their tasks; returns the ids found in this call.

        A worker is lost when its heartbeat expired, when it was started by this
        controller and its process exited, or when it runs on this host without a
        heartbeat and its process is gone. Its popped tasks go back to the queue;
        its running tasks go back while attempts remain (``max_retries``), else
        fail with a ``WorkerLost`` condition naming it. Each lost worker is
        reported by exactly one call, even with several detectors.

        Args:
            restart_local_workers: Start a replacement for every lost worker that
                this controller started (same function and options).

        """
        found = await self._lost.detect()
        if restart_local_workers:
            # Replacements too may be killed before they register (never running,
            # so never "lost"): restart those as well, or the pool would shrink. A
            # process that exited on its own before registering (bad function,
            # no server) is not restarted: it would fail again, forever.
            registered = set(await self._store.worker_ids())
            stillborn = [
                w
                for w, p in self._local.items()
                if (code := p.process.poll()) is not None and code < 0 and w not in registered
            ]
            await self._restart_local([*found, *stillborn])
        return found

    async def _detect_while_waiting(self) -> list[str]:
        return await self.detect_lost_workers(restart_local_workers=self.restart_lost_workers)

    async def _restart_local(self, worker_ids: Sequence[str]) -> list[str]:
        # A replacement runs what the lost worker ran (its spec), under a new id.
        return await self._pool.restart(worker_ids)

    async def _shutdown_local(self) -> None:
        """Stop the local workers (SIGTERM, then SIGKILL after ``shutdown_timeout``).

        Shielded: it runs to the end even when the controller's task is
        cancelled; if it is interrupted anyway (a second Ctrl-C), the pool kills
        every process at once. Workers it had to kill are recorded as killed.
        """
        if not self._pool.alive():
            return
        killed = await self._pool.close(self.shutdown_timeout)
        with anyio.CancelScope(shield=True), anyio.move_on_after(SETTLE_TIMEOUT):
            for wid in killed:
                try:
                    await self._settle_killed(wid)
                except Exception as exc:  # the server may be gone; lost-worker detection settles later
                    log.warning("could not record a killed worker", worker_id=wid, error=str(exc))

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
            await self._store.request_terminate(await self._store.worker_ids(WorkerState.RUNNING))
        await self._store.delete_all(keep_workers=not workers)
        self.reset_cache()
