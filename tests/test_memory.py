"""Long-running workers and controllers do not grow with tasks they never asked about."""

from __future__ import annotations

from pathlib import Path

import anyio

from rushpy import Controller, RedisConfig
from tests import funcs


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def test_worker_memory_stays_flat_over_200k_tasks(config: RedisConfig, network_id: str) -> None:
    """Every finished task is announced to every listener; a worker must not keep them.

    It kept one entry per task finished anywhere in the network (about 180 B
    each: 36 MB over 200,000 tasks).
    """
    async with Controller(network_id, config=config, shutdown_timeout=5) as rush:
        [wid] = await rush.start_local_workers(1, fun=funcs.square)
        await rush.wait_for_workers(1, timeout=30)
        pid = rush.local_workers[wid].process.pid
        # Warm up: the first tasks and announcements allocate what the worker needs anyway.
        await rush.wait_for_tasks(await rush.push_tasks([{"x": i} for i in range(100)]), timeout=30)
        await rush.push_finished_tasks([{"x": i} for i in range(5_000)], [{"y": 0}])
        await anyio.sleep(0.5)
        before = rss_bytes(pid)
        with anyio.fail_after(120):
            for start in range(0, 200_000, 20_000):
                await rush.push_finished_tasks([{"x": start + i} for i in range(20_000)], [{"y": 0}])
            # The worker read every announcement once it ran a task pushed after them
            # (its listener and its loop share one event loop, messages in order).
            await rush.wait_for_tasks(await rush.push_tasks([{"x": 1}]), timeout=60)
            await anyio.sleep(0.5)
        growth = rss_bytes(pid) - before
        assert growth < 8 * 2**20, f"worker RSS grew by {growth / 2**20:.1f} MiB over 200,000 tasks"
        await rush.reset()
