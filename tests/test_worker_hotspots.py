"""The worker's cheap per-task paths keep every guarantee (issue 11, worker hot spots).

An async function's tasks share one cancel scope per batch: a cancellation or
a deadline stops only the task running at the time, and the rest of the batch
runs on. Results are encoded once, by the executor, and stored as those bytes.
An idle ``fetch_new_tasks(timeout=...)`` reads the finished list once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis.asyncio

from rushpy import Controller, RedisConfig, Worker, run_function
from rushpy.models import PoppedTask
from rushpy.scripts import script
from rushpy.worker.core import components
from rushpy.worker.execution import Executor, Outcome
from tests import funcs

pytestmark = pytest.mark.usefixtures("anyio_backend")


def tasks(*specs: tuple[str, float | None]) -> list[PoppedTask]:
    return [PoppedTask(key=key, xs={"x": key}, timeout=timeout) for key, timeout in specs]


async def run_batch(
    config: RedisConfig,
    network_id: str,
    fun: Callable[..., Any],
    batch: list[PoppedTask],
    while_running: Callable[[Worker], Any] | None = None,
) -> dict[str, Outcome]:
    """Run ``batch`` through a worker's executor; ``while_running`` runs alongside it."""
    async with Worker(network_id, config=config) as worker:
        parts = components(worker)
        for task in batch:
            parts.tracker.claimed(task.key, task.attempt)
        executor = Executor(fun, parts.tracker, 1, parts.inputs)
        out: list[Outcome] = []
        async with anyio.create_task_group() as tg:
            if while_running is not None:
                tg.start_soon(while_running, worker)
            out = await executor.run_batch(batch, None)
            tg.cancel_scope.cancel()
    return {o[0]: o for o in out}


async def test_a_cancelled_task_stops_alone_and_the_batch_runs_on(
    config: RedisConfig, network_id: str
) -> None:
    started = anyio.Event()

    async def fun(x: str) -> dict[str, str]:
        if x == "a":
            started.set()
            await anyio.sleep_forever()
        return {"y": x}

    async def cancel_a(worker: Worker) -> None:
        await started.wait()
        components(worker).tracker.cancel("a")

    out = await run_batch(config, network_id, fun, tasks(("a", None), ("b", None), ("c", None)), cancel_a)
    assert "a" not in out  # cancelled: no outcome (the controller recorded the failure)
    assert out["b"][2] and out["c"][2], out


async def test_a_deadline_stops_its_task_only(config: RedisConfig, network_id: str) -> None:
    async def fun(x: str) -> dict[str, str]:
        if x == "slow":
            await anyio.sleep_forever()
        if x == "after":
            # Longer than the first task's timeout: its deadline must not carry over.
            await anyio.sleep(0.2)
        return {"y": x}

    batch = tasks(("quick", 0.1), ("after", None), ("slow", 0.05))
    out = await run_batch(config, network_id, fun, batch)
    assert out["quick"][2] and out["after"][2], out
    assert not out["slow"][2]
    assert out["slow"][3]["condition"]["type"] == "TaskTimeout"


async def test_a_swallowed_cancellation_does_not_stop_the_next_task(
    config: RedisConfig, network_id: str
) -> None:
    started = anyio.Event()

    async def fun(x: str) -> dict[str, str]:
        if x == "stubborn":
            started.set()
            try:
                await anyio.sleep_forever()
            except BaseException:  # a badly behaved function that swallows its cancellation
                return {"y": "swallowed"}
        await anyio.sleep(0.01)  # awaits: would be cancelled in a still-cancelled scope
        return {"y": x}

    async def cancel(worker: Worker) -> None:
        await started.wait()
        components(worker).tracker.cancel("stubborn")

    out = await run_batch(config, network_id, fun, tasks(("stubborn", None), ("next", None)), cancel)
    assert out["next"][2], out
    assert out["stubborn"][2]  # its late result is written, and discarded by the attempt fence


async def test_results_are_stored_as_the_executor_encoded_them(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": 3}, {"x": 4}])
    async with Worker(network_id, config=config) as worker:

        async def stop_when_done() -> None:
            await controller.wait_for_tasks(keys, timeout=30)
            worker.set_terminated()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_done)
            await run_function(worker, funcs.square, idle_timeout=30)
    rows = await controller.fetch_tasks(keys)
    assert sorted(r["y"] for r in rows) == [9, 16]


async def test_an_idle_fetch_with_a_timeout_reads_the_finished_list_once(controller: Controller) -> None:
    await controller.fetch_new_tasks()  # the cache is up to date
    client = controller._store.client
    before = int((await client.info("commandstats"))["cmdstat_lrange"]["calls"])
    assert len(await controller.fetch_new_tasks(timeout=0.01)) == 0
    after = int((await client.info("commandstats"))["cmdstat_lrange"]["calls"])
    assert after - before == 1


async def test_a_result_reaches_the_server_before_the_next_pop(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    """An idle worker's writer sends the result before its slot pops again (W2's critical path)."""
    shas = {script("complete").sha: "complete", script("pop").sha: "pop"}
    seen: list[str] = []
    monitor_client = redis.asyncio.Redis.from_url(config.to_url(include_password=True))
    async with Worker(network_id, config=config) as worker, anyio.create_task_group() as tg:
        tg.start_soon(run_function, worker, funcs.square)
        await controller.wait_for_tasks(await controller.push_tasks([{"x": 1}]), timeout=30)
        async with monitor_client.monitor() as monitor:
            keys = await controller.push_tasks([{"x": 2}])
            async for command in monitor.listen():
                words = command["command"].split()
                if words[0] == "EVALSHA" and network_id in command["command"] and words[1] in shas:
                    seen.append(shas[words[1]])
                if "complete" in seen:
                    break
        await controller.wait_for_tasks(keys, timeout=30)
        worker.set_terminated()
    await monitor_client.aclose()
    assert seen[0] == "complete", seen
