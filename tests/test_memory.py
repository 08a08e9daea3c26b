"""Long-running workers and controllers do not grow with tasks they never asked about."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread

from rushpy import Controller, RedisConfig
from tests import funcs

REPO = Path(__file__).resolve().parents[1]


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


# A controller in its own process that never fetches: it only listens (every
# finished task is announced to it) until its input closes.
IDLE_CONTROLLER = """
import sys, anyio
from rushpy import Controller

async def main() -> None:
    async with Controller(sys.argv[1]) as rush:
        await rush.status()
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)

anyio.run(main)
"""


async def test_idle_controller_memory_stays_flat_over_200k_tasks(
    config: RedisConfig, network_id: str
) -> None:
    """A controller that never fetches must not keep the announcements of tasks finished elsewhere."""
    env = dict(os.environ)
    env["RUSHPY_REDIS_URL"] = config.to_url(include_password=True, include_options=True)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", IDLE_CONTROLLER, network_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert await anyio.to_thread.run_sync(proc.stdout.readline) == b"ready\n"
        async with Controller(network_id, config=config, shutdown_timeout=5) as rush:
            # Warm up: the first announcements allocate what the listener needs anyway.
            await rush.push_finished_tasks([{"x": i} for i in range(5_000)], [{"y": 0}])
            await anyio.sleep(0.5)
            before = rss_bytes(proc.pid)
            with anyio.fail_after(120):
                for start in range(0, 200_000, 20_000):
                    await rush.push_finished_tasks([{"x": start + i} for i in range(20_000)], [{"y": 0}])
                await anyio.sleep(1.0)  # the listener reads every announcement meanwhile
            growth = rss_bytes(proc.pid) - before
            assert proc.poll() is None
            assert growth < 8 * 2**20, f"controller RSS grew by {growth / 2**20:.1f} MiB over 200,000 tasks"
            await rush.reset()
    finally:
        proc.kill()
        proc.wait(10)
