"""The default worker loop: pop tasks, run the user function, record outcomes.

``async def`` functions run on the event loop, up to ``concurrency`` tasks in
flight. Plain functions run off the event loop in a worker thread (one per
concurrency slot), so registration, pops and writes never stall.

Batching adapts to the task length: a slot starts by popping one task and
doubles its batch while a batch takes under :data:`FAST_BATCH` seconds, halving
it when a batch takes over :data:`SLOW_BATCH`. Long tasks are thus popped one by
one (good load balance), no-op tasks by the hundred (high throughput). Results
go to a writer that records everything that accumulated while its previous
write was in flight (group commit): low latency when idle, large batches under
load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.to_thread

from rushpy.codec import encode
from rushpy.errors import ConfigError
from rushpy.functions import is_async_function
from rushpy.logs import get_logger
from rushpy.models import Condition, PoppedTask
from rushpy.worker.core import Worker

__all__ = ["FAST_BATCH", "MAX_BATCH", "SLOW_BATCH", "run_function"]

log = get_logger("rushpy.worker")

FAST_BATCH = 0.005
"""A batch faster than this (seconds) doubles the next batch."""
SLOW_BATCH = 0.05
"""A batch slower than this (seconds) halves the next batch."""
MAX_BATCH = 1000
"""Most tasks one slot pops at once."""

Outcome = tuple[str, bool, dict[str, Any]]
"""``(key, ok, fields)``: fields are ``ys`` for success, ``condition`` for failure."""


def _check_result(ys: Any, key: str) -> Outcome:
    if ys is None:
        ys = {}
    if not isinstance(ys, Mapping):
        return (
            key,
            False,
            {
                "condition": Condition(
                    "TypeError",
                    f"the function returned {type(ys).__name__} {ys!r:.80}; return a mapping "
                    "such as {'y': value}",
                ).to_dict()
            },
        )
    try:
        encode(ys)
    except Exception as exc:  # the value cannot be stored: fail this task only
        return key, False, {"condition": Condition.from_exception(exc).to_dict()}
    return key, True, {"ys": dict(ys)}


def _failure(key: str, exc: BaseException) -> Outcome:
    return key, False, {"condition": Condition.from_exception(exc).to_dict()}


def _run_sync_batch(fun: Callable[..., Any], tasks: list[PoppedTask]) -> list[Outcome]:
    out = []
    for task in tasks:
        try:
            ys = fun(**task.xs)
        except Exception as exc:  # the function's failure fails its task; the worker goes on
            out.append(_failure(task.key, exc))
        else:
            out.append(_check_result(ys, task.key))
    return out


class _ResultWriter:
    """Records outcomes in batches: whatever accumulated while the last write ran."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.buffer: list[Outcome] = []
        self.wakeup = anyio.Event()
        self.closed = False

    def add(self, outcomes: list[Outcome]) -> None:
        self.buffer.extend(outcomes)
        self.wakeup.set()

    async def flush(self) -> None:
        while self.buffer:
            batch, self.buffer = self.buffer, []
            finished = [(k, f) for k, ok, f in batch if ok]
            failed = [(k, f) for k, ok, f in batch if not ok]
            if finished:
                await self.worker.store.complete(self.worker.worker_id, "finished", finished)
            if failed:
                await self.worker.store.complete(self.worker.worker_id, "failed", failed)

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup = anyio.Event()
            await self.flush()
            if self.closed:
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
) -> None:
    """Run ``fun`` on the tasks of the network until the worker is terminated.

    Args:
        worker: An entered :class:`Worker`.
        fun: Called with each task's ``xs`` as keyword arguments; returns a mapping (``ys``).
        concurrency: Tasks in flight at once (async functions) or worker threads (plain ones).
        max_batch: Most tasks one slot pops at once.

    """
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigError(f"invalid concurrency={concurrency!r}: use an integer >= 1")
    is_async = is_async_function(fun)
    writer = _ResultWriter(worker)
    limiter = anyio.CapacityLimiter(concurrency)

    async def run_batch(tasks: list[PoppedTask]) -> list[Outcome]:
        if not is_async:
            # abandon_on_cancel: a kill must not wait for a plain function to return.
            return await anyio.to_thread.run_sync(
                _run_sync_batch, fun, tasks, limiter=limiter, abandon_on_cancel=True
            )
        out = []
        for task in tasks:
            try:
                ys = await fun(**task.xs)
            except Exception as exc:  # the function's failure fails its task; the worker goes on
                out.append(_failure(task.key, exc))
            else:
                out.append(_check_result(ys, task.key))
        return out

    async def slot() -> None:
        batch = 1
        while not worker.terminated:
            tasks = await worker.pop_tasks(batch, timeout=None)
            if not tasks:
                continue
            started = time.perf_counter()
            writer.add(await run_batch(tasks))
            elapsed = time.perf_counter() - started
            if elapsed < FAST_BATCH and len(tasks) == batch:
                batch = min(batch * 2, max_batch)
            elif elapsed > SLOW_BATCH:
                batch = max(1, batch // 2)

    async with anyio.create_task_group() as outer:
        outer.start_soon(writer.run)
        try:
            async with anyio.create_task_group() as slots:
                for _ in range(concurrency):
                    slots.start_soon(slot)
        finally:
            writer.close()
    log.info("worker loop ended", worker_id=worker.worker_id)
