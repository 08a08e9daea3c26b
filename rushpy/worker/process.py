"""One worker process: ``python -m rushpy.worker`` runs one worker, or many as coroutines.

:func:`run_worker` resolves what to run (the flags, or the network's stored
start arguments under the operator's :class:`~rushpy.signing.StartArgsPolicy`),
then runs ``spec.workers_per_process`` workers in one event loop, each a
registered worker of its own (its id, heartbeat, pops and results), until they
are terminated or killed.

Many workers per process (``--workers-per-process N``) is how a few processes
on one host provide hundreds of workers for tasks that wait rather than
compute (remote calls, simulations in other processes, ``asyncio.sleep``):
a process per worker would cost a Python interpreter each. They share the
process's single heartbeat sidecar (:mod:`rushpy.worker.sidecar`), which
beats for all of them while the event loop is blocked; each worker's own beat
from the loop still notices when it was declared lost and brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from rushpy.config import RedisConfig
from rushpy.connection import check_connection, create_client
from rushpy.functions import resolve_function
from rushpy.keys import Keys
from rushpy.logs import configure_cli_logging, get_logger, status_logger
from rushpy.signing import StartArgsPolicy
from rushpy.spec import WorkerSpec
from rushpy.store import Store
from rushpy.worker.core import Worker
from rushpy.worker.loop import resolve_worker_loop, run_worker_loop
from rushpy.worker.runner import run_function
from rushpy.worker.sidecar import HeartbeatSidecar

__all__ = [
    "GC_THRESHOLDS",
    "KILLED",
    "LOOP_FAILED",
    "START_ARGS_POLL_MAX",
    "run_worker",
    "tune_garbage_collector",
]

GC_THRESHOLDS = (20_000, 50, 100)
"""Cyclic garbage collector thresholds of a worker process (Python's defaults: 700, 10, 10)."""


def tune_garbage_collector() -> None:
    """Collect cyclic garbage less often in a worker process, and never rescan its start-up.

    Hundreds of coroutine workers (``--workers-per-process``) allocate fast:
    with Python's default thresholds the collector runs hundreds of times a
    second, and its full collections scan every object of every imported
    module. Objects alive at this point are frozen (``gc.freeze``: left out of
    every later collection) and the thresholds raised to :data:`GC_THRESHOLDS`
    (garbage without cycles is freed at once either way). With 1,000 workers
    in 8 processes this cut the workers' CPU by about a tenth
    (``benchmarks/thousand.py``). Called by ``python -m rushpy.worker`` only: a
    worker embedded in another program leaves that program's settings alone.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

log = get_logger("rushpy.worker")

START_ARGS_POLL_MAX = 1.0
"""Longest pause (seconds) between looks for start arguments while a worker waits for them."""
KILLED = 130
"""Exit code of a process whose workers were killed."""
LOOP_FAILED = 1
"""Exit code of a process in which a worker loop raised."""


async def _start_args(config: RedisConfig, spec: WorkerSpec) -> dict[str, Any] | None:
    """The network's stored start arguments, waiting up to ``spec.wait_for_start_args`` for them."""
    client = create_client(config)
    try:
        await check_connection(config)
        store = Store(client, Keys(spec.network_id, spec.prefix))
        deadline = time.monotonic() + spec.wait_for_start_args
        pause = 0.05
        args = await store.workers.get_start_args()
        if not args and spec.wait_for_start_args > 0:
            log.warning(
                "the network stores no start arguments yet; waiting for a controller",
                network=spec.network_id,
                seconds=spec.wait_for_start_args,
            )
        # Start arguments are written once, before any worker is needed: a short
        # poll with backoff costs nothing and needs no subscription.
        while not args and (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(pause, remaining))
            pause = min(2 * pause, START_ARGS_POLL_MAX)
            args = await store.workers.get_start_args()
        return args
    finally:
        await client.aclose()


async def run_worker(
    spec: WorkerSpec,
    config: RedisConfig,
    *,
    parent: int | None = None,
    allow_modules: Sequence[str] = (),
) -> int:
    """Run this process's workers until they are terminated or killed; returns the exit code.

    The code is 0 after a termination (a worker loop that returned included),
    :data:`KILLED` after a kill, :data:`LOOP_FAILED` when a worker loop raised
    (that worker is recorded crashed, for lost-worker detection to find and
    replace; the other workers of the process go on).

    Args:
        spec: The worker's flags; without ``fun`` the stored start arguments complete it.
        config: Server settings.
        parent: Pid of the controller that started this worker: a SIGTERM that
            arrives once it is gone (its death signal) kills the workers instead
            of terminating them, so no task keeps them alive without their controller.
        allow_modules: Module prefixes whose functions stored start arguments may
            name without a signature (``--allow-module``).

    Raises:
        UntrustedCodeError: stored start arguments that are neither signed with
            this worker's key nor name an allowed module (nothing is run).

    """
    if spec.fun is None and spec.worker_loop is None:
        # The policy first: a bad key or prefix fails before anything is read.
        policy = StartArgsPolicy.from_env(allow_modules)
        spec = spec.resolve(await _start_args(config, spec), policy)
        configure_cli_logging(spec.log_level)
        log.info("running the stored start arguments", fun=spec.fun, worker_loop=spec.worker_loop)
    # Imported (and a loop checked to be async) before any worker registers: a bad path exits 2.
    run = _runner(spec)
    shared = spec.workers_per_process > 1
    workers = [
        Worker(
            spec.network_id,
            config,
            worker_id=worker_id,
            prefix=spec.prefix,
            heartbeat_period=spec.heartbeat_period,
            heartbeat_expire=spec.heartbeat_expire,
            heartbeat_sidecar=not shared,
        )
        for worker_id in spec.worker_ids()
    ]
    failed: list[str] = []
    with _signals(workers, parent):
        async with anyio.create_task_group() as group:
            sidecar = _shared_sidecar(config, spec, workers) if shared else None
            if sidecar is not None:
                await sidecar.start()
                # Refusals are for each worker's own beat to act on: read them so the pipe never fills.
                group.start_soon(sidecar.watch, _keep_going)
            try:
                async with anyio.create_task_group() as running:
                    for worker in workers:
                        running.start_soon(_serve, worker, spec, str(config), run, failed)
            finally:
                if sidecar is not None:
                    with anyio.CancelScope(shield=True):
                        await sidecar.close()
    if failed:
        return LOOP_FAILED
    return KILLED if any(worker.killed for worker in workers) else 0


def _runner(spec: WorkerSpec) -> Callable[[Worker], Any]:
    """What each worker runs: the worker loop with its arguments, or the function."""
    if spec.worker_loop is not None:
        loop_fun = resolve_worker_loop(spec.worker_loop)
        return lambda worker: run_worker_loop(worker, loop_fun, **spec.loop_args)
    assert spec.fun is not None  # resolve() returns a spec with a function or a loop
    fun = resolve_function(spec.fun)
    return lambda worker: run_function(
        worker, fun, concurrency=spec.concurrency, fun_path=spec.fun, idle_timeout=spec.idle_timeout
    )


async def _keep_going() -> bool:
    return True


def _shared_sidecar(config: RedisConfig, spec: WorkerSpec, workers: list[Worker]) -> HeartbeatSidecar | None:
    """One sidecar process beating for every worker of the process (``None`` without heartbeats)."""
    heartbeat = workers[0].heartbeat
    if heartbeat is None:
        return None
    keys = Keys(spec.network_id, spec.prefix)
    ids = [worker.worker_id for worker in workers]
    return HeartbeatSidecar(config, keys, ids, period=heartbeat[0], expire=heartbeat[1])


async def _serve(
    worker: Worker, spec: WorkerSpec, server: str, run: Callable[[Worker], Any], failed: list[str]
) -> None:
    """Register ``worker``, run it until it stops, and leave (recording a crash if its loop raised)."""
    with contextlib.suppress(_LoopFailed):
        async with worker:
            status_logger().info(
                "worker started",
                network=spec.network_id,
                server=server,  # the URL without its password
                worker_id=worker.worker_id,
                pid=os.getpid(),
                **(
                    {"worker_loop": spec.worker_loop}
                    if spec.worker_loop is not None
                    else {"fun": spec.fun, "concurrency": spec.concurrency}
                ),
            )
            # A kill (second SIGINT, or the controller's kill key) makes the run
            # cancel the tasks in flight and return; leaving the block settles them.
            try:
                await run(worker)
            except Exception as exc:  # the worker records the crash on its way out
                if spec.worker_loop is None:
                    raise
                failed.append(worker.worker_id)
                # Logged with its traceback by run_worker_loop; the exit code tells the crash.
                raise _LoopFailed from exc


class _LoopFailed(Exception):
    """A worker loop raised: leave the worker as crashed, keep the process's other workers."""


@contextlib.contextmanager
def _signals(workers: list[Worker], parent: int | None) -> Any:
    """SIGINT terminates (twice: kills), SIGTERM terminates (kills once the parent is gone)."""
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            log.warning("SIGINT: terminating after running tasks; press Ctrl-C again to kill")
        for worker in workers:
            if interrupts == 1:
                worker.set_terminated("SIGINT")
            else:
                worker.set_killed("second SIGINT")

    def on_sigterm() -> None:
        gone = parent is not None and os.getppid() != parent
        for worker in workers:
            if gone:
                worker.set_killed("SIGTERM after the controller that started this worker was gone")
            else:
                worker.set_terminated("SIGTERM")

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
