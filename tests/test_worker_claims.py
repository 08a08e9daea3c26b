"""Claims of an in-process worker: blocking moves, their compensations, adoption, entry and exit."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis.asyncio
import redis.exceptions

from rushpy import Controller, PoppedTask, RedisConfig, RushError, Worker
from rushpy.keys import Keys
from rushpy.store import Store
from tests.helpers import eventually

pytestmark = pytest.mark.usefixtures("anyio_backend")

SCRIPT_COMMANDS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall")




async def script_calls(raw: redis.asyncio.Redis) -> int:
    """Scripts the server ran so far (every client of this test's server)."""
    stats = await raw.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in SCRIPT_COMMANDS)


async def blocked_moves(raw: redis.asyncio.Redis) -> int:
    """Clients blocked in BLMOVE right now (flag ``b``; ``cmd`` is only the last command)."""
    text = await raw.execute_command("CLIENT", "LIST")
    lines = (text.decode() if isinstance(text, bytes) else text).splitlines()
    fields = [dict(f.split("=", 1) for f in line.split(" ") if "=" in f) for line in lines]
    return sum(1 for f in fields if f.get("cmd") == "blmove" and "b" in f.get("flags", ""))


async def pop_in_background(w: Worker, got: list[PoppedTask | None], timeout: float) -> None:
    got.append(await w.pop_task(timeout=timeout))


async def test_a_blocking_move_hands_its_key_to_the_waiting_pop(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    # What one push costs in scripts, measured while nobody waits.
    before = await script_calls(raw)
    await controller.push_tasks([{"x": 0}])
    push_cost = await script_calls(raw) - before
    await controller.empty_queue()
    async with Worker(network_id, config=config) as w:
        got: list[PoppedTask | None] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pop_in_background, w, got, 10)
                await eventually(lambda: _equals(blocked_moves(raw), 2), "the pop waits on both queues")
                before = await script_calls(raw)
                [key] = await controller.push_tasks([{"x": 1}])
        after = await script_calls(raw)
    assert got[0] is not None and got[0].key == key
    # The delivered key is claimed at once: one script (the claim), no pop script first.
    assert after - before == push_cost + 1


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_work_on_the_priority_queue_stops_the_wait_on_the_shared_queue(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    async with Worker(network_id, config=config) as w, Worker(network_id, config=config) as other:
        got: list[PoppedTask | None] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pop_in_background, w, got, 10)
                await eventually(lambda: _equals(blocked_moves(raw), 2), "the pop waits on both queues")
                [mine] = await controller.push_priority_tasks([{"x": 1}], priority=[w.worker_id])
        assert got[0] is not None and got[0].key == mine
        # w is busy now: no wait on the shared queue stays armed, so shared work goes elsewhere.
        await eventually(lambda: _equals(blocked_moves(raw), 0), "the shared-queue wait stops")
        [shared] = await controller.push_tasks([{"x": 2}])
        task = await other.pop_task(timeout=0)
        assert task is not None and task.key == shared


async def test_tasks_claimed_before_a_failed_claim_reply_are_adopted(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    keys = Keys(network_id)
    async with Worker(network_id, config=config) as w:
        [broken] = await controller.push_tasks([{"x": 0}])
        # A worker running set of the wrong type makes claim.lua refuse before writing.
        await raw.set(keys.worker_running(w.worker_id), b"not a set")
        # The claim fails: the worker cannot tell whether it happened on the server.
        with pytest.raises((RushError, redis.exceptions.RedisError)):
            await w.pop_task(timeout=0)
        await raw.delete(keys.worker_running(w.worker_id), keys.pending(w.worker_id))
        # As if that claim had happened with its reply lost: two tasks run on w in
        # Redis, and w does not know them.
        pushed = await controller.push_tasks([{"x": 1}, {"x": 2}])
        store = Store(raw, keys)
        assert await store.tasks.pop_keys(w.worker_id, 2) == pushed
        assert [t.key for t in await store.tasks.claim(w.worker_id, pushed)] == pushed
        adopted = await w.pop_tasks(5, timeout=0)
        assert sorted(t.key for t in adopted) == sorted(pushed)
        assert {t.attempt for t in adopted} == {1}
        assert {t.xs["x"] for t in adopted} == {1, 2}
        # Adopted tasks are tracked like claimed ones: their results are recorded.
        assert await w.finish_tasks(pushed, [{"y": 0}]) == [True, True]
        # Adoption happens once: the next pop pops as usual.
        assert await w.pop_tasks(5, timeout=0) == []
        await raw.delete(keys.task(broken))


async def test_a_worker_that_cannot_register_leaves_nothing_open(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    await raw.set(Keys(network_id).worker("broken"), b"not a hash")
    with anyio.fail_after(10):
        # Left open, the worker's task group would break this enclosing scope's exit.
        with pytest.raises((RushError, redis.exceptions.RedisError)):
            async with Worker(network_id, config=config, worker_id="broken"):
                pytest.fail("entered a worker that did not register")
    await raw.delete(Keys(network_id).worker("broken"))


async def test_an_exit_that_cannot_settle_leaves_the_worker_to_lost_worker_detection(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    keys = Keys(network_id)
    async with Worker(network_id, config=config, heartbeat_period=10) as w:
        await raw.set(keys.worker_running(w.worker_id), b"not a set")
    # Its tasks could not be settled: it still counts as running, and its heartbeat
    # stays until it expires; detection then settles it like a crashed worker.
    assert await raw.sismember(keys.running_workers, w.worker_id)
    assert await raw.exists(keys.heartbeat(w.worker_id))
    await raw.delete(keys.worker_running(w.worker_id), keys.heartbeat(w.worker_id))
