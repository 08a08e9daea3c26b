"""Where the time of one W2 round trip goes (controller-side timestamps).

Run: .venv/bin/python -m benchmarks.w2_breakdown

One local worker; 300 sequential single tasks. For each task the controller
records when its push returned, when the "finished" event arrived, and when the
result rows were read; medians are printed relative to the start of the push.
The instrumentation wraps methods of this process only; workers run unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import rushpy
from benchmarks.funcs import async_noop, noop
from rushpy.cache import ResultCache
from rushpy.reads import Reads
from rushpy.store import TaskStore

STAMPS: dict[str, list[float]] = {}


def stamp(name: str) -> None:
    STAMPS.setdefault(name, []).append(time.perf_counter())


def instrument() -> None:
    create = TaskStore.create_tasks
    on_event = Reads.on_event
    update = ResultCache.update

    async def create_tasks(self: TaskStore, *args: Any, **kwargs: Any) -> list[str]:
        stamp("push start")
        out = await create(self, *args, **kwargs)
        stamp("push returned")
        return out

    def event(self: Reads, channel: str, data: bytes) -> None:
        if data.startswith(b"F"):
            stamp("event received")
        on_event(self, channel, data)

    async def read_rows(self: ResultCache, *, announced_only: bool = False) -> int:
        out = await update(self, announced_only=announced_only)
        if out:
            stamp("rows read")
        return out

    TaskStore.create_tasks = create_tasks  # type: ignore[method-assign]
    Reads.on_event = event  # type: ignore[method-assign]
    ResultCache.update = read_rows  # type: ignore[method-assign]


async def measure(config: rushpy.RedisConfig, fun: Callable[..., Any], label: str) -> None:
    STAMPS.clear()
    async with rushpy.Controller(f"w2b-{label}", config=config) as rush:
        await rush.start_local_workers(1, fun=fun)
        await rush.wait_for_workers(1, timeout=60)
        for i in range(300):
            await rush.push_tasks([{"x": i}])
            while not len(await rush.fetch_new_tasks(timeout=5)):
                pass
        await rush.reset()
    starts = STAMPS["push start"][-200:]
    parts = []
    for name in ("push returned", "event received", "rows read"):
        deltas = sorted(b - a for a, b in zip(starts, STAMPS[name][-200:], strict=True))
        parts.append(f"{name} {deltas[len(deltas) // 2] * 1e3:.3f} ms")
    print(f"{label}: " + ", ".join(parts))


def main() -> None:
    instrument()
    with rushpy.EmbeddedServer() as server:
        asyncio.run(measure(server.config, noop, "sync"))
        asyncio.run(measure(server.config, async_noop, "async"))


if __name__ == "__main__":
    main()
