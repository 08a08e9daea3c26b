"""Heartbeats: validated settings, a key that expires, never resurrects, and keeps
beating while the task function is busy."""

from __future__ import annotations

import math

import anyio
import pytest
import redis.asyncio

from rushpy import ConfigError, Controller, RedisConfig, Worker, WorkerState
from rushpy.config import heartbeat_settings
from rushpy.keys import Keys
from tests.funcs import burn


@pytest.mark.parametrize(
    ("period", "expire", "named"),
    [
        (0, None, "heartbeat_period=0"),
        (-1.0, 5.0, "heartbeat_period=-1.0"),
        (math.nan, None, "heartbeat_period=nan"),
        (True, None, "heartbeat_period=True"),
        (1.0, 1.5, "heartbeat_expire=1.5"),
        (1.0, -3.0, "heartbeat_expire=-3.0"),
        (None, 3.0, "heartbeat_expire=3.0"),
    ],
)
def test_invalid_heartbeat_settings_name_the_value(
    period: float | None, expire: float | None, named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        heartbeat_settings(period, expire)


def test_heartbeat_defaults() -> None:
    assert heartbeat_settings(None, None) is None
    assert heartbeat_settings(2, None) == (2.0, 6.0)
    assert heartbeat_settings(1, 2) == (1.0, 2.0)


def test_worker_rejects_bad_heartbeat_before_connecting(config: RedisConfig, network_id: str) -> None:
    with pytest.raises(ConfigError, match="at least twice"):
        Worker(network_id, config=config, heartbeat_period=1, heartbeat_expire=1)


async def test_worker_keeps_an_expiring_heartbeat(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    client = controller._store.client
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.4) as w:
        key = controller._keys.heartbeat(w.worker_id)
        info = (await controller.worker_info())[0]
        assert info["heartbeat"] is True
        assert info["heartbeat_period"] == 0.1
        for _ in range(6):  # across several periods the key is always there, with a TTL
            ttl = await client.pttl(key)
            assert 0 < ttl <= 400
            await anyio.sleep(0.1)
    # The worker's exit deletes the key (test_exit_deletes_the_heartbeat_key).
    assert not await client.exists(key)


async def test_heartbeat_never_resurrects_after_the_worker_was_declared_lost(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    client = controller._store.client
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as w:
        key = controller._keys.heartbeat(w.worker_id)
        # What lost-worker detection does: the worker leaves the running set.
        assert await controller._store.workers.set_worker_state(w.worker_id, WorkerState.LOST)
        await client.delete(key)
        await anyio.sleep(0.5)  # five periods in which the worker would have beaten
        assert not await client.exists(key)
        assert w.terminated, "a worker that no longer counts as running stops"
    assert (await controller.worker_info())[0]["state"] == "lost"


async def test_cpu_bound_function_does_not_stop_the_heartbeat(controller: Controller) -> None:
    expire = 0.3
    await controller.start_local_workers(1, fun=burn, heartbeat_period=0.1, heartbeat_expire=expire)
    (worker_id,) = await controller.wait_for_workers(1, timeout=30)
    key = controller._keys.heartbeat(worker_id)
    client = controller._store.client
    [task] = await controller.push_tasks([{"seconds": 10 * expire}])
    with anyio.fail_after(30):
        while not await controller.is_running_task(task):
            await anyio.sleep(0.02)
    samples = 0
    while await controller.is_running_task(task):
        assert await client.exists(key), f"heartbeat expired after {samples} samples"
        samples += 1
        await anyio.sleep(0.05)
    assert samples >= 20, "the function should have run for about 3 s"
    rows = await controller.wait_for_tasks([task], timeout=30)
    assert rows[0]["state"] == "finished"
    assert rows[0]["loops"] > 0


@pytest.mark.parametrize("stop", ["terminate", "kill"])
async def test_exit_deletes_the_heartbeat_key(
    controller: Controller, config: RedisConfig, network_id: str, stop: str
) -> None:
    # The worker settles its own tasks on exit (a kill included), so nothing is
    # left for lost-worker detection: its heartbeat key goes at once instead of
    # lingering until it expires.
    client = redis.asyncio.Redis.from_url(config.to_url(include_password=True))
    try:
        async with Worker(network_id, config=config, heartbeat_period=10) as w:
            key = Keys(network_id).heartbeat(w.worker_id)
            assert await client.pttl(key) > 20_000
            if stop == "kill":
                w.set_killed()
            else:
                w.set_terminated()
        assert not await client.exists(key), f"heartbeat key left after a {stop}"
        assert await client.smembers(Keys(network_id).running_workers) == set()
    finally:
        await client.aclose()
