"""A network's whole life cycle through rushpy's public API, for the least-privilege tests.

Run as a user limited by :func:`rushpy.acl.acl_rules`, every command rushpy
sends (directly or inside its Lua scripts) must be allowed: a command missing
from the rules fails this scenario with the server's ``NOPERM`` refusal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio

from rushpy import Controller, RedisConfig, TaskState, Worker

__all__ = ["decentralized_loop", "run_life_cycle"]

TIMEOUT = 30


async def decentralized_loop(worker: Worker, rounds: int = 3) -> None:
    """A worker loop (decentralized mode): reads the results so far, proposes and runs tasks."""
    for i in range(rounds):
        seen = await worker.fetch_finished_tasks()
        [key] = await worker.push_running_tasks([{"x": 100 + i}])
        await worker.finish_tasks([key], [{"y": len(seen)}])


async def run_life_cycle(config: RedisConfig, network_id: str) -> dict[str, Any]:
    """Push, run, wait, fail, retry, cancel, log, export, reset and import a network; returns what it saw."""
    seen: dict[str, Any] = {}
    async with Controller(network_id, config=config, shutdown_timeout=10) as rush:
        await rush.start_local_workers(2, fun="tests.funcs:fail_on_odd_sized")
        await rush.wait_for_workers(2, timeout=TIMEOUT)
        keys = await rush.push_tasks([{"x": i} for i in range(10)], max_retries=1)
        await rush.wait_for_tasks(keys, timeout=TIMEOUT)
        seen["finished"] = sorted(rush_row["y"] for rush_row in (await rush.fetch_finished_tasks()).rows)
        failed = await rush.fetch_failed_tasks()
        seen["failed"] = len(failed)
        seen["a_failure"] = failed.rows[0]["condition"] if len(failed) else None
        seen["new"] = len(await rush.fetch_new_tasks(states=("finished", "failed")))
        async for _ in rush.as_completed(await rush.push_tasks([{"x": 20}]), timeout=TIMEOUT):
            pass
        worker_id = (await rush.worker_info())["worker_id"][0]
        priority = await rush.push_priority_tasks([{"x": 22}], [worker_id])
        await rush.retry_tasks((await rush.tasks_with_state([TaskState.FAILED]))[TaskState.FAILED])
        large = await rush.push_tasks([{"x": 24, "blob": "b" * 200_000}])  # stored once as a large object
        await rush.wait_for_tasks(priority + large, timeout=TIMEOUT)
        finished = await rush.fetch_finished_tasks()
        seen["finished_later"] = sorted(finished["y"])
        seen["large"] = [row["n"] for row in finished.rows if row["x"] == 24]
        seen["status"] = await rush.status()
        seen["log"] = len(await rush.read_log())
        await rush.detect_lost_workers()
        await rush.stop_workers()
        queued = await rush.push_tasks([{"x": 26}, {"x": 28}])
        await rush.cancel_tasks(queued[:1])
        await rush.empty_queue()
        seen["task"] = await rush.fetch_task(queued[0])
        seen["tasks"] = len(await rush.fetch_tasks())
        async with Worker(network_id, config=config) as worker:
            await decentralized_loop(worker)
            popped = await worker.pop_tasks(1)
            if popped:
                await worker.fail_tasks([t.key for t in popped], ["failed on purpose"])
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "network.rushpy"
            await rush.export_network(archive)
            before = await rush.n_tasks()
            await rush.reset(workers=True)
            seen["after_reset"] = await rush.n_tasks()
            await rush.import_network(archive)
            seen["imported"] = (before, await rush.n_tasks())
        await rush.reset(workers=True)
    await anyio.sleep(0)
    return seen
