"""The store package: its parts, reset by index, task size limits and memory of large pushes."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest

from rushpy import Controller, RedisConfig, Worker
from rushpy.codec import encode
from rushpy.connection import create_client
from rushpy.errors import TaskError
from rushpy.keys import Keys
from rushpy.models import Condition, WorkerState
from rushpy.store import CHUNK, Store
from rushpy.store.base import chunks
from rushpy.store.encoding import LARGE_VALUE, encode_field

pytestmark = pytest.mark.anyio

W = "worker-1"




async def network_keys(store: Store) -> set[str]:
    """Every key of the network, found the slow way (the test may SCAN; reset may not)."""
    return {k.decode() async for k in store.client.scan_iter(match=store.keys.pattern, count=1000)}


async def populate(store: Store) -> dict[str, list[str]]:
    """Tasks in every state, a worker with every worker key, start arguments."""
    k = store.keys
    await store.workers.register_worker(W, {"pid": 1, "hostname": "h"}, heartbeat_expire=60)
    await store.workers.register_worker("gone", {"pid": 2, "hostname": "h"})
    await store.workers.set_worker_state("gone", WorkerState.LOST)
    await store.workers.request_terminate([W])
    await store.workers.request_kill([W])
    await store.workers.request_terminate_all()
    await store.workers.set_start_args({"fun": "m:f"})
    await store.client.rpush(k.log(W), b"a log line")
    queued = await store.tasks.create_tasks("queued", [{"xs": {"i": i}} for i in range(4)])
    await store.tasks.create_tasks("queued", [{"xs": {}}], queue=k.priority_queue(W))
    await store.tasks.create_tasks("finished", [{"xs": {}, "ys": {}}])
    await store.tasks.create_tasks("failed", [{"xs": {}, "condition": {"type": "E", "message": ""}}])
    await store.tasks.pop_keys(W, 2)
    await store.tasks.claim(W, queued[:1])
    # A task hash that only a pending list knows of (not in the all-tasks list).
    await store.client.hset(k.task("stray"), "xs", encode({}))
    await store.client.rpush(k.pending("gone"), "stray")
    return {"queued": queued}


# -- parts ------------------------------------------------------------------------------------------


def test_chunks_split_by_count_and_by_bytes() -> None:
    assert list(chunks([1] * (2 * CHUNK + 1))) == [(0, CHUNK), (CHUNK, 2 * CHUNK), (2 * CHUNK, 2 * CHUNK + 1)]
    big = 20 * 1024 * 1024
    assert list(chunks([big, big, 1, big])) == [(0, 1), (1, 3), (3, 4)]
    assert list(chunks([])) == []


async def test_unregister_deletes_the_heartbeat_and_stop_keys_and_keeps_the_record(store: Store) -> None:
    await store.workers.register_worker(W, {"pid": 1}, heartbeat_expire=60)
    await store.workers.request_terminate([W])
    await store.workers.request_kill([W])
    await store.workers.set_worker_state(W, WorkerState.TERMINATED)
    await store.workers.unregister(W)
    k = store.keys
    assert await store.client.exists(k.heartbeat(W), k.terminate_signal(W), k.kill_signal(W)) == 0
    assert [i.state for i in await store.workers.worker_infos([W])] == [WorkerState.TERMINATED]


async def test_fetching_new_finished_tasks_reads_only_the_new_rows(store: Store) -> None:
    """The finished list is read from an offset: a cache reads each new row once."""
    first = await store.tasks.create_tasks("finished", [{"xs": {"i": i}, "ys": {}} for i in range(5)])
    assert await store.reads.finished_keys(0) == first
    second = await store.tasks.create_tasks("finished", [{"xs": {}, "ys": {}}] * 2)
    new = await store.reads.finished_keys(len(first))
    assert new == second
    assert len(await store.reads.read_tasks(new)) == 2


# -- reset ------------------------------------------------------------------------------------------


async def test_reset_deletes_every_key_of_the_network_and_nothing_else(
    store: Store, config: RedisConfig
) -> None:
    other = Store(store.client, Keys(store.keys.network_id + "-other"))
    await other.tasks.create_tasks("queued", [{"xs": {}}])
    try:
        await populate(store)
        before = await network_keys(store)
        assert await store.reset() == len(before)
        assert await network_keys(store) == set()
        assert len(await network_keys(other)) == 3  # queue, all-tasks list, one hash
    finally:
        await other.reset()


async def test_reset_keeping_workers_keeps_every_worker_key_and_deletes_task_data(store: Store) -> None:
    await populate(store)
    before = await network_keys(store)
    await store.reset(keep_workers=True)
    k = store.keys
    kept = {
        k.workers,
        k.running_workers,
        k.lost_workers,
        k.start_args,
        k.worker(W),
        k.worker("gone"),
        k.log(W),
        k.heartbeat(W),
        k.terminate_signal(W),
        k.kill_signal(W),
    }
    assert kept <= before
    assert await network_keys(store) == kept
    assert await store.workers.heartbeats_alive([W]) == [True]
    assert await store.workers.stop_requests(W) == (True, False, True)


async def test_reset_repairs_a_key_of_the_wrong_type(store: Store) -> None:
    await store.client.set(store.keys.queued, b"not a list")
    await store.tasks.create_tasks("finished", [{"xs": {}, "ys": {}}])
    await store.reset()
    assert await network_keys(store) == set()


async def test_controller_reset_keeping_workers_does_not_make_them_lost(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    # A long period: no beat happens between the reset and the check, so the
    # check sees exactly what the reset left.
    async with Worker(network_id, config=config, heartbeat_period=30, heartbeat_expire=90) as w:
        await controller.push_tasks([{"x": 1}])
        await controller.reset(workers=False)
        assert await controller.detect_lost_workers() == []
        assert w.worker_id in (await controller.worker_info())["worker_id"]
        assert await controller.n_queued_tasks() == 0


# -- size limit -------------------------------------------------------------------------------------


async def test_a_task_over_the_size_limit_raises_before_anything_is_written(
    config: RedisConfig, network_id: str
) -> None:
    client = create_client(config)
    store = Store(client, Keys(network_id), max_task_bytes=1000)
    try:
        with pytest.raises(TaskError, match=r"task 1 is [\d,]+ bytes .*'xs'.*max_task_bytes=1,000"):
            await store.tasks.create_tasks("queued", [{"xs": {"x": 1}}, {"xs": {"x": b"a" * 2000}}])
        with pytest.raises(TaskError, match="max_task_bytes"):
            await store.tasks.create_running(W, [{"xs": {"x": "a" * 600}, "xs_extra": {"y": "b" * 600}}])
        assert await network_keys(store) == set()
        await store.workers.register_worker(W, {"pid": 1})
        [key] = await store.tasks.create_running(W, [{"xs": {}}])
        with pytest.raises(TaskError, match=r"task 0 .*'ys'"):
            await store.tasks.complete(W, "finished", [(key, 1, {"ys": {"y": b"a" * 2000}})])
        assert await store.reads.in_set("running", [key]) == [True]
        with pytest.raises(TaskError):
            Store(client, Keys(network_id), max_task_bytes=0)
    finally:
        await store.reset()
        await client.aclose()


# -- large values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"x": np.arange(LARGE_VALUE // 8 + 1, dtype=np.float64)},
        {"x": np.arange(LARGE_VALUE // 4, dtype=">i4").reshape(-1, 16).T},
        {"x": np.zeros(LARGE_VALUE, dtype="M8[s]")},
        {"a": b"b" * LARGE_VALUE, "n": [1, {"c": bytearray(LARGE_VALUE)}, (2, 3)], 5: None},
        [memoryview(b"m" * LARGE_VALUE), "s"],
        {"small": np.arange(3), "b": b"x"},
        {"d": {f"k{i}": b"v" * (LARGE_VALUE if i == 20 else 1) for i in range(70_000)}},
    ],
)
def test_large_values_encode_exactly_as_the_codec_does(value: Any) -> None:
    assert encode_field(value) == encode(value)


async def test_a_large_push_peaks_below_twice_its_encoded_size(store: Store) -> None:
    xs = {"x": np.random.default_rng(0).random(4_000_000)}  # 32 MB
    size = len(encode(xs))
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        [key] = await store.tasks.create_tasks("queued", [{"xs": xs}])
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert peak < 2 * size, f"peak {peak / size:.2f}x the encoded size"
    [row] = await store.reads.read_tasks([key])
    assert row is not None and np.array_equal(row["xs"]["x"], xs["x"])


async def test_a_large_result_is_recorded(store: Store) -> None:
    await store.workers.register_worker(W, {"pid": 1})
    [key] = await store.tasks.create_running(W, [{"xs": {}}])
    ys = {"y": b"r" * (3 * LARGE_VALUE)}
    assert await store.tasks.complete(W, "finished", [(key, 1, {"ys": ys})]) == [1]
    [row] = await store.reads.read_tasks([key])
    assert row is not None and row["ys"] == ys
    cond = Condition("E", "m" * 10).to_dict()
    [key2] = await store.tasks.create_running(W, [{"xs": {}}])
    assert await store.tasks.complete(W, "failed", [(key2, 1, {"condition": cond})]) == [1]
