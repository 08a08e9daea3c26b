"""Redis memory per small finished task (issue 11 target: <= 250 bytes).

Run from the repository root:

    .venv/bin/python -m benchmarks.task_memory [N]      (default N = 100000)

On a private embedded server it pushes N tasks ``xs={"x": i}``, runs them with
an in-process worker (``run_function``, results ``ys={"y": i}``), waits until
all are finished and prints:

- the ``INFO memory`` ``used_memory`` delta divided by N (the target figure),
  measured with the worker still registered, so its own keys are in both
  readings;
- what each entry of the rows hash costs (``MEMORY USAGE`` of the hash divided
  by N), one packed row's size, and its fields as stored
  (:mod:`rushpy.stored_rows`);
- what each entry of the finished list and of the all-tasks list costs
  (``MEMORY USAGE`` of the list divided by N).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any

import anyio
import redis.asyncio

import rushpy
from rushpy.keys import Keys
from rushpy.stored_rows import unpack_row

__all__ = ["main", "measure"]


async def echo(x: int) -> dict[str, int]:
    """The benchmark's task: returns its input as ``y``."""
    return {"y": x}


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name


async def _used(client: redis.asyncio.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def _wait_finished(rush: rushpy.Controller, n: int) -> None:
    while await rush.n_finished_tasks() < n:
        await anyio.sleep(0.2)


async def measure(config: rushpy.RedisConfig, n: int) -> dict[str, Any]:
    """Push, run and measure ``n`` small tasks on the server of ``config``; returns the figures."""
    network = f"bench-mem-{uuid.uuid4().hex[:8]}"
    keys = Keys(network)
    raw = redis.asyncio.Redis.from_url(config.to_url(include_password=True))
    try:
        async with (
            rushpy.Controller(network, config=config) as rush,
            rushpy.Worker(network, config=config) as worker,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(lambda: rushpy.run_function(worker, echo))
            # Warm up: scripts loaded, buffers and the worker's keys in place.
            warm = await rush.push_tasks([{"x": -1}])
            await rush.wait_for_tasks(warm, timeout=60)
            await anyio.sleep(0.5)
            before = await _used(raw)
            pushed: list[str] = []
            for start in range(0, n, 10_000):
                pushed += await rush.push_tasks([{"x": i} for i in range(start, min(n, start + 10_000))])
            with anyio.fail_after(600):
                await _wait_finished(rush, n + 1)
            await anyio.sleep(0.5)
            after = await _used(raw)
            row = await raw.hget(keys.rows, pushed[-1]) or b""
            flat = unpack_row(row)
            rows_bytes = await raw.memory_usage(keys.rows, samples=0) or 0
            finished_bytes = await raw.memory_usage(keys.finished, samples=0) or 0
            tasks_bytes = await raw.memory_usage(keys.all_tasks, samples=0) or 0
            worker.set_terminated()
        await _reset(config, network)
    finally:
        await raw.aclose()
    return {
        "n": n,
        "per_task": (after - before) / n,
        "row": len(row),
        "fields": {_text(k): len(v) for k, v in zip(flat[::2], flat[1::2], strict=True)},
        "rows_entry": rows_bytes / (n + 1),
        "task_key": len(pushed[-1]),
        "finished_entry": finished_bytes / (n + 1),
        "tasks_entry": tasks_bytes / (n + 1),
    }


async def _reset(config: rushpy.RedisConfig, network: str) -> None:
    async with rushpy.Controller(network, config=config) as rush:
        await rush.reset()


def main() -> None:
    """Command line entry: print the figures for N tasks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=100_000, help="number of tasks")
    n = parser.parse_args().n
    with rushpy.EmbeddedServer() as server:
        out = asyncio.run(measure(server.config, n))
    print(f"tasks: {out['n']:,}")
    print(f"used_memory delta per finished task: {out['per_task']:.0f} bytes")
    print(f"rows hash per entry: {out['rows_entry']:.1f} bytes; one packed row: {out['row']} bytes")
    print(f"  fields (value bytes): {out['fields']}")
    print(f"finished list per entry: {out['finished_entry']:.1f} bytes")
    print(f"all-tasks list per entry: {out['tasks_entry']:.1f} bytes")


if __name__ == "__main__":
    main()
