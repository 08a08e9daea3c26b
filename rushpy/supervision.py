"""The worker-management methods of the Controller: start, wait for, stop, and watch workers.

:class:`WorkerMethods` holds no state and defines no hook. The work is done by
components the controller owns: its :class:`~rushpy.pool.LocalWorkerPool`
(processes), its :class:`~rushpy.lost.LostWorkerDetector` and the store;
:class:`~rushpy.spec.WorkerSpec` builds every worker command line.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from rushpy.config import validate_identifier
from rushpy.deadline import call_deadline
from rushpy.errors import ConfigError, NoStartArgumentsError, WorkerTimeoutError
from rushpy.functions import function_path
from rushpy.keys import DEFAULT_PREFIX, Keys
from rushpy.logs import get_logger
from rushpy.loop_args import check_code_choice
from rushpy.lost import LostWorkerDetector, pid_alive, settle_worker
from rushpy.models import Condition, WorkerState
from rushpy.pool import PROBE_INTERVAL, SETTLE_TIMEOUT, LocalWorker, LocalWorkerPool
from rushpy.session import Session
from rushpy.signing import StartArgsPolicy
from rushpy.spec import WorkerSpec
from rushpy.store import Store
from rushpy.task_data import TaskData
from rushpy.validation import check_count, check_timeout

__all__ = ["StopResult", "WorkerMethods"]

log = get_logger("rushpy.controller")


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


class WorkerMethods:
    """Methods that manage workers; the owner sets the attributes annotated below."""

    _session: Session
    _store: Store
    _keys: Keys
    _pool: LocalWorkerPool
    _lost: LostWorkerDetector
    _task_data: TaskData
    shutdown_timeout: float
    restart_lost_workers: bool

    # -- workers (processes: rushpy.pool; command line and start arguments: rushpy.spec) ------
    async def start_local_workers(
        self,
        n_workers: int,
        fun: Callable[..., Any] | str | None = None,
        *,
        worker_loop: Callable[..., Any] | str | None = None,
        concurrency: int = 1,
        workers_per_process: int = 1,
        heartbeat_period: float | None = None,
        heartbeat_expire: float | None = None,
        idle_timeout: float | None = None,
        log_level: str = "warning",
        constants: Mapping[str, Any] | None = None,
        allow_pickle: bool = False,
        **loop_args: Any,
    ) -> list[str]:
        """Start ``n_workers`` workers in processes on this host; returns their ids.

        With ``fun`` (or ``worker_loop``) the start arguments (the function or
        loop, its loop arguments and every option below) are stored in the
        network, so workers started later with ``python -m rushpy.worker
        --network ID`` run the same code with the same options. Without either
        the stored start arguments are used, and options given here with a
        value other than their default override them for these processes.
        Calling it again adds workers. The processes die with this process
        (see :mod:`rushpy.pool`).

        Args:
            n_workers: How many workers to start.
            fun: The function (importable, or defined in the running script) or its
                path ``module:function``; default the stored start arguments.
            worker_loop: Instead of ``fun``: a worker loop, ``async def
                loop(worker, **loop_args)``, run once by each worker
                (decentralized mode, see ``docs/decentralized.md``).
            **loop_args: Keyword arguments of ``worker_loop``: plain data (``None``,
                bools, numbers, strings, lists, mappings with string keys),
                stored once with the start arguments.
            concurrency: Tasks in flight per worker.
            workers_per_process: Workers each process runs as coroutines (the
                last process the rest): many workers for tasks that wait rather
                than compute, at the memory of a few processes. They register as
                ``<process id>-1``, ``-2``, ...; each has its own heartbeat. Not
                stored: workers started elsewhere choose their own.
            heartbeat_period: Seconds between the workers' heartbeats (``None``: none).
            heartbeat_expire: Seconds until a heartbeat expires (default 3 periods).
            idle_timeout: Each worker exits once it found the queue empty for this
                many seconds (``None``: workers wait for work until stopped).
            log_level: Log level of the workers (their output goes to log files,
                see :attr:`local_workers`).
            constants: Values stored once in the network (replacing constants of
                the same names) and passed to every call of the function as keyword
                arguments next to the task's inputs; every worker of the network
                gets them, also those started elsewhere (see ``docs/guide.md``,
                "Constants and large objects").
            allow_pickle: The workers accept signed pickled callables
                (``--allow-pickle``), as ``rushpy.Executor(pickle=True)`` needs.

        Raises:
            TaskError: a constant's name is not an identifier, or its value cannot
                be stored.
            ConfigError: an option is invalid, both ``fun`` and ``worker_loop`` are
                given, loop arguments come without ``worker_loop``, or a loop
                argument is not plain data.
            WorkerFunctionError: ``fun`` or ``worker_loop`` cannot be found by import.
            NoStartArgumentsError: no ``fun`` and the network stores no start arguments.
            UntrustedCodeError: no ``fun`` and the stored start arguments are neither
                signed with this process's key (``RUSHPY_SIGNING_KEY``, or its own
                when none is set) nor name a module of ``RUSHPY_ALLOW_MODULES``
                (see ``docs/security.md``).

        """
        check_count(n_workers, "n_workers", minimum=1, hint="start at least 1 worker")
        check_code_choice(fun, worker_loop, loop_args)
        options: dict[str, Any] = {
            "concurrency": concurrency,
            "workers_per_process": workers_per_process,
            "heartbeat_period": heartbeat_period,
            "heartbeat_expire": heartbeat_expire,
            "idle_timeout": idle_timeout,
            "log_level": log_level,
            "allow_pickle": allow_pickle,
        }
        code: dict[str, Any] = {}
        if fun is not None:
            code["fun"] = function_path(fun)
        if worker_loop is not None:
            code.update(worker_loop=function_path(worker_loop), loop_args=loop_args)
        spec = WorkerSpec(network_id=self._keys.network_id, prefix=self._keys.prefix, **code, **options)
        if code:
            # Signed (RUSHPY_SIGNING_KEY, else this process's own key): workers run
            # stored start arguments only if signed with a key they hold.
            await self._store.workers.set_start_args(spec.signed_start_args())
        else:
            stored = await self._store.workers.get_start_args()
            if stored is None:
                raise NoStartArgumentsError(
                    f"network {self._keys.network_id!r} has no stored start arguments: pass fun="
                )
            defaults = {name: info.default for name, info in WorkerSpec.model_fields.items()}
            given = {name: value for name, value in options.items() if value != defaults[name]}
            base = WorkerSpec(network_id=self._keys.network_id, prefix=self._keys.prefix, **given)
            # Whoever can write the network's keys can rewrite what is stored: run it only
            # if signed with our key or in a module of RUSHPY_ALLOW_MODULES.
            spec = base.resolve(stored, StartArgsPolicy.from_env(process_key=True), where="controller")
        if constants is not None:
            await self._task_data.set_constants(constants)
        return self._pool.spawn(spec, n_workers)

    @property
    def local_workers(self) -> dict[str, LocalWorker]:
        """Worker processes started by this controller, by id."""
        return self._pool.workers

    def worker_script(
        self,
        fun: Callable[..., Any] | str | None = None,
        *,
        worker_loop: Callable[..., Any] | str | None = None,
        concurrency: int | None = None,
        python: str = "python",
        **loop_args: Any,
    ) -> str:
        """The shell command that starts a worker of this network on any host.

        The command never contains the password: set ``RUSHPY_REDIS_PASSWORD`` in
        the worker's environment when the server needs one. Without ``fun`` or
        ``worker_loop`` the worker uses the stored start arguments, if it holds
        the key that signed them (``RUSHPY_SIGNING_KEY``) or allows their module
        (``--allow-module``; see ``docs/security.md``). With ``worker_loop``
        the loop arguments are on the command line (``--loop-arg NAME=JSON``).

        Raises:
            ConfigError: ``concurrency`` is invalid, both ``fun`` and
                ``worker_loop`` are given, or loop arguments come without
                ``worker_loop`` or are not plain data.
            WorkerFunctionError: ``fun`` or ``worker_loop`` cannot be found by import.

        """
        check_code_choice(fun, worker_loop, loop_args)
        given: dict[str, Any] = {"network_id": self._keys.network_id}
        if self._keys.prefix != DEFAULT_PREFIX:
            given["prefix"] = self._keys.prefix
        if fun is not None:
            given["fun"] = function_path(fun)
        if worker_loop is not None:
            given["worker_loop"] = function_path(worker_loop)
        if loop_args:
            given["loop_args"] = loop_args
        if concurrency is not None:
            given["concurrency"] = concurrency
        argv = WorkerSpec(**given).to_argv()
        url = ["--url", self._session.config.to_url(include_password=False, include_options=True)]
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
            ConnectionFailedError: the server is unreachable, or hung past the
                timeout plus ``min(socket_timeout, 5)`` seconds.

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
        check_count(n, "n", minimum=0, hint="use an integer >= 0")
        if ids is not None and n > len(ids):
            raise ConfigError(
                f"invalid n={n}: it counts workers among worker_ids, which has only {len(ids)} "
                f"distinct id(s); pass n <= {len(ids)} or more ids"
            )
        with call_deadline(timeout):  # a hung server cannot hold the wait past its timeout
            events = self._session.events
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                seen = events.counter(self._keys.worker_events)
                running = await self._store.workers.worker_ids(WorkerState.RUNNING)
                running_set = set(running)
                up = len(running) if ids is None else sum(w in running_set for w in ids)
                if up >= n:
                    return running
                self._pool.check_started(set(await self._store.workers.worker_ids()))
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    missing = [w for w in ids or [] if w not in running_set]
                    raise WorkerTimeoutError(
                        f"{up} worker(s) running after {timeout} s, waited for {n}"
                        + (f" of {ids}; missing ids {missing}" if missing else "")
                        + "; check the worker logs or raise the timeout"
                    )
                # Registrations publish on the worker-events channel; local process deaths
                # do not, so look at the processes again every PROBE_INTERVAL.
                step = PROBE_INTERVAL if len(self._pool) else remaining
                if remaining is not None and step is not None:
                    step = min(step, remaining)
                await events.wait([self._keys.worker_events], [seen], step)

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
        known = set(await self._store.workers.worker_ids())
        running = set(await self._store.workers.worker_ids(WorkerState.RUNNING))
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
            await self._store.workers.request_terminate(result.stopped)
            return result
        for wid in result.stopped:
            await self._kill(wid)
        return result

    async def _kill(self, worker_id: str) -> None:
        if self._pool.shares_process(worker_id):
            # Its process runs other workers, which go on: its kill key stops this one.
            await self._pool.kill(worker_id)
            await self._store.workers.request_kill([worker_id])
        elif not await self._pool.kill(worker_id):
            info = await self._store.workers.worker_infos([worker_id])
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
            await self._store.workers.request_kill([worker_id])
        await self._settle_killed(worker_id)

    async def _settle_killed(self, worker_id: str) -> None:
        """Record a killed worker and settle its tasks (once, first writer wins)."""
        condition = Condition("WorkerKilled", f"worker {worker_id} was killed while running the task")
        settled = await settle_worker(self._store, worker_id, WorkerState.KILLED, condition)
        if settled is not None and (settled.requeued or settled.failed):
            log.info(
                "settled the tasks of a killed worker",
                worker_id=worker_id,
                requeued=len(settled.requeued),
                failed=len(settled.failed),
            )
        await self._store.workers.publish_worker_change()

    # -- lost workers ------------------------------------------------------------------------
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
        if not restart_local_workers:
            return await self._lost.detect()
        killed: list[str] = []

        async def kill_local(ids: list[str]) -> None:
            # Killed before they are recorded lost: a lost process that still lives
            # (paused, hung) would otherwise re-register next to its replacement.
            killed.extend([w for w in ids if await self._pool.kill(w)])

        found = await self._lost.detect(before_settling=kill_local)
        # Replacements too may be killed before they register (never running,
        # so never "lost"): restart those as well, or the pool would shrink. A
        # process that exited on its own before registering (bad function,
        # no server) is not restarted: it would fail again, forever.
        registered = set(await self._store.workers.worker_ids())
        stillborn = [w for w, code in self._pool.exit_codes().items() if code < 0 and w not in registered]
        # A replacement runs what the lost worker ran (its spec), under a new id; the
        # processes killed above are replaced even if another detector recorded them.
        await self._pool.restart([*found, *killed, *stillborn])
        return found

    async def _detect_while_waiting(self) -> list[str]:
        return await self.detect_lost_workers(restart_local_workers=self.restart_lost_workers)

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
