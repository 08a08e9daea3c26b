"""Workers that crash, or are declared lost while alive, come back.

A worker that ends any other way than a clean stop (an error out of its loop)
stays detectable: lost-worker detection records it lost and a controller with
``restart_lost_workers`` replaces it; a waiting controller raises instead of
waiting out its timeout once no worker is left. A worker declared lost while
its process is healthy (the server paused past the heartbeat expiry, the
process stopped and continued) re-registers and serves the queue again; the
outcomes of the attempts it held are discarded.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import rushpy
from rushpy import Controller, EmbeddedServer, RedisConfig, Worker
from rushpy.lost import find_lost_workers
from rushpy.worker import run_function
from tests import crash_funcs, funcs
from tests.helpers import eventually, spawn_cli, wait_exit

pytestmark = pytest.mark.anyio



async def worker_states(controller: Controller) -> dict[str, str]:
    info = await controller.worker_info()
    return dict(zip(info["worker_id"], info["state"], strict=True))


async def worker_row(controller: Controller, worker_id: str) -> dict[str, Any]:
    return next(r for r in await controller.worker_info() if r["worker_id"] == worker_id)


async def task_row(controller: Controller, key: str) -> dict[str, Any]:
    return next(dict(r) for r in await controller.fetch_tasks() if r["key"] == key)


async def finished_list(controller: Controller) -> list[str]:
    raw = await controller._store.client.lrange(controller._keys.finished, 0, -1)
    return [k.decode() if isinstance(k, bytes) else k for k in raw]


# -- crashes -------------------------------------------------------------------------------------


async def test_crashed_worker_is_found_lost_not_terminated(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}], max_retries=1)
    with pytest.raises(RuntimeError, match="a bug"):
        async with Worker(network_id, config=config, heartbeat_period=5) as w:
            popped = await w.pop_tasks(2, timeout=5)
            assert len(popped) == 2
            raise RuntimeError("a bug in the worker loop")
    # Not a clean stop: not recorded terminated, its tasks settled at once, its heartbeat gone.
    assert (await worker_states(controller))[w.worker_id] == "running"
    row = await worker_row(controller, w.worker_id)
    assert row["crashed"] == "RuntimeError: a bug in the worker loop"
    assert not await controller._store.client.exists(controller._keys.heartbeat(w.worker_id))
    tasks = {r["key"]: r for r in await controller.fetch_tasks()}
    for key in keys:
        assert tasks[key]["state"] == "queued"
        assert "crashed (RuntimeError: a bug" in tasks[key]["conditions"][-1]["message"]
    # Any detector, on any host, finds it by its crash mark.
    reasons = await find_lost_workers(controller._store)
    assert reasons == {w.worker_id: "it crashed: RuntimeError: a bug in the worker loop"}
    assert await controller.detect_lost_workers() == [w.worker_id]
    assert (await worker_states(controller))[w.worker_id] == "lost"


@pytest.mark.parametrize("how", ["terminate", "cancel", "normal"])
async def test_clean_exits_are_not_crashes(
    controller: Controller, config: RedisConfig, network_id: str, how: str
) -> None:
    async with Worker(network_id, config=config) as w:
        if how == "terminate":
            # A stop was asked for: an error on the way out is not a crash.
            w.set_terminated()
            with pytest.raises(ValueError, match="late"):
                async with Worker(network_id, config=config) as inner:
                    inner.set_terminated()
                    raise ValueError("late")
            assert (await worker_states(controller))[inner.worker_id] == "terminated"
        elif how == "cancel":
            with anyio.move_on_after(0.1):
                async with Worker(network_id, config=config) as inner:
                    await anyio.sleep(10)
            assert (await worker_states(controller))[inner.worker_id] == "terminated"
    assert (await worker_states(controller))[w.worker_id] == "terminated"
    assert await controller.detect_lost_workers() == []


async def test_crashed_local_worker_is_replaced(config: RedisConfig, network_id: str) -> None:
    async with Controller(network_id, config=config, restart_lost_workers=True, shutdown_timeout=5) as rush:
        try:
            [wid] = await rush.start_local_workers(1, fun=crash_funcs.crash_on_negative)
            await rush.wait_for_workers(1, timeout=30)
            [bad] = await rush.push_tasks([{"x": -1}])
            good = await rush.push_tasks([{"x": i} for i in range(5)])
            process = rush.local_workers[wid].process
            assert await wait_exit(process) == 1, rush.local_workers[wid].log_tail()
            with anyio.fail_after(60):
                table = await rush.wait_for_tasks([bad, *good], detect_lost_workers=True)
            assert (await worker_states(rush))[wid] == "lost"
            [new] = list(rush.local_workers)
            assert new != wid
            assert table["state"] == ["failed"] + ["finished"] * 5
            assert "crashed (WorkerBug: bug triggered by x=-1)" in table[0]["condition"]["message"]
            assert table["y"][1:] == [i * i for i in range(5)]
            assert set(table["worker_id"][1:]) == {new}
        finally:
            await rush.reset(workers=True)


async def test_wait_for_tasks_raises_when_every_worker_crashed(controller: Controller) -> None:
    ids = await controller.start_local_workers(2, fun=crash_funcs.crash_on_negative)
    await controller.wait_for_workers(2, timeout=30)
    keys = await controller.push_tasks([{"x": -1}, {"x": -2}, {"x": 3}], max_retries=3)
    for wid in ids:
        await wait_exit(controller.local_workers[wid].process)
    with anyio.fail_after(20), pytest.raises(rushpy.WorkerError, match="no worker") as err:
        await controller.wait_for_tasks(keys, timeout=120, detect_lost_workers=True)
    assert all(wid in str(err.value) for wid in ids)
    assert await worker_states(controller) == dict.fromkeys(ids, "lost")


async def test_wait_for_tasks_raises_when_workers_were_lost_before_it_began(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}])
    with pytest.raises(RuntimeError):
        async with Worker(network_id, config=config) as w:
            raise RuntimeError("crash")
    # Found by an earlier check (a background one, another detector), not by the wait.
    assert await controller.detect_lost_workers() == [w.worker_id]
    with anyio.fail_after(20), pytest.raises(rushpy.WorkerError, match="workers were lost"):
        await controller.wait_for_tasks([key], timeout=120, detect_lost_workers=True)
    # A worker that runs again is enough to wait for.
    async with Worker(network_id, config=config) as other, anyio.create_task_group() as tg:
        tg.start_soon(run_function, other, funcs.square)
        table = await controller.wait_for_tasks([key], timeout=30, detect_lost_workers=True)
        other.set_terminated()
    assert table["y"] == [1]


async def test_crashed_cli_worker_without_heartbeat_is_found_from_any_host(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    wid = "cli-crash"
    args = ["--network", network_id, "--fun", "tests.crash_funcs:crash_on_negative", "--worker-id", wid]
    proc = spawn_cli(config, args, tmp_path, processes)
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    await controller.push_tasks([{"x": -5}])
    assert await wait_exit(proc) != 0
    # Not by its process id (a remote host's pid says nothing): by its crash mark.
    await controller._store.client.hset(controller._keys.worker(wid), "hostname", rushpy.codec.encode("far"))
    reasons = await find_lost_workers(controller._store)
    assert reasons == {wid: "it crashed: WorkerBug: bug triggered by x=-5"}
    assert await controller.detect_lost_workers() == [wid]


# -- coming back after being declared lost ---------------------------------------------------------


async def test_worker_declared_lost_while_alive_comes_back(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as w:
        [key] = await controller.push_tasks([{"x": 3}], max_retries=2)
        first = await w.pop_task(timeout=5)
        assert first is not None and first.attempt == 1
        # What detection does to a worker whose heartbeat expired: lost, tasks settled.
        await controller._store.client.delete(controller._keys.heartbeat(w.worker_id))
        assert await controller.detect_lost_workers() == [w.worker_id]
        assert (await task_row(controller, key))["state"] == "queued"

        # Its next claim (or beat) is refused: it re-registers and takes work again.
        again = await w.pop_task(timeout=5)
        assert again is not None and again.key == key and again.attempt == 2
        assert not w.terminated
        assert (await worker_states(controller))[w.worker_id] == "running"
        row = await worker_row(controller, w.worker_id)
        assert row["rejoins"] == 1
        assert await controller._store.client.exists(controller._keys.heartbeat(w.worker_id))

        # The result of the attempt it held when declared lost is discarded (attempt fence).
        results = w._components.results
        assert await results.complete("finished", [(key, 1, {"ys": {"y": "stale"}})]) == [0]
        assert await results.complete("finished", [(key, 2, {"ys": {"y": 9}})]) == [1]
    row = await task_row(controller, key)
    assert row["state"] == "finished"
    assert row["y"] == 9
    assert await finished_list(controller) == [key]
    assert await controller.detect_lost_workers() == []


@pytest.mark.parametrize("state", ["killed", "terminated", "reset"])
async def test_stopped_worker_does_not_come_back(
    controller: Controller, config: RedisConfig, network_id: str, state: str
) -> None:
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as w:
        [key] = await controller.push_tasks([{"x": 1}])
        if state == "reset":
            await controller._store.reset()
            [key] = await controller.push_tasks([{"x": 1}])
        else:
            assert await controller._store.workers.set_worker_state(w.worker_id, rushpy.WorkerState(state))
        assert await w.pop_task(timeout=0) is None
        assert w.terminated
        await anyio.sleep(0.4)  # beats refused meanwhile: no heartbeat comes back
        assert not await controller._store.client.exists(controller._keys.heartbeat(w.worker_id))
    assert (await task_row(controller, key))["state"] == "queued"
    if state != "reset":
        assert (await worker_states(controller))[w.worker_id] == state


@pytest.fixture
async def paused_network(network_id: str) -> AsyncIterator[Controller]:
    """A controller on a private server: these tests pause it (``CLIENT PAUSE``)."""
    with EmbeddedServer() as server:
        async with Controller(network_id, config=server.config, shutdown_timeout=5) as rush:
            yield rush


async def pause_past_expiry(rush: Controller, *, restart: bool) -> list[str]:
    """Pause writes longer than the workers' heartbeat expiry; return who a detection found lost."""
    client = rush._store.client
    await client.client_pause(2500, all=False)  # CLIENT PAUSE 2500 WRITE
    await anyio.sleep(1.5)  # the heartbeat keys (0.6 s) expired meanwhile
    # The detection reads during the pause and writes once it ends, as a real one would.
    return await rush.detect_lost_workers(restart_local_workers=restart)


async def test_workers_come_back_after_the_server_paused_past_their_expiry(
    paused_network: Controller,
) -> None:
    rush = paused_network
    ids = await rush.start_local_workers(2, fun=funcs.sleepy, heartbeat_period=0.2, heartbeat_expire=0.6)
    await rush.wait_for_workers(2, timeout=30)
    keys = await rush.push_tasks([{"x": i, "duration": 0.05} for i in range(80)], max_retries=2)

    async def some_finished() -> bool:
        return await rush.n_finished_tasks() > 0

    await eventually(some_finished, "tasks finish", timeout=30)
    assert sorted(await pause_past_expiry(rush, restart=False)) == sorted(ids)
    # No human: the workers re-register and drain the queue.
    table = await rush.wait_for_tasks(keys, timeout=60)
    assert table["state"] == ["finished"] * 80
    assert table["y"] == list(range(80))
    finished = await finished_list(rush)
    assert sorted(finished) == sorted(keys), "each task recorded once"
    assert await worker_states(rush) == dict.fromkeys(ids, "running")
    rows = {r["worker_id"]: r for r in await rush.worker_info()}
    assert all(rows[w]["rejoins"] >= 1 for w in ids)
    assert all(rush.local_workers[w].process.poll() is None for w in ids)


async def test_a_replaced_worker_does_not_come_back_after_a_pause(paused_network: Controller) -> None:
    rush = paused_network
    [old] = await rush.start_local_workers(1, fun=funcs.sleepy, heartbeat_period=0.2, heartbeat_expire=0.6)
    await rush.wait_for_workers(1, timeout=30)
    process = rush.local_workers[old].process
    keys = await rush.push_tasks([{"x": i, "duration": 0.05} for i in range(40)], max_retries=2)
    assert await pause_past_expiry(rush, restart=True) == [old]
    # The controller started a replacement and killed the old process: no extra worker.
    assert await wait_exit(process) == -signal.SIGKILL
    [new] = list(rush.local_workers)
    table = await rush.wait_for_tasks(keys, timeout=60)
    assert table["y"] == list(range(40))
    assert sorted(await finished_list(rush)) == sorted(keys)
    states = await worker_states(rush)
    assert states == {old: "lost", new: "running"}


async def test_wait_for_tasks_keeps_waiting_when_no_worker_was_ever_lost(controller: Controller) -> None:
    # No worker yet, none lost: workers may still come, so the wait runs to its timeout.
    [key] = await controller.push_tasks([{"x": 1}])
    with pytest.raises(rushpy.TaskTimeoutError):
        await controller.wait_for_tasks([key], timeout=0.3, detect_lost_workers=True)


async def test_keyboard_interrupt_is_a_clean_exit(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    with pytest.raises(KeyboardInterrupt):
        async with Worker(network_id, config=config) as w:
            raise KeyboardInterrupt
    assert (await worker_states(controller))[w.worker_id] == "terminated"


async def test_presence_rejoins_only_a_lost_worker_that_was_not_asked_to_stop(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        presence = w._presence
        # Running already (another path came back first): nothing to do.
        assert await presence.not_running("claim refused")
        assert presence.rejoins == 0
        assert "rejoins" not in await worker_row(controller, w.worker_id)
        # Declared lost after it was asked to stop: it does not come back.
        w.set_terminated()
        assert await controller._store.workers.set_worker_state(w.worker_id, rushpy.WorkerState.LOST)
        assert not await presence.not_running("claim refused")
        assert (await worker_states(controller))[w.worker_id] == "lost"
