"""The worker's one stop state and the sources that feed it."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio

from rushpy import Controller, EmbeddedServer, RedisConfig, Worker, WorkerState, run_function
from rushpy.keys import Keys
from rushpy.worker.core import components
from rushpy.worker.stop import StopState
from tests import funcs
from tests.helpers import eventually

pytestmark = pytest.mark.usefixtures("anyio_backend")




# -- StopState on its own ------------------------------------------------------------------
def test_terminate_is_set_once_and_tells_listeners_once() -> None:
    stop = StopState("w")
    calls: list[str] = []
    stop.subscribe(lambda: calls.append("changed"))
    assert not stop.terminated and not stop.killed and not stop.drain_requested
    stop.terminate("first")
    stop.terminate("second")
    assert stop.terminated and not stop.killed
    assert stop.final_state is WorkerState.TERMINATED
    assert calls == ["changed"]


def test_kill_implies_terminate_and_is_recorded_as_a_kill() -> None:
    stop = StopState("w")
    calls: list[str] = []
    stop.subscribe(lambda: calls.append("changed"))
    stop.terminate()
    stop.kill("now")
    stop.kill("again")
    assert stop.terminated and stop.killed
    assert stop.final_state is WorkerState.KILLED
    # The kill is a change of its own even after a termination: waiters see it.
    assert calls == ["changed", "changed"]


def test_drain_does_not_terminate_by_itself() -> None:
    stop = StopState("w")
    calls: list[str] = []
    stop.subscribe(lambda: calls.append("changed"))
    stop.request_drain()
    stop.request_drain()
    assert stop.drain_requested and not stop.terminated
    assert calls == ["changed"]


@pytest.mark.parametrize(
    ("found", "terminated", "drain", "killed"),
    [
        ({"terminate": True, "drain": False, "kill": False}, True, False, False),
        ({"terminate": False, "drain": True, "kill": False}, False, True, False),
        ({"terminate": False, "drain": False, "kill": True}, True, False, True),
        ({"terminate": False, "drain": False, "kill": False}, False, False, False),
    ],
)
def test_update_applies_each_request_found_in_redis(
    found: dict[str, bool], terminated: bool, drain: bool, killed: bool
) -> None:
    stop = StopState("w")
    stop.update(**found)
    assert (stop.terminated, stop.drain_requested, stop.killed) == (terminated, drain, killed)


async def test_wait_killed_returns_once_killed() -> None:
    stop = StopState("w")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop.wait_killed)
            await anyio.sleep(0.05)
            stop.terminate()
            await anyio.sleep(0.05)
            stop.kill()


# -- sources -------------------------------------------------------------------------------
async def test_stop_requests_in_redis_before_entry_apply(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    keys = Keys(network_id)
    await raw.set(keys.terminate_all, b"1")
    async with Worker(network_id, config=config) as w:
        assert w.drain_requested and not w.terminated
        assert await w.pop_task(timeout=5) is None
        assert w.terminated


async def test_kill_through_the_network_is_a_kill(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        await controller.stop_workers("kill", [w.worker_id])
        await eventually(lambda: w.killed, "the worker hears of the kill")
        assert w.terminated
    rows = {r["worker_id"]: r for r in await controller.worker_info()}
    assert rows[w.worker_id]["state"] == "killed"


async def test_a_reconnect_alone_does_not_stop_the_worker(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    async with Worker(network_id, config=config) as w:
        channel = Keys(network_id).terminate_signal(w.worker_id)
        before = w._session.events.counter(channel)
        await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        # The listener notices the drop and bumps every channel once it is back.
        await eventually(lambda: w._session.events.counter(channel) != before, "the listener reconnects")
        await anyio.sleep(0.1)  # the watcher has read the (absent) stop keys
        assert not w.terminated and not w.killed and not w.drain_requested


@pytest.mark.parametrize("request_key", ["terminate", "kill", "drain"])
async def test_a_request_missed_while_disconnected_is_read_from_its_key(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis, request_key: str
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = Keys(network_id)
        key = {
            "terminate": keys.terminate_signal(w.worker_id),
            "kill": keys.kill_signal(w.worker_id),
            "drain": keys.terminate_all,
        }[request_key]
        await raw.set(key, b"1")  # the key without its message: as if the message was missed
        await anyio.sleep(0.1)
        assert not (w.terminated or w.drain_requested)
        await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        flags = {
            "terminate": lambda: w.terminated,
            "kill": lambda: w.killed,
            "drain": lambda: w.drain_requested,
        }
        await eventually(flags[request_key], f"the worker reads the {request_key} key after reconnecting")


async def test_set_killed_ends_run_function_at_once(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1, "duration": 60}], max_retries=1)
    async with Worker(network_id, config=config) as w:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: _run(w))
                await eventually(lambda: controller.is_running_task(key), "the task runs")
                w.set_killed()
        assert w.killed and w.terminated
    rows = {r["worker_id"]: r for r in await controller.worker_info()}
    assert rows[w.worker_id]["state"] == "killed"
    # Interrupted by the kill with attempts left: back in the queue.
    assert (await controller.tasks_with_state("queued"))["queued"] == [key]


async def _run(w: Worker) -> None:
    await run_function(w, funcs.async_sleepy)


async def test_set_killed_records_a_kill(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        w.set_killed()
        assert w.killed and components(w).stop.final_state is WorkerState.KILLED


async def test_idle_timeout_terminates_the_worker(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        with anyio.fail_after(10):
            await run_function(w, funcs.square, concurrency=2, idle_timeout=0.3)
        assert w.terminated and not w.killed


async def test_a_stop_request_is_read_after_an_outage_longer_than_the_reconnect_budget(
    network_id: str,
) -> None:
    with EmbeddedServer() as server:
        # Waiters on the events give up after the budget; the worker must live on.
        config = server.config.model_copy(update={"reconnect_budget": 0.2})
        async with Worker(network_id, config=config) as w:
            server.kill()
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(server.restart)
            client = redis.asyncio.Redis.from_url(config.to_url(include_password=True))
            try:
                await client.set(Keys(network_id).terminate_signal(w.worker_id), b"1")
            finally:
                await client.aclose()
            await eventually(lambda: w.terminated, "the worker reads its terminate key", timeout=15)
