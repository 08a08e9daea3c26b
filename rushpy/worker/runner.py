"""The default worker loop: pop tasks, run the user function, record outcomes.

``async def`` functions run on the event loop, up to ``concurrency`` tasks in
flight; a task's timeout cancels it at its deadline. Plain functions run off
the event loop in a worker thread (one per concurrency slot), so
registration, heartbeats, pops and writes never stall; a plain function whose
task has a timeout runs in a child process instead, killed at the deadline
(:mod:`rushpy.worker.child`).

A cancelled task is interrupted where it runs: its async task is cancelled,
its child process killed, or its thread interrupted
(:mod:`rushpy.worker.interrupt`). Its outcome is not written: the controller
already failed it.

Batching adapts to the task length: a slot starts by popping one task and
doubles its batch while a batch takes under :data:`FAST_BATCH` seconds, halving
it when a batch takes over :data:`SLOW_BATCH`. Long tasks are thus popped one by
one (good load balance), no-op tasks by the hundred (high throughput). Results
go to a writer that records everything that accumulated while its previous
write was in flight (group commit): low latency when idle, large batches under
load.

Connection loss does not end the loop: pops and writes are retried with
exponential backoff (logged), and results wait in memory until they can be
written. A worker declared lost meanwhile finds its late results discarded
(its tasks were re-queued) and terminates.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.to_thread
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rushpy.codec import encode
from rushpy.errors import ConfigError
from rushpy.functions import function_path, is_async_function
from rushpy.logs import get_logger
from rushpy.models import Condition, PoppedTask
from rushpy.validation import check_positive_seconds
from rushpy.worker.child import ChildProcess
from rushpy.worker.core import Worker
from rushpy.worker.interrupt import TaskInterrupted, ThreadInterrupter

__all__ = ["FAST_BATCH", "MAX_BACKOFF", "MAX_BATCH", "SLOW_BATCH", "TRANSIENT_ERRORS", "run_function"]

log = get_logger("rushpy.worker")

FAST_BATCH = 0.005
"""A batch faster than this (seconds) doubles the next batch."""
SLOW_BATCH = 0.05
"""A batch slower than this (seconds) halves the next batch."""
MAX_BATCH = 1000
"""Most tasks one slot pops at once."""
MAX_BACKOFF = 2.0
"""Longest wait (seconds) between two attempts to reach Redis again."""
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors that mean "Redis is unreachable for now": retried with backoff, never fatal."""

Outcome = tuple[str, int, bool, dict[str, Any]]
"""``(key, attempt, ok, fields)``: fields are ``ys`` for success, ``condition`` for failure."""


def _check_result(ys: Any, task: PoppedTask) -> Outcome:
    if ys is None:
        ys = {}
    if not isinstance(ys, Mapping):
        condition = Condition(
            "TypeError",
            f"the function returned {type(ys).__name__} {ys!r:.80}; return a mapping such as {{'y': value}}",
        )
        return _failed(task, condition)
    try:
        encode(ys)
    except Exception as exc:  # the value cannot be stored: fail this task only
        return _failed(task, Condition.from_exception(exc))
    return task.key, task.attempt, True, {"ys": dict(ys)}


def _failed(task: PoppedTask, condition: Condition | BaseException) -> Outcome:
    if isinstance(condition, BaseException):
        condition = Condition.from_exception(condition)
    return task.key, task.attempt, False, {"condition": condition.to_dict()}


def _timed_out(task: PoppedTask) -> Outcome:
    return _failed(task, Condition("TaskTimeout", f"the task timed out after {task.timeout:g} s"))


def _run_sync_batch(
    fun: Callable[..., Any],
    tasks: list[PoppedTask],
    worker: Worker,
    interrupter: ThreadInterrupter,
) -> list[Outcome]:
    out = []
    for task in tasks:
        if worker.is_cancelled(task.key):
            continue
        try:
            try:
                interrupter.begin(task.key)
                if worker.is_cancelled(task.key):
                    # Cancelled between the check above and begin(): its interrupt
                    # found no thread running the task, so stop here instead.
                    raise TaskInterrupted
                ys = fun(**task.xs)
            finally:
                interrupter.end()
        except TaskInterrupted:
            continue  # cancelled: the controller recorded the failure
        except Exception as exc:  # the function's failure fails its task; the worker goes on
            out.append(_failed(task, exc))
        else:
            out.append(_check_result(ys, task))
    return out


class _Backoff:
    """Exponential backoff between attempts to reach Redis, with logging."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay = 0.05
        self.failing = False

    async def failed(self, exc: BaseException) -> None:
        log.warning(
            f"{self.what} failed: Redis unreachable; retrying",
            error=f"{type(exc).__name__}: {exc}",
            retry_in=round(self.delay, 3),
        )
        self.failing = True
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, MAX_BACKOFF)

    def succeeded(self) -> None:
        if self.failing:
            log.warning(f"{self.what}: connection to Redis restored")
        self.failing = False
        self.delay = 0.05


class _ResultWriter:
    """Records outcomes in batches: whatever accumulated while the last write ran.

    Outcomes stay in memory while Redis is unreachable and are written once it
    is back. Writes are fenced by attempt, so repeating one is harmless.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.buffer: list[Outcome] = []
        self.wakeup = anyio.Event()
        self.closed = False
        self.backoff = _Backoff("writing results")

    def add(self, outcomes: list[Outcome]) -> None:
        self.buffer.extend(outcomes)
        self.wakeup.set()

    async def flush(self) -> None:
        while self.buffer:
            # Results first, then failures; each group leaves the buffer once written,
            # and outcomes added while a write is in flight wait for the next round.
            ok = any(o[2] for o in self.buffer)
            group = [o for o in self.buffer if o[2] == ok]
            codes = await self.worker.store.complete(
                self.worker.worker_id, "finished" if ok else "failed", [(k, a, f) for k, a, _, f in group]
            )
            written = {id(o) for o in group}
            self.buffer = [o for o in self.buffer if id(o) not in written]
            for key, _, _, _ in group:
                self.worker.forget(key)
            discarded = codes.count(0)
            if discarded:
                log.warning(
                    "outcomes discarded: those attempts no longer run on this worker "
                    "(cancelled, or re-queued after the worker was declared lost)",
                    n=discarded,
                )

    async def run(self) -> None:
        give_up_at: float | None = None
        while True:
            await self.wakeup.wait()
            self.wakeup = anyio.Event()
            try:
                await self.flush()
            except TRANSIENT_ERRORS as exc:
                if self.closed:
                    # Closing: keep trying for a while, then leave the tasks to the
                    # lost-worker detection (they are re-queued or failed there).
                    give_up_at = give_up_at or time.monotonic() + 30.0
                    if time.monotonic() > give_up_at:
                        log.error("could not write results before exiting", n=len(self.buffer))
                        return
                await self.backoff.failed(exc)
                self.wakeup.set()
                continue
            self.backoff.succeeded()
            if self.closed and not self.buffer:
                return

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()


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

    """
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigError(f"invalid concurrency={concurrency!r}: use an integer >= 1")
    if idle_timeout is not None:
        check_positive_seconds(idle_timeout, "idle_timeout")
    is_async = is_async_function(fun)
    writer = _ResultWriter(worker)
    limiter = anyio.CapacityLimiter(concurrency)
    interrupter = ThreadInterrupter()
    busy = 0
    last_active = time.monotonic()

    def child_path() -> str:
        return fun_path or function_path(fun)

    async def run_async(task: PoppedTask) -> Outcome | None:
        # One scope serves both the deadline and a cancellation (cheaper per task
        # than two); which of them stopped the task is told apart afterwards.
        deadline = math.inf if task.timeout is None else anyio.current_time() + task.timeout
        scope = anyio.CancelScope(deadline=deadline)
        with worker.interruptible(task.key, scope.cancel), scope:
            try:
                ys = await fun(**task.xs)
            except Exception as exc:  # the function's failure fails its task; the worker goes on
                return _failed(task, exc)
            return _check_result(ys, task)
        if worker.is_cancelled(task.key):
            return None  # cancelled: the controller recorded the failure
        return _timed_out(task)

    async def run_in_child(child: ChildProcess, task: PoppedTask) -> Outcome | None:
        with worker.interruptible(task.key, child.interrupt):
            kind, value = await child.run(task.xs, task.timeout)
        if kind == "ok":
            return _check_result(value, task)
        if kind == "timeout":
            return _timed_out(task)
        if kind == "cancelled":
            return None
        return _failed(task, value)

    async def run_batch(tasks: list[PoppedTask], child: ChildProcess | None) -> list[Outcome]:
        out = await run_tasks(tasks, child)
        # Cancelled tasks have no outcome to write: stop tracking them here.
        reported = {o[0] for o in out}
        for task in tasks:
            if task.key not in reported:
                worker.forget(task.key)
        return out

    async def run_tasks(tasks: list[PoppedTask], child: ChildProcess | None) -> list[Outcome]:
        out: list[Outcome] = []
        if not is_async:
            untimed = [t for t in tasks if t.timeout is None]
            if untimed:
                with contextlib.ExitStack() as stack:
                    for task in untimed:
                        stack.enter_context(
                            worker.interruptible(task.key, functools.partial(interrupter.interrupt, task.key))
                        )
                    # abandon_on_cancel: a kill must not wait for a plain function to return.
                    out += await anyio.to_thread.run_sync(
                        _run_sync_batch,
                        fun,
                        untimed,
                        worker,
                        interrupter,
                        limiter=limiter,
                        abandon_on_cancel=True,
                    )
            for task in tasks:
                if task.timeout is None or worker.is_cancelled(task.key):
                    continue
                assert child is not None
                outcome = await run_in_child(child, task)
                if outcome is not None:
                    out.append(outcome)
            return out
        for task in tasks:
            if worker.is_cancelled(task.key):
                continue
            outcome = await run_async(task)
            if outcome is not None:
                out.append(outcome)
        return out

    async def slot() -> None:
        nonlocal busy, last_active
        batch = 1
        backoff = _Backoff("popping tasks")
        child: ChildProcess | None = None
        try:
            while not worker.terminated:
                try:
                    tasks = await worker.pop_tasks(batch, timeout=idle_timeout)
                except TRANSIENT_ERRORS as exc:
                    await backoff.failed(exc)
                    continue
                backoff.succeeded()
                if not tasks:
                    if (
                        idle_timeout is not None
                        and busy == 0
                        and time.monotonic() - last_active >= idle_timeout
                        and not worker.terminated
                    ):
                        log.info("queue empty for the idle timeout; terminating", idle_timeout=idle_timeout)
                        worker.set_terminated()
                    continue
                if not is_async and child is None and any(t.timeout is not None for t in tasks):
                    try:
                        child = ChildProcess(child_path())
                    except Exception as exc:  # no importable path: fail those tasks clearly
                        condition = Condition(
                            "WorkerFunctionError",
                            f"a plain function with a task timeout runs in a child process, which "
                            f"needs an importable function: {exc}",
                        )
                        writer.add([_failed(t, condition) for t in tasks if t.timeout is not None])
                        tasks = [t for t in tasks if t.timeout is None]
                busy += 1
                started = time.perf_counter()
                try:
                    writer.add(await run_batch(tasks, child))
                finally:
                    busy -= 1
                    last_active = time.monotonic()
                elapsed = time.perf_counter() - started
                if elapsed < FAST_BATCH and len(tasks) == batch:
                    batch = min(batch * 2, max_batch)
                elif elapsed > SLOW_BATCH:
                    batch = max(1, batch // 2)
        finally:
            if child is not None:
                with anyio.CancelScope(shield=True):
                    await child.close()

    async with anyio.create_task_group() as outer:

        async def kill_watch() -> None:
            # A kill stops everything at once: tasks in flight are cancelled and
            # unwritten outcomes dropped; the worker's exit re-queues those tasks.
            await worker.wait_killed()
            outer.cancel_scope.cancel()

        outer.start_soon(kill_watch)
        async with anyio.create_task_group() as work:
            work.start_soon(writer.run)
            try:
                async with anyio.create_task_group() as slots:
                    for _ in range(concurrency):
                        slots.start_soon(slot)
            finally:
                writer.close()
        outer.cancel_scope.cancel()  # all written: stop the kill watcher
    log.info("worker loop ended", worker_id=worker.worker_id)
