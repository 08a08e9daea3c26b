"""The default worker loop: pop tasks, run the user function, record outcomes.

:func:`run_function` runs ``concurrency`` slots. Each slot pops a batch, runs
it (:mod:`rushpy.worker.execution`: on the event loop, in a thread, or in a
child process) and hands the outcomes to one result writer
(:mod:`rushpy.worker.writer`).

Batching adapts to the task length: a slot starts by popping one task and
doubles its batch while a batch takes under :data:`FAST_BATCH` seconds, halving
it when a batch takes over :data:`SLOW_BATCH`. Long tasks are thus popped one by
one (good load balance), no-op tasks by the hundred (high throughput).

Connection loss does not end the loop: pops and writes are retried with
exponential backoff (:mod:`rushpy.worker.backoff`), and results wait in memory
until they can be written. A worker declared lost meanwhile finds its late
results discarded (its tasks were re-queued) and terminates.

The loop ends when the worker's stop state says so: after the running tasks
once the worker is terminated (by any source, including the idle timeout), at
once when it is killed (tasks in flight are cancelled, unwritten outcomes
dropped; the worker's exit re-queues those tasks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from rushpy.functions import function_path
from rushpy.logs import get_logger
from rushpy.models import Condition, PoppedTask
from rushpy.validation import check_count, check_positive_seconds
from rushpy.worker.backoff import MAX_BACKOFF, TRANSIENT_ERRORS, Backoff
from rushpy.worker.child import ChildProcess
from rushpy.worker.core import Worker, components
from rushpy.worker.execution import Executor, failed
from rushpy.worker.writer import ResultWriter

__all__ = ["FAST_BATCH", "MAX_BACKOFF", "MAX_BATCH", "SLOW_BATCH", "TRANSIENT_ERRORS", "run_function"]

log = get_logger("rushpy.worker")

FAST_BATCH = 0.005
"""A batch faster than this (seconds) doubles the next batch."""
SLOW_BATCH = 0.05
"""A batch slower than this (seconds) halves the next batch."""
MAX_BATCH = 1000
"""Most tasks one slot pops at once."""


async def run_function(
    worker: Worker,
    fun: Callable[..., Any],
    *,
    concurrency: int = 1,
    max_batch: int = MAX_BATCH,
    fun_path: str | None = None,
    idle_timeout: float | None = None,
) -> None:
    """Run ``fun`` on the tasks of the network until the worker is terminated.

    Args:
        worker: An entered :class:`Worker`.
        fun: Called with each task's ``xs`` as keyword arguments; returns a mapping (``ys``).
        concurrency: Tasks in flight at once (async functions) or worker threads (plain ones).
        max_batch: Most tasks one slot pops at once.
        fun_path: ``fun`` as ``module:function``, for plain functions whose tasks
            have timeouts (they run in a child process); derived from ``fun`` if omitted.
        idle_timeout: Terminate the worker once it found the queue empty for this
            many seconds (elastic pools); ``None`` waits for work forever.

    Raises:
        ConfigError: ``concurrency`` is not an integer >= 1, or ``idle_timeout`` not > 0.

    """
    check_count(concurrency, "concurrency", minimum=1, hint="use an integer >= 1")
    if idle_timeout is not None:
        check_positive_seconds(idle_timeout, "idle_timeout")
    loop = _Loop(
        worker,
        fun,
        concurrency=concurrency,
        max_batch=max_batch,
        fun_path=fun_path,
        idle_timeout=idle_timeout,
    )
    await loop.run()
    log.info("worker loop ended", worker_id=worker.worker_id)


class _Loop:
    """The slots of one :func:`run_function` call and what they share."""

    def __init__(
        self,
        worker: Worker,
        fun: Callable[..., Any],
        *,
        concurrency: int,
        max_batch: int,
        fun_path: str | None,
        idle_timeout: float | None,
    ) -> None:
        parts = components(worker)
        self.worker = worker
        self.stop = parts.stop
        self.fun = fun
        self.fun_path = fun_path
        self.concurrency = concurrency
        self.max_batch = max_batch
        self.idle_timeout = idle_timeout
        self.executor = Executor(fun, parts.tracker, concurrency, parts.inputs)
        self.writer = ResultWriter(parts.results)
        # Slots running a batch, and when one last ran one: the idle timeout counts
        # only while the whole worker is idle.
        self.busy = 0
        self.last_active = time.monotonic()

    async def run(self) -> None:
        async with anyio.create_task_group() as outer:

            async def kill_watch() -> None:
                # A kill stops everything at once: tasks in flight are cancelled and
                # unwritten outcomes dropped; the worker's exit re-queues those tasks.
                await self.stop.wait_killed()
                outer.cancel_scope.cancel()

            outer.start_soon(kill_watch)
            async with anyio.create_task_group() as work:
                work.start_soon(self.writer.run)
                try:
                    async with anyio.create_task_group() as slots:
                        for _ in range(self.concurrency):
                            slots.start_soon(self.slot)
                finally:
                    self.writer.close()
            outer.cancel_scope.cancel()  # all written: stop the kill watcher

    async def slot(self) -> None:
        batch = 1
        backoff = Backoff("popping tasks")
        child: ChildProcess | None = None
        try:
            while not self.stop.terminated:
                try:
                    tasks = await self.worker.pop_tasks(batch, timeout=self.idle_timeout)
                except TRANSIENT_ERRORS as exc:
                    await backoff.failed(exc)
                    continue
                backoff.succeeded()
                if not tasks:
                    self._check_idle()
                    continue
                if child is None and self.executor.needs_child(tasks):
                    child, tasks = self._start_child(tasks)
                self.busy += 1
                started = time.perf_counter()
                try:
                    self.writer.add(await self.executor.run_batch(tasks, child))
                    # Let the writer send the outcomes before this slot's next pop:
                    # otherwise the server runs the pop first and every result
                    # waits one script longer (W2's critical path).
                    await self.writer.let_write()
                finally:
                    self.busy -= 1
                    self.last_active = time.monotonic()
                elapsed = time.perf_counter() - started
                if elapsed < FAST_BATCH and len(tasks) == batch:
                    batch = min(batch * 2, self.max_batch)
                elif elapsed > SLOW_BATCH:
                    batch = max(1, batch // 2)
        finally:
            if child is not None:
                with anyio.CancelScope(shield=True):
                    await child.close()

    def _check_idle(self) -> None:
        """A pop found nothing: terminate if the whole worker was idle for the idle timeout."""
        if (
            self.idle_timeout is not None
            and self.busy == 0
            and time.monotonic() - self.last_active >= self.idle_timeout
        ):
            self.stop.terminate(f"queue empty for the idle timeout of {self.idle_timeout:g} s")

    def _start_child(self, tasks: list[PoppedTask]) -> tuple[ChildProcess | None, list[PoppedTask]]:
        """A child process for the tasks with a timeout; without one, those tasks fail."""
        try:
            return ChildProcess(self.fun_path or function_path(self.fun)), tasks
        except Exception as exc:  # no importable path: fail those tasks clearly
            condition = Condition(
                "WorkerFunctionError",
                "a plain function with a task timeout runs in a child process, which "
                f"needs an importable function: {exc}",
            )
            self.writer.add([failed(t, condition) for t in tasks if t.timeout is not None])
            return None, [t for t in tasks if t.timeout is None]
