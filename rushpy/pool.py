"""The worker processes a controller started on its own host: :class:`LocalWorkerPool`.

The pool starts ``python -m rushpy.worker`` processes from a
:class:`~rushpy.spec.WorkerSpec`, keeps their output in log files, tells which
exited (and how) or are still alive, restarts, kills and finally stops them.
It issues no Redis command: what the network records about a worker (its
state, its tasks) is the controller's business.

A process may run several workers (``workers_per_process``): the pool lists
each worker under its own id, all sharing the process. Killing one of them
marks it stopped; the process is killed with its last running worker, so the
others go on (the controller stops the one through its kill key).

No process outlives the pool's owner:

- :meth:`LocalWorkerPool.close` terminates (SIGTERM), waits, then kills
  (SIGKILL) what is left; if it is itself cancelled or interrupted (a second
  Ctrl-C), it kills every process at once before it gives up;
- a hook at interpreter exit does the same for pools that were never closed;
- on Linux each worker asks the kernel for SIGTERM when its parent dies
  (``PR_SET_PDEATHSIG``, see :mod:`rushpy.lifetime`), which also covers a
  parent that dies without running any cleanup (SIGTERM, SIGKILL). The signal
  is tied to the parent *thread*, so :meth:`LocalWorkerPool.spawn` must run on
  the thread of the event loop, never in a worker thread.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from rushpy.config import ENV_URL
from rushpy.errors import ConfigError, WorkerError
from rushpy.logs import get_logger
from rushpy.signing import ENV_SIGNING_KEY, configured_key, signing_key
from rushpy.spec import WorkerSpec
from rushpy.store import new_worker_id

__all__ = [
    "ENV_PARENT_PID",
    "KILL_TIMEOUT",
    "PROBE_INTERVAL",
    "SETTLE_TIMEOUT",
    "TERMINATE_TIMEOUT",
    "LocalWorker",
    "LocalWorkerPool",
]

log = get_logger("rushpy.pool")

TERMINATE_TIMEOUT = 10.0
"""Default seconds workers get to exit after SIGTERM before they are killed."""
KILL_TIMEOUT = 5.0
"""Seconds to wait for a SIGKILLed process to be reaped."""
PROBE_INTERVAL = 0.2
"""Seconds between looks at the processes while waiting for them (their deaths publish nothing)."""
SETTLE_TIMEOUT = 5.0
"""Seconds a closing controller spends recording the workers it had to kill."""
ENV_PARENT_PID = "RUSHPY_PARENT_PID"
"""Environment variable naming the pid of the process that started a local worker.

The worker ties its life to that process (``PR_SET_PDEATHSIG``) and exits at
once if it was already gone when the worker started.
"""

# Pools with processes that may still run, reaped at interpreter exit. Strong
# references: a pool dropped without being closed must still be reaped.
_OPEN_POOLS: set[LocalWorkerPool] = set()


@dataclass(slots=True)
class LocalWorker:
    """A worker process started by a controller.

    Attributes:
        worker_id: Its id.
        process: The process handle.
        log_path: File receiving its stdout and stderr.
        spec: What it was started with (a replacement gets the same, under a new id).

    """

    worker_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    spec: WorkerSpec

    @property
    def idle_timeout(self) -> float | None:
        """Its idle timeout in seconds (``None``: none)."""
        return self.spec.idle_timeout

    @property
    def log_level(self) -> str:
        """Its log level."""
        return self.spec.log_level

    def log_tail(self, n: int = 2000) -> str:
        """The last ``n`` characters of its output (reads only the end of the file)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4 * n))
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""


class LocalWorkerPool:
    """Worker processes on this host, started from a :class:`~rushpy.spec.WorkerSpec`.

    Args:
        url: Server URL with the password; handed to the workers in their
            environment (``RUSHPY_REDIS_URL``), never on their command line.
        terminate_timeout: Seconds workers get to exit after SIGTERM in
            :meth:`close` before they are killed.
        kill_timeout: Seconds to wait for a SIGKILLed process to be reaped.

    """

    def __init__(
        self, url: str, *, terminate_timeout: float = TERMINATE_TIMEOUT, kill_timeout: float = KILL_TIMEOUT
    ) -> None:
        self._url = url
        self.terminate_timeout = _check_seconds(terminate_timeout, "shutdown_timeout")
        self.kill_timeout = _check_seconds(kill_timeout, "kill_timeout")
        self._workers: dict[str, LocalWorker] = {}
        # Workers killed while their process runs on with other workers.
        self._stopped: set[str] = set()
        self._log_dir: Path | None = None

    # -- state ---------------------------------------------------------------------------------
    @property
    def workers(self) -> dict[str, LocalWorker]:
        """The processes started and not forgotten, by worker id (a copy)."""
        return dict(self._workers)

    def __len__(self) -> int:
        return len(self._workers)

    def is_alive(self, worker_id: str) -> bool:
        """Whether ``worker_id`` is a worker of this pool whose process still runs (and not killed)."""
        local = self._workers.get(worker_id)
        return local is not None and worker_id not in self._stopped and local.process.poll() is None

    def alive(self) -> list[str]:
        """Ids of the workers whose processes still run (killed ones left out)."""
        return [wid for wid in self._workers if self.is_alive(wid)]

    def shares_process(self, worker_id: str) -> bool:
        """Whether ``worker_id``'s process runs other workers of this pool that are alive."""
        local = self._workers.get(worker_id)
        return local is not None and self._runs_others(local.process, besides=worker_id)

    def _runs_others(self, process: subprocess.Popen[bytes], besides: str | None = None) -> bool:
        """Whether ``process`` runs a live worker of the pool other than ``besides``."""
        return any(
            w != besides and o.process is process and self.is_alive(w) for w, o in self._workers.items()
        )

    def _processes(self, worker_ids: Collection[str]) -> list[LocalWorker]:
        """One entry per distinct process of ``worker_ids`` (workers may share one)."""
        seen: dict[subprocess.Popen[bytes], LocalWorker] = {}
        for wid in worker_ids:
            local = self._workers[wid]
            seen.setdefault(local.process, local)
        return list(seen.values())

    def exit_codes(self) -> dict[str, int]:
        """``{worker_id: exit code}`` of the processes that exited (negative: killed by that signal)."""
        return {wid: code for wid, w in self._workers.items() if (code := w.process.poll()) is not None}

    def starting(self, registered: Collection[str] = ()) -> bool:
        """Whether a process still runs that is not among ``registered`` (it will register soon)."""
        return any(wid not in registered for wid in self.alive())

    def check_started(self, registered: Collection[str]) -> None:
        """Raise if a process exited before it registered.

        Raises:
            WorkerError: names the worker and its exit code and shows the end of its output.

        """
        for wid, code in self.exit_codes().items():
            if wid not in registered:
                raise WorkerError(
                    f"local worker {wid} exited with code {code} before registering; "
                    f"its output:\n{self._workers[wid].log_tail()}"
                )

    # -- starting ------------------------------------------------------------------------------
    def spawn(self, spec: WorkerSpec, n: int = 1) -> list[str]:
        """Start ``n`` workers running ``spec``, each under a new id; returns the ids.

        Each process runs ``spec.workers_per_process`` of them (the last one the rest).

        Call it on the event loop's thread: a worker dies with the thread that started it.

        Raises:
            ConfigError: ``spec`` names no function and no worker loop (local
                workers always get one on their command line).
            WorkerError: the operating system refused to start a process.

        """
        if spec.fun is None and spec.worker_loop is None:
            raise ConfigError("local workers need a spec with fun= or worker_loop=")
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix=f"rushpy-{spec.network_id}-"))
        env = dict(os.environ)
        env[ENV_URL] = self._url
        env[ENV_PARENT_PID] = str(os.getpid())
        if configured_key() is None:
            # Our own workers verify what this process signs with its private key
            # (the Executor's payloads): in their environment, never on argv.
            env[ENV_SIGNING_KEY] = signing_key().secret.decode()
        # Make the caller's import path (and the script's folder) visible to workers.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [os.getcwd(), *sys.path, env.get("PYTHONPATH", "")] if p
        )
        values = {name: getattr(spec, name) for name in type(spec).model_fields}
        per_process = spec.workers_per_process
        sizes = [per_process] * (n // per_process) + ([n % per_process] if n % per_process else [])
        ids: list[str] = []
        for size in sizes:
            # Every field explicit: the command line alone defines the process.
            own = WorkerSpec(**{**values, "worker_id": new_worker_id(), "workers_per_process": size})
            log_path = self._log_dir / f"{own.worker_id}.log"
            cmd = [sys.executable, "-m", "rushpy.worker", *own.to_argv()]
            try:
                with open(log_path, "wb") as out:
                    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                        cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
                    )
            except OSError as exc:
                raise WorkerError(f"cannot start a local worker process ({cmd[0]}): {exc}") from exc
            for wid in own.worker_ids():
                assert wid is not None  # the spec names its worker
                self._workers[wid] = LocalWorker(wid, process, log_path, own)
                ids.append(wid)
        _OPEN_POOLS.add(self)
        log.debug("started local workers", n=n, fun=spec.fun, worker_loop=spec.worker_loop)
        return ids

    async def restart(self, worker_ids: Sequence[str]) -> list[str]:
        """Replace workers of this pool (same spec, new ids); returns the new ids.

        A process all of whose workers are replaced is killed first if it still
        runs (hung, paused), or it would live on untracked next to its
        replacement; one that runs other workers goes on. The workers replaced
        from one process get one new process. Ids not in the pool are skipped.
        """
        groups: dict[subprocess.Popen[bytes], list[LocalWorker]] = {}
        for wid in dict.fromkeys(worker_ids):
            if wid in self._workers:
                local = self._workers.pop(wid)
                self._stopped.discard(wid)
                groups.setdefault(local.process, []).append(local)
        new: list[str] = []
        for process, group in groups.items():
            if not self._runs_others(process):
                await self._kill_and_wait(group[0])
            spec = group[0].spec.model_copy(update={"workers_per_process": len(group)})
            new += self.spawn(spec, len(group))
        if groups:
            log.warning(
                "restarted local workers", old=[w.worker_id for g in groups.values() for w in g], new=new
            )
        return new

    # -- stopping ------------------------------------------------------------------------------
    async def kill(self, worker_id: str) -> bool:
        """SIGKILL the process of a running worker and wait for it; ``False`` if none runs under that id.

        A process that runs other live workers is not killed (``False``): the
        worker is only marked stopped, and its process dies with the last one.
        """
        local = self._workers.get(worker_id)
        if local is None or not self.is_alive(worker_id):
            return False
        if self.shares_process(worker_id):
            self._stopped.add(worker_id)
            return False
        await self._kill_and_wait(local)
        return True

    async def kill_all(self) -> None:
        """SIGKILL every running process, wait for them, and forget all processes."""
        try:
            for local in self._processes(self._workers):
                await self._kill_and_wait(local)
        finally:
            self.kill_now()
            self._workers.clear()
            _OPEN_POOLS.discard(self)

    def terminate(self, worker_ids: Sequence[str] | None = None) -> list[str]:
        """Send SIGTERM to running processes (default: all); returns the ids signalled."""
        ids = self.alive() if worker_ids is None else [w for w in worker_ids if self.is_alive(w)]
        for local in self._processes(ids):  # one signal per process: it stops all its workers
            with contextlib.suppress(ProcessLookupError):
                local.process.terminate()
        return ids

    async def close(self, timeout: float | None = None) -> list[str]:
        """Stop every process: SIGTERM, wait up to ``timeout``, then SIGKILL; returns the ids killed.

        Runs shielded from cancellation; if it is interrupted anyway (a second
        Ctrl-C, a native task cancel), every process is killed at once before
        the interruption goes on. The processes stay listed (exit codes).

        Args:
            timeout: Seconds to wait after SIGTERM (default ``terminate_timeout``).

        """
        timeout = self.terminate_timeout if timeout is None else timeout
        try:
            with anyio.CancelScope(shield=True):
                self.terminate()
                deadline = time.monotonic() + timeout
                for local in self._processes(self.alive()):
                    await self._wait(local, max(0.0, deadline - time.monotonic()))
                killed = self.alive()
                if killed:
                    log.warning("local workers did not exit in time; killing them", workers=killed)
                for local in self._processes(killed):
                    await self._kill_and_wait(local)
        except BaseException:
            self.kill_now()
            raise
        _OPEN_POOLS.discard(self)
        return killed

    def kill_now(self) -> None:
        """SIGKILL every running process without waiting (for interrupted cleanup)."""
        for local in self._processes(self._workers):
            if local.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    local.process.kill()

    def close_sync(self) -> None:
        """Blocking :meth:`close` for interpreter exit: SIGTERM, wait, SIGKILL."""
        self.terminate()
        deadline = time.monotonic() + self.terminate_timeout
        for local in self._processes(self._workers):
            with contextlib.suppress(subprocess.TimeoutExpired):
                local.process.wait(max(0.0, deadline - time.monotonic()))
        self.kill_now()
        for local in self._processes(self._workers):
            with contextlib.suppress(subprocess.TimeoutExpired):
                local.process.wait(self.kill_timeout)
        _OPEN_POOLS.discard(self)

    async def _wait(self, local: LocalWorker, timeout: float) -> None:
        # A thread waits, so the event loop keeps serving other coroutines.
        with contextlib.suppress(subprocess.TimeoutExpired):
            await anyio.to_thread.run_sync(local.process.wait, timeout, abandon_on_cancel=True)

    async def _kill_and_wait(self, local: LocalWorker) -> None:
        if local.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                local.process.kill()
        await self._wait(local, self.kill_timeout)


def _check_seconds(value: object, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
        raise ConfigError(f"invalid {name}={value!r}: use a finite number of seconds >= 0")
    return float(value)


@atexit.register
def _close_open_pools() -> None:  # pragma: no cover - runs at interpreter exit
    for pool in list(_OPEN_POOLS):
        pool.close_sync()
