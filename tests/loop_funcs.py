"""Worker loops run by the tests, in-process and by worker processes (importable as tests.loop_funcs)."""

from __future__ import annotations

import os
from typing import Any

import anyio

from rushpy import Worker


async def square_loop(worker: Worker, n: int, offset: int = 0) -> None:
    """Propose ``n`` tasks one by one (x = offset .. offset + n - 1), square them, return."""
    for i in range(n):
        if worker.terminated:
            return
        [key] = await worker.push_running_tasks([{"x": offset + i}])
        await worker.finish_tasks([key], [{"y": (offset + i) ** 2}])


async def echo_loop(worker: Worker, **loop_args: Any) -> None:
    """Record the loop arguments it got as the inputs of one task (a round trip check)."""
    [key] = await worker.push_running_tasks([{"args": loop_args}])
    await worker.finish_tasks([key], [{"pid": os.getpid()}])


async def until_terminated(worker: Worker, pause: float = 0.01) -> None:
    """Propose and finish tasks until the worker is asked to stop."""
    i = 0
    while not worker.terminated:
        [key] = await worker.push_running_tasks([{"x": i}])
        await worker.finish_tasks([key], [{"y": i}])
        i += 1
        await anyio.sleep(pause)


async def sleep_forever(worker: Worker) -> None:
    """Hold one running task and ignore termination: only a kill stops it."""
    await worker.push_running_tasks([{"x": 0}])
    await anyio.sleep_forever()


async def failing_loop(worker: Worker, marker: str) -> None:
    """Hold a running task and raise on the first run (creating ``marker``); later runs finish it."""
    [key] = await worker.push_running_tasks([{"x": 1}])
    try:
        with open(marker, "x"):
            pass
    except FileExistsError:
        await worker.finish_tasks([key], [{"y": 1}])
        return
    raise ValueError(f"the loop broke ({marker})")


async def reader_loop(worker: Worker, target: int) -> None:
    """Propose tasks until the network holds ``target`` finished ones, reading every worker's results."""
    while not worker.terminated:
        finished = await worker.fetch_finished_tasks()
        if len(finished) >= target:
            return
        [key] = await worker.push_running_tasks([{"seen": len(finished)}])
        await worker.finish_tasks([key], [{"y": len(finished)}])


async def hybrid_loop(worker: Worker, n_own: int) -> None:
    """Run queued tasks while there are any, and propose ``n_own`` tasks of its own in between."""
    proposed = 0
    while not worker.terminated:
        task = await worker.pop_task(timeout=0)
        if task is not None:
            await worker.finish_tasks([task.key], [{"y": task.xs["x"] ** 2, "source": "queue"}])
        elif proposed < n_own:
            [key] = await worker.push_running_tasks([{"x": 100 + proposed}])
            await worker.finish_tasks([key], [{"y": (100 + proposed) ** 2, "source": "own"}])
            proposed += 1
        else:
            return


def not_async(worker: Worker) -> None:
    """A plain function: not a worker loop."""


async def raise_at_once(worker: Worker) -> None:
    """Raise before creating any task."""
    raise LookupError("nothing to do")


async def first_crashes(worker: Worker) -> None:
    """The first worker of a process (id ending in ``-1``) raises; the others run until terminated."""
    if worker.worker_id.endswith("-1"):
        await anyio.sleep(0.2)
        raise RuntimeError(f"worker {worker.worker_id} broke")
    await until_terminated(worker, pause=0.05)
