"""Task functions for the benchmarks (importable by worker processes)."""

from __future__ import annotations

import asyncio

from rushpy import Worker


def noop(x: int) -> dict[str, int]:
    return {"y": x}


async def async_noop(x: int) -> dict[str, int]:
    return {"y": x}


async def async_payload_size(**xs: object) -> dict[str, int]:
    """W5: count what arrived (parameters, plus the length of any vector), so the driver can check it."""
    return {"y": sum(len(v) if isinstance(v, list) else 1 for v in xs.values())}


async def async_sleep(x: int, duration: float = 1.0) -> dict[str, int]:
    """A task that waits ``duration`` seconds without computing (many workers per process)."""
    await asyncio.sleep(duration)
    return {"y": x}


async def sleeping_loop(worker: Worker, rounds: int = 3, duration: float = 1.0) -> None:
    """Decentralized mode: propose a task, run it, record it, ``rounds`` times.

    Starts on a signal: the first task it pops (one per worker, pushed by the
    benchmark once every worker is up, taken by a blocking pop), which it
    records at once. Reading the shared results is left out: with hundreds of
    workers on two cores that alone would fill the machine (its cost per row is
    measured by ``benchmarks.scale``).
    """
    signal = await worker.pop_task(timeout=None)
    if signal is not None:
        await worker.finish_tasks([signal.key], [{"y": -1}])
    for i in range(rounds):
        [key] = await worker.push_running_tasks([{"x": i}])
        await asyncio.sleep(duration)
        await worker.finish_tasks([key], [{"y": i}])
