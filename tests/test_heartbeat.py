"""Heartbeats: validated settings, a key that expires, never resurrects, and keeps
beating while the task function is busy."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
from pathlib import Path

import anyio
import pytest
import redis.asyncio

import rushpy
from rushpy import ConfigError, Controller, EmbeddedServer, RedisConfig, Worker, WorkerState
from rushpy.config import heartbeat_settings
from rushpy.keys import Keys
from rushpy.worker.registration import Heartbeat
from tests.crash_funcs import hold_gil
from tests.funcs import burn, square
from tests.helpers import never_lost_while_running


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


@pytest.mark.parametrize("state", [WorkerState.KILLED, WorkerState.TERMINATED])
async def test_heartbeat_never_resurrects_after_the_worker_was_stopped(
    controller: Controller, config: RedisConfig, network_id: str, state: WorkerState
) -> None:
    client = controller._store.client
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as w:
        key = controller._keys.heartbeat(w.worker_id)
        # Stopped on purpose (a kill recorded by the controller): the worker leaves
        # the running set for good; neither its loop nor its sidecar brings the key back.
        assert await controller._store.workers.set_worker_state(w.worker_id, state)
        await client.delete(key)
        await anyio.sleep(0.5)  # five periods in which the worker would have beaten
        assert not await client.exists(key)
        assert w.terminated, "a worker that no longer counts as running stops"
    assert (await controller.worker_info())[0]["state"] == state.value


async def test_heartbeat_refused_after_being_declared_lost_brings_the_worker_back(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    client = controller._store.client
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as w:
        key = controller._keys.heartbeat(w.worker_id)
        assert await controller._store.workers.set_worker_state(w.worker_id, WorkerState.LOST)
        await client.delete(key)
        # Without popping: the refused beat alone re-registers it, with a fresh heartbeat.
        with anyio.fail_after(10):
            while (await controller.worker_info())[0]["state"] != "running":
                await anyio.sleep(0.05)
        assert await client.exists(key)
        assert not w.terminated
        assert (await controller.worker_info())[0]["rejoins"] == 1
    assert (await controller.worker_info())[0]["state"] == "terminated"


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


# -- the heartbeat sidecar -------------------------------------------------------------------------


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")


def sidecars_of(pid: int) -> list[int]:
    """Heartbeat sidecar processes started by process ``pid``."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    out = []
    for child in children:
        with contextlib.suppress(OSError):
            if b"rushpy.worker.sidecar_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
    return out


async def one_sidecar(pid: int) -> int:
    with anyio.fail_after(20):
        while not (found := sidecars_of(pid)):
            await anyio.sleep(0.05)
    [sidecar] = found
    return sidecar


async def test_a_function_holding_the_gil_does_not_make_its_worker_lost(network_id: str) -> None:
    # The password reaches the sidecar in its environment, never on its command line.
    password = "sidecar-secret-81"
    # Short enough that the event-loop beat alone loses the worker at once, long enough that
    # a loaded 2-core machine schedules the sidecar process in time.
    expire = 1.0
    with EmbeddedServer(password=password) as server:
        async with Controller(network_id, config=server.config, shutdown_timeout=5) as rush:
            [wid] = await rush.start_local_workers(
                1, fun=hold_gil, heartbeat_period=0.25, heartbeat_expire=expire
            )
            await rush.wait_for_workers(1, timeout=30)
            sidecar = await one_sidecar(rush.local_workers[wid].process.pid)
            assert password.encode() not in Path(f"/proc/{sidecar}/cmdline").read_bytes()
            # One C call that keeps the GIL for 10 expiries: the worker's event loop stands still.
            [key] = await rush.push_tasks([{"seconds": int(10 * expire)}])
            checks = await never_lost_while_running(rush, key)
            assert checks >= 40, "the function should have run for about 10 s"
            [row] = await rush.wait_for_tasks([key], timeout=30)
            assert row["state"] == "finished"
            assert row["slept"] == 10
            assert row["worker_id"] == wid
            assert (await rush.worker_info())[0]["state"] == "running"


async def test_the_sidecar_dies_with_its_worker(controller: Controller) -> None:
    [wid] = await controller.start_local_workers(1, fun=square, heartbeat_period=0.2, heartbeat_expire=0.6)
    await controller.wait_for_workers(1, timeout=30)
    process = controller.local_workers[wid].process
    sidecar = await one_sidecar(process.pid)
    process.kill()  # no cleanup at all
    with anyio.fail_after(10):
        while not process_gone(sidecar):
            await anyio.sleep(0.05)
    # Nobody beats any more: the worker is found lost.
    with anyio.fail_after(10):
        while not (found := await controller.detect_lost_workers()):
            await anyio.sleep(0.05)
    assert found == [wid]


async def test_a_clean_exit_stops_the_sidecar_and_deletes_the_key(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    client = controller._store.client
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as w:
        key = controller._keys.heartbeat(w.worker_id)
        heartbeat = w._heartbeat
        assert heartbeat is not None
        with anyio.fail_after(20):
            while heartbeat.sidecar is None:
                await anyio.sleep(0.02)
        sidecar = heartbeat.sidecar.pid
        assert sidecar is not None
        assert sidecar in sidecars_of(os.getpid())
    assert process_gone(sidecar)
    await anyio.sleep(0.3)  # a late beat would bring the key back
    assert not await client.exists(key)
    assert (await controller.worker_info())[0]["state"] == "terminated"


async def test_the_loop_beats_on_when_the_sidecar_dies(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    client = controller._store.client
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as w:
        heartbeat = w._heartbeat
        assert heartbeat is not None
        with anyio.fail_after(20):
            while heartbeat.sidecar is None:
                await anyio.sleep(0.02)
        pid = heartbeat.sidecar.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(10):
            while heartbeat.sidecar is not None and not process_gone(pid):
                await anyio.sleep(0.02)
        for _ in range(8):  # over two expiries: the loop's own beat keeps the key
            await anyio.sleep(0.1)
            assert await client.exists(controller._keys.heartbeat(w.worker_id))
        assert await controller.detect_lost_workers() == []


async def test_a_sidecar_that_cannot_start_leaves_the_loop_beating(
    controller: Controller, config: RedisConfig, network_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = controller._store.client
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as w:
        for _ in range(6):
            await anyio.sleep(0.1)
            assert await client.exists(controller._keys.heartbeat(w.worker_id))
        assert w._heartbeat is not None and w._heartbeat.sidecar is None
        assert not w.terminated


async def test_a_refusal_that_cannot_be_answered_keeps_beating(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async def unreachable(why: str) -> bool:
        raise rushpy.ConnectionFailedError(f"cannot ask the server ({why})")

    async with Worker(network_id, config=config) as w:
        heartbeat = Heartbeat(w._store, w.worker_id, 0.1, 0.3, on_refused=unreachable)
        # Redis did not answer: try again at the next refused beat rather than stop.
        assert await heartbeat._refused("heartbeat refused")
        assert not w.terminated
