"""Cost of one-task lookups and of one ``wait_for_tasks`` wake-up, by network size.

Run: .venv/bin/python -m benchmarks.lookup [N ...]   (default 10000 100000)

For each size N it fills a network on a private embedded server with N tasks
(50 % finished, 10 % failed, 40 % queued) and times, as medians:

- ``fetch_task(key)`` of a random task;
- one ``wait_for_tasks`` wake-up: the check of 1 and of 100 open keys
  (``wait_for_tasks(keys, timeout=0)`` runs exactly one check, then raises);
- for comparison, the full snapshot (``states.lua``) that every wake-up took
  before the per-key check.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import rushpy
from rushpy.errors import TaskTimeoutError

__all__ = ["main", "measure"]

_BATCH = 10_000


async def _median_ms(call: Callable[[], Awaitable[Any]], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


async def _fill(rush: rushpy.Controller, n: int) -> tuple[list[str], list[str]]:
    """N tasks: finished, failed and queued; returns (every key, queued keys)."""
    n_finished, n_failed = n // 2, n // 10
    keys: list[str] = []
    for start in range(0, n_finished, _BATCH):
        size = min(_BATCH, n_finished - start)
        keys += await rush.push_finished_tasks([{"x": i} for i in range(size)], [{"y": 1.0}] * size)
    for start in range(0, n_failed, _BATCH):
        size = min(_BATCH, n_failed - start)
        keys += await rush.push_failed_tasks([{"x": i} for i in range(size)], ["failed"] * size)
    queued: list[str] = []
    for start in range(0, n - n_finished - n_failed, _BATCH):
        size = min(_BATCH, n - n_finished - n_failed - start)
        queued += await rush.push_tasks([{"x": i} for i in range(size)])
    return keys + queued, queued


async def measure(config: rushpy.RedisConfig, n: int, repeats: int = 200) -> dict[str, float]:
    """Median milliseconds of each operation in a network of ``n`` tasks (the network is deleted after)."""
    async with rushpy.Controller(f"bench-lookup-{uuid.uuid4().hex[:8]}", config=config) as rush:
        try:
            every, queued = await _fill(rush, n)
            rng = random.Random(1)

            async def fetch_task() -> None:
                await rush.fetch_task(rng.choice(every))

            def wake(keys: Sequence[str]) -> Callable[[], Awaitable[None]]:
                async def check() -> None:
                    with contextlib.suppress(TaskTimeoutError):
                        await rush.wait_for_tasks(keys, timeout=0, detect_lost_workers=False)

                return check

            async def snapshot() -> None:
                await rush._store.reads.snapshot()

            return {
                "fetch_task": await _median_ms(fetch_task, repeats),
                "wake (1 open key)": await _median_ms(wake(queued[:1]), repeats),
                "wake (100 open keys)": await _median_ms(wake(queued[:100]), repeats),
                "old wake: snapshot": await _median_ms(snapshot, max(3, repeats // 20)),
            }
        finally:
            await rush.reset()


def _table(results: dict[int, dict[str, float]]) -> str:
    sizes = list(results)
    names = list(results[sizes[0]])
    head = f"{'operation (median ms)':<24}" + "".join(f"{n:>12,}" for n in sizes)
    rows = [f"{name:<24}" + "".join(f"{results[n][name]:>12.3f}" for n in sizes) for name in names]
    return "\n".join([head, "-" * len(head), *rows])


async def _run(sizes: Sequence[int], repeats: int) -> dict[int, dict[str, float]]:
    with rushpy.EmbeddedServer() as server:
        return {n: await measure(server.config, n, repeats) for n in sizes}


def main(sizes: Sequence[int] = (10_000, 100_000), repeats: int = 200) -> dict[int, dict[str, float]]:
    """Measure at each size and print the table; returns the figures."""
    results = asyncio.run(_run(sizes, repeats))
    print(_table(results))
    return results


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or (10_000, 100_000))
