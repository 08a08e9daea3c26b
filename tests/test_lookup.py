"""One-task lookups, waits per key, as_completed, and lost workers found by default.

Regression tests for reads that had no way to look up one task, for
``wait_for_tasks`` taking a snapshot of the whole network on every wake-up, and
for waits that left a SIGKILLed worker's tasks running for ever unless
detection was asked for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

import anyio
import pytest

from rushpy import Controller, EmbeddedServer, RedisConfig, Worker
from rushpy.errors import TaskError, TaskTimeoutError, UnknownTaskError, WorkerError
from rushpy.lost import stale_workers
from rushpy.models import WorkerState
from tests import funcs
from tests.helpers import eventually

MISSING = "f" * 32


async def four_states(controller: Controller, config: RedisConfig, network_id: str) -> dict[str, str]:
    """One task in each state; returns ``{state: key}`` (the worker stays registered, running one)."""
    failed, finished, running, queued = await controller.push_tasks([{"x": i} for i in range(4)])
    async with Worker(network_id, config=config) as worker:
        await worker.pop_tasks(3, timeout=5)
        await worker.fail_tasks([failed], ["no"])
        await worker.finish_tasks([finished], [{"y": 1}])
        # Leave `running` running: mark it on a worker that stays recorded running.
        await controller._store.client.srem(controller._keys.worker_running(worker.worker_id), running)
    return {"failed": failed, "finished": finished, "running": running, "queued": queued}


async def test_fetch_task_in_every_state(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await four_states(controller, config, network_id)
    for state, key in keys.items():
        row = await controller.fetch_task(key)
        assert (row["key"], row["state"], row["x"]) == (key, state, list(keys).index(state))
    assert (await controller.fetch_task(keys["finished"]))["y"] == 1
    assert (await controller.fetch_task(keys["failed"]))["condition"]["message"] == "no"


async def test_fetch_task_refuses_unknown_and_non_string_keys(controller: Controller) -> None:
    with pytest.raises(UnknownTaskError, match=MISSING):
        await controller.fetch_task(MISSING)
    with pytest.raises(TaskError, match="string"):
        await controller.fetch_task(7)  # type: ignore[arg-type]


async def test_fetch_tasks_by_keys_keeps_their_order(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await four_states(controller, config, network_id)
    order = [keys["queued"], keys["failed"], keys["running"], keys["finished"]]
    table = await controller.fetch_tasks(order)
    assert [(r["key"], r["state"]) for r in table] == [
        (keys["queued"], "queued"),
        (keys["failed"], "failed"),
        (keys["running"], "running"),
        (keys["finished"], "finished"),
    ]
    assert len(await controller.fetch_tasks()) == 4  # every task, as before
    with pytest.raises(UnknownTaskError, match=MISSING):
        await controller.fetch_tasks([keys["queued"], MISSING])


async def test_as_completed_yields_finished_and_failed_tasks_as_they_close(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(3)])
    seen: list[tuple[str, str]] = []
    async with Worker(network_id, config=config) as worker:

        async def work() -> None:
            for i, key in enumerate(keys):
                [task] = await worker.pop_tasks(1, timeout=5)
                assert task.key == key
                if i == 1:
                    await worker.fail_tasks([key], ["bad"])
                else:
                    await worker.finish_tasks([key], [{"y": i}])
                await anyio.sleep(0.05)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(work)
                async for row in controller.as_completed([*keys, keys[0]], timeout=20):
                    seen.append((row["key"], row["state"]))
    assert seen == [(keys[0], "finished"), (keys[1], "failed"), (keys[2], "finished")]


async def test_as_completed_times_out_naming_the_open_tasks(controller: Controller) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}])
    await controller.push_finished_tasks([{"x": 0}], [{"y": 0}])
    with pytest.raises(TaskTimeoutError, match="2 of 2 tasks still open"):
        async for _ in controller.as_completed(keys, timeout=0.2):
            pass
    with pytest.raises(UnknownTaskError):
        async for _ in controller.as_completed([MISSING]):
            pass


async def test_as_completed_can_be_left_early(controller: Controller) -> None:
    keys = await controller.push_finished_tasks([{"x": 1}, {"x": 2}], [{"y": 1}, {"y": 2}])
    async for row in controller.as_completed(keys):
        assert row["key"] in keys
        break
    # The controller still works: nothing was left half-open.
    assert len(await controller.wait_for_tasks(keys, timeout=5)) == 2


def command_calls(info: dict[str, Any]) -> dict[str, int]:
    return {name: int(stats["calls"]) for name, stats in info.items()}


async def one_wake_up(controller: Controller, key: str) -> tuple[dict[str, int], int]:
    """Commands run and bytes sent by the server for one check of an open key."""
    client = controller._store.client
    calls_before = command_calls(await client.info("commandstats"))
    bytes_before = int((await client.info("stats"))["total_net_output_bytes"])
    with pytest.raises(TaskTimeoutError):
        await controller.wait_for_tasks([key], timeout=0, detect_lost_workers=False)
    bytes_after = int((await client.info("stats"))["total_net_output_bytes"])
    calls_after = command_calls(await client.info("commandstats"))
    calls = {n: c - calls_before.get(n, 0) for n, c in calls_after.items() if c != calls_before.get(n, 0)}
    return calls, bytes_after - bytes_before


async def test_a_wait_for_tasks_wake_up_reads_only_the_open_keys(network_id: str) -> None:
    # A private server: no other client's commands in its counters.
    async with (
        EmbeddedServer() as server,
        Controller(network_id, config=server.config) as small,
        Controller(f"{network_id}-big", config=server.config) as big,
    ):
        [small_key] = await small.push_tasks([{"x": 0}])
        [big_key] = await big.push_tasks([{"x": 0}])
        await big.push_tasks([{"x": i} for i in range(3000)])
        await big.push_finished_tasks([{"x": i} for i in range(2000)], [{"y": i} for i in range(2000)])
        await big.push_failed_tasks([{"x": i} for i in range(1000)], ["no"] * 1000)
        small_calls, small_bytes = await one_wake_up(small, small_key)
        big_calls, big_bytes = await one_wake_up(big, big_key)
    # The same commands, none reading a whole list or set (a snapshot ran LRANGE and SMEMBERS).
    assert big_calls == small_calls
    for name in ("cmdstat_lrange", "cmdstat_smembers", "cmdstat_llen", "cmdstat_scard"):
        assert name not in big_calls
    # 6,000 tasks sent nothing more: the reply covers the one open key (a snapshot sends ~200 kB).
    assert big_bytes < small_bytes + 200


async def test_timeout_names_running_workers_without_a_fresh_heartbeat(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}])
    async with Worker(network_id, config=config) as worker:
        await worker.pop_tasks(1, timeout=5)
        with pytest.raises(TaskTimeoutError, match="call detect_lost_workers\\(\\) or wait with") as off:
            await controller.wait_for_tasks([key], timeout=0.1, detect_lost_workers=False)
        assert f"{worker.worker_id}: keeps no heartbeat" in str(off.value)
        assert "1 running" in str(off.value)
        # Detection on (the default): it runs, but cannot tell a remote worker without a heartbeat.
        with pytest.raises(TaskTimeoutError, match="start workers with heartbeat_period"):
            await controller.wait_for_tasks([key], timeout=0.1)
        await worker.finish_tasks([key], [{"y": 1}])
    # Queued only: no worker to name.
    [queued] = await controller.push_tasks([{"x": 2}])
    with pytest.raises(TaskTimeoutError) as only_queued:
        await controller.wait_for_tasks([queued], timeout=0)
    assert "heartbeat" not in str(only_queued.value)


async def test_stale_workers_says_why(controller: Controller) -> None:
    workers = controller._store.workers
    await workers.register_worker("quiet", {"pid": os.getpid(), "heartbeat": False})
    await workers.register_worker("beating", {"pid": os.getpid(), "heartbeat": True}, heartbeat_expire=60)
    await workers.register_worker("expired", {"pid": os.getpid(), "heartbeat": True}, heartbeat_expire=60)
    await workers.register_worker("gone", {"pid": os.getpid(), "heartbeat": True}, heartbeat_expire=60)
    await controller._store.client.delete(controller._keys.heartbeat("expired"))
    assert await workers.set_worker_state("gone", WorkerState.LOST)
    ids = ["quiet", "beating", "expired", "gone", "ghost"]
    assert await stale_workers(controller._store, ids) == {
        "quiet": "keeps no heartbeat",
        "expired": "its heartbeat expired",
        "gone": "recorded lost",
        "ghost": "not registered",
    }
    assert await stale_workers(controller._store, []) == {}
    await controller.reset()


async def test_a_controller_wait_finds_a_killed_worker_by_default(controller: Controller) -> None:
    """SIGKILL a local worker mid-task: a plain wait re-runs its task on the other worker."""
    wids = await controller.start_local_workers(2, fun=funcs.async_sleepy)
    await controller.wait_for_workers(2, timeout=30)
    keys = await controller.push_tasks([{"x": 1, "duration": 1.0}, {"x": 2, "duration": 1.0}], max_retries=1)

    async def both_running() -> bool:
        return all(await controller.is_running_task(keys))

    await eventually(both_running, "both tasks run", timeout=20)
    victim_key = keys[0]
    victim = (await controller.fetch_task(victim_key))["worker_id"]
    assert victim in wids
    controller.local_workers[victim].process.send_signal(signal.SIGKILL)
    # Turned off, the wait cannot end: the killed worker's task stays running.
    with pytest.raises(TaskTimeoutError, match="detect_lost_workers"):
        await controller.wait_for_tasks([victim_key], timeout=1.5, detect_lost_workers=False)
    assert await controller.is_running_task(victim_key)
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert [r["state"] for r in table] == ["finished", "finished"]
    row = await controller.fetch_task(victim_key)
    assert row["attempts"] == 2
    assert row["conditions"][0]["type"] == "WorkerLost"
    assert (await controller.status()).n_lost_workers == 1


async def dead_worker_running(controller: Controller, max_retries: int) -> tuple[str, str]:
    """A task claimed by a worker of this host whose process is gone; returns (worker id, key)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    store = controller._store
    wid = "dead-worker"
    await store.workers.register_worker(
        wid, {"pid": proc.pid, "hostname": socket.gethostname(), "heartbeat": False}
    )
    [key] = await controller.push_tasks([{"x": 1}], max_retries=max_retries)
    assert await store.tasks.pop_keys(wid, 1) == [key]
    [claimed] = await store.tasks.claim(wid, [key])
    assert claimed is not None
    return wid, key


async def test_as_completed_raises_worker_error_once_every_worker_is_lost(controller: Controller) -> None:
    wid, key = await dead_worker_running(controller, max_retries=1)
    with pytest.raises(WorkerError, match=f"lost while waiting: \\['{wid}'\\]"):
        async for _ in controller.as_completed([key], timeout=30):
            pass
    assert (await controller.fetch_task(key))["state"] == "queued"


@pytest.mark.parametrize("how", ["wait_for_new_tasks", "fetch_new_tasks"])
async def test_stream_waits_of_a_controller_detect_by_default(controller: Controller, how: str) -> None:
    _, key = await dead_worker_running(controller, max_retries=0)
    if how == "wait_for_new_tasks":
        assert (
            await controller.wait_for_new_tasks(0.3, states=("failed",), detect_lost_workers=False) is False
        )
        assert await controller.wait_for_new_tasks(30, states=("failed",)) is True
        [row] = await controller.fetch_new_tasks(states=("failed",))
    else:
        assert len(await controller.fetch_new_tasks(0.3, states=("failed",), detect_lost_workers=False)) == 0
        [row] = await controller.fetch_new_tasks(30, states=("failed",))
    assert (row["key"], row["condition"]["type"]) == (key, "WorkerLost")


async def test_worker_waits_do_not_detect_unless_asked(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    _, key = await dead_worker_running(controller, max_retries=0)
    async with Worker(network_id, config=config) as worker:
        assert await worker.wait_for_new_tasks(0.8, states=("failed",)) is False
        assert await worker.is_running_task(key)
        assert await worker.wait_for_new_tasks(30, states=("failed",), detect_lost_workers=True) is True


async def test_lookup_benchmark_smoke(config: RedisConfig) -> None:
    from benchmarks.lookup import _table, measure

    figures = await measure(config, 50, repeats=2)
    assert set(figures) == {"fetch_task", "wake (1 open key)", "wake (100 open keys)", "old wake: snapshot"}
    assert "fetch_task" in _table({50: figures})


async def test_a_task_key_of_another_type_is_placed_by_the_finished_list(controller: Controller) -> None:
    [finished] = await controller.push_finished_tasks([{"x": 1}], [{"y": 1}])
    [queued] = await controller.push_tasks([{"x": 2}])
    client = controller._store.client
    await client.hdel(controller._keys.rows, finished)  # its row gone: only the damaged key is left
    for key in (finished, queued):
        await client.delete(controller._keys.task(key))
        await client.set(controller._keys.task(key), b"damaged")
    rows = await controller.fetch_tasks([finished, queued])
    assert [r["state"] for r in rows] == ["finished", "queued"]
    assert all("error" in r for r in rows)
