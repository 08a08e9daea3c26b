"""Worker loops (decentralized mode): the user's own loop instead of :func:`run_function`.

A worker loop is ``async def loop(worker: rushpy.Worker, **loop_args)``. It
reads every task of the network through the worker's read methods (the same
cached reads as a controller's), creates the tasks it runs itself
(``worker.push_running_tasks``), records their outcomes (``finish_tasks``,
``fail_tasks``), may pop queued tasks too (``pop_task``: a hybrid loop), and
returns when ``worker.terminated`` or when it is done.

:func:`run_worker_loop` runs one loop on an entered worker and gives the
three ways out their meaning:

- **the loop returns**: the worker is marked terminated, so leaving its
  ``async with`` block records ``terminated`` (a clean stop);
- **the worker is killed** (``stop_workers("kill")`` on a worker it cannot
  signal, its kill key, a second SIGINT): the loop is cancelled at once, as
  :func:`run_function` cancels its tasks; the exit settles what it held;
- **the loop raises**: the tasks still running on the worker fail with the
  exception's condition (``Condition.from_exception``; a task with attempts
  left goes back to the queue), the condition is stored as the worker's
  ``last_error`` (``worker_info()``), the error is logged, and the exception
  goes on, so the worker's exit records a crash: lost-worker detection finds
  it and a controller started with ``restart_lost_workers`` replaces it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from rushpy.errors import WorkerFunctionError
from rushpy.functions import is_async_function, resolve_function
from rushpy.logs import get_logger
from rushpy.models import Condition
from rushpy.worker.core import EXIT_TIMEOUT, Worker, components

__all__ = ["WorkerLoop", "resolve_worker_loop", "run_worker_loop"]

log = get_logger("rushpy.worker")

WorkerLoop = Callable[..., Awaitable[Any]]
"""A worker loop: ``async def loop(worker: Worker, **loop_args)``."""


def resolve_worker_loop(loop: WorkerLoop | str) -> WorkerLoop:
    """The loop named by ``loop`` (a callable or ``module:function``), checked to be ``async def``.

    Raises:
        WorkerFunctionError: the path cannot be imported, or the loop is not an
            ``async def`` function.

    """
    target = resolve_function(loop) if isinstance(loop, str) else loop
    if not callable(target) or not is_async_function(target):
        raise WorkerFunctionError(
            f"worker loop {loop!r} is not an async function: define it as "
            "'async def loop(worker, **loop_args)'"
        )
    return target


async def run_worker_loop(worker: Worker, loop: WorkerLoop | str, /, **loop_args: Any) -> None:
    """Run ``loop(worker, **loop_args)`` on an entered worker (decentralized mode).

    Returns when the loop returns (the worker is then terminated: its exit is
    a clean stop) or when the worker is killed (the loop is cancelled).

    Args:
        worker: An entered :class:`Worker`.
        loop: ``async def loop(worker, **loop_args)``, or its path ``module:function``.
        **loop_args: Keyword arguments of the loop.

    Raises:
        WorkerFunctionError: ``loop`` cannot be imported or is not ``async def``.
        Exception: whatever the loop raised, after its worker's running tasks
            were failed with it and it was recorded as the worker's ``last_error``.

    """
    fun = resolve_worker_loop(loop)
    stop = components(worker).stop
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def kill_watch() -> None:
            # A kill stops the loop at once, wherever it awaits.
            await stop.wait_killed()
            tg.cancel_scope.cancel()

        tg.start_soon(kill_watch)
        try:
            await fun(worker, **loop_args)
        except Exception as exc:  # recorded below, outside the task group, then raised as it is
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        await _record_failure(worker, error)
        raise error
    if not worker.killed:
        stop.terminate("the worker loop returned")
    log.info("worker loop ended", worker_id=worker.worker_id)


async def _record_failure(worker: Worker, exc: Exception) -> None:
    """Fail the worker's running tasks with ``exc``'s condition and record it as ``last_error``.

    Shielded: it runs even when the caller is being cancelled. A failure to
    write (Redis unreachable) is logged; the worker's exit settles what is left.
    """
    condition = Condition.from_exception(exc)
    log.error(
        "the worker loop raised; failing its running tasks",
        worker_id=worker.worker_id,
        error=f"{condition.type}: {condition.message}",
        traceback=condition.traceback,
    )
    store = components(worker).store
    with anyio.CancelScope(shield=True) as scope:
        scope.deadline = anyio.current_time() + EXIT_TIMEOUT  # a hung server cannot hold the exit
        try:
            running, _ = await store.tasks.worker_running_keys(worker.worker_id)
            if running:
                await worker.fail_tasks(running, [condition])
            await store.workers.set_last_error(worker.worker_id, condition)
        except Exception as write_error:  # the exit settles the tasks; detection finds the crash
            log.warning(
                "could not record the worker loop's error",
                worker_id=worker.worker_id,
                error=f"{type(write_error).__name__}: {write_error}",
            )
