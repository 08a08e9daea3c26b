"""worker_info(): state, process, last heartbeat, counts, current tasks and last error of every worker."""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

import pytest
import redis.asyncio

from rushpy import Condition, Controller, RedisConfig, Worker, WorkerState
from rushpy.store import Store
from tests.helpers import eventually


async def _row(rush: Controller, worker_id: str) -> dict[str, Any]:
    return next(r for r in await rush.worker_info() if r["worker_id"] == worker_id)


async def test_a_running_worker_shows_its_process_beat_tasks_counts_and_last_error(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}, {"x": 3}])
    async with Worker(network_id, config, heartbeat_period=0.2) as worker:
        wid = worker.worker_id
        first = await worker.pop_task()
        assert first is not None
        row = await _row(controller, wid)
        now = dt.datetime.now(dt.UTC)
        assert (row["state"], row["pid"], row["hostname"]) == ("running", os.getpid(), socket.gethostname())
        assert isinstance(row["started_at"], dt.datetime) and row["started_at"] <= now
        # The last beat lies within one expiry (0.6 s) before now: give clocks a wide margin.
        assert now - dt.timedelta(seconds=30) < row["last_beat"] < now + dt.timedelta(seconds=30)
        assert row["running"] == [first.key]
        assert (row["n_finished"], row["n_failed"], row["last_error"]) == (0, 0, None)
        await worker.fail_tasks([first.key], [ValueError("bad x")])
        for _ in range(2):
            task = await worker.pop_task()
            assert task is not None
            await worker.finish_tasks([task.key], [{"y": 1}])

        async def counted() -> bool:
            row = await _row(controller, wid)
            return bool(row["n_finished"] == 2 and row["n_failed"] == 1)

        await eventually(counted, "the worker's counts in its hash")
        row = await _row(controller, wid)
        assert row["running"] == []
        error = row["last_error"]
        assert (error["type"], error["message"]) == ("ValueError", "bad x")
        assert isinstance(error["at"], dt.datetime)
    row = await _row(controller, wid)
    assert (row["state"], row["last_beat"], row["n_finished"]) == ("terminated", None, 2)
    assert sorted(keys) == sorted(r["key"] for r in await controller.fetch_tasks())


async def test_states_and_a_worker_without_heartbeat(
    controller: Controller, store: Store, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config) as quiet:
        assert (await _row(controller, quiet.worker_id))["last_beat"] is None
    for wid, state in (("w-lost", WorkerState.LOST), ("w-killed", WorkerState.KILLED)):
        await store.workers.register_worker(wid, {"pid": 7})
        assert await store.workers.set_worker_state(wid, state)
    await store.client.sadd(store.keys.workers, "w-gone")  # listed, its record deleted
    rows = {r["worker_id"]: r["state"] for r in await controller.worker_info()}
    assert rows == {quiet.worker_id: "terminated", "w-lost": "lost", "w-killed": "killed"}


async def test_a_crashed_worker_records_the_crash_as_its_last_error(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    with pytest.raises(RuntimeError, match="loop broke"):
        async with Worker(network_id, config) as worker:
            raise RuntimeError("loop broke")
    error = (await _row(controller, worker.worker_id))["last_error"]
    # The crashing exception itself, with its traceback.
    assert (error["type"], error["message"]) == ("RuntimeError", "loop broke")
    assert 'raise RuntimeError("loop broke")' in error["traceback"]


async def test_set_last_error_writes_only_while_the_worker_is_registered(
    controller: Controller, store: Store, raw: redis.asyncio.Redis
) -> None:
    await store.workers.register_worker("w1", {"pid": 1})
    assert await store.workers.set_last_error("w1", Condition("LoopError", "the loop raised"))
    error = (await _row(controller, "w1"))["last_error"]
    assert (error["type"], error["message"]) == ("LoopError", "the loop raised")
    await store.reset()
    assert not await store.workers.set_last_error("w1", Condition("LoopError", "late"))
    assert not await raw.exists(store.keys.worker("w1"))
