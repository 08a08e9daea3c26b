"""Constants (stored once per network, cached by workers) and large objects (inputs by reference)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import numpy as np
import pytest
import redis.asyncio

from rushpy import ConfigError, Controller, RedisConfig, TaskError, Worker, run_function
from rushpy.codec import ObjectRef, encode
from rushpy.keys import Keys
from rushpy.models import PoppedTask
from rushpy.scripts import script
from rushpy.store import Store
from rushpy.store.objects import digest_of
from rushpy.worker.inputs import TaskInputs
from rushpy.worker.tracking import TaskTracker

# -- functions run by workers (importable as tests.test_constants:...) ------------------------------


def shifted(x: int, offset: int) -> dict[str, Any]:
    return {"y": x + offset}


async def shifted_async(x: int, offset: int) -> dict[str, Any]:
    return {"y": x + offset}


def measure(data: Any, k: int, tag: str = "") -> dict[str, Any]:
    """Size and a checksum of a large input, so the test can see what arrived."""
    arr = np.asarray(data) if not isinstance(data, bytes) else np.frombuffer(data, dtype=np.uint8)
    return {"n": int(arr.size), "total": int(arr.sum()), "k": k}


async def with_worker(
    config: RedisConfig,
    network_id: str,
    fun: Callable[..., Any],
    body: Callable[[], Awaitable[Any]],
) -> Any:
    """Run ``body()`` while an in-process worker runs ``fun``; stop it after (bounded)."""
    out: dict[str, Any] = {}
    with anyio.fail_after(30):
        async with Worker(network_id, config=config) as worker, anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_function(worker, fun))
            out["value"] = await body()
            worker.set_terminated()
    return out["value"]


async def network_keys(raw: redis.asyncio.Redis, network_id: str) -> list[str]:
    return sorted([k.decode() async for k in raw.scan_iter(match=Keys(network_id).pattern)])


# -- constants ---------------------------------------------------------------------------------------


async def test_constants_of_start_local_workers_reach_worker_processes(controller: Controller) -> None:
    await controller.start_local_workers(1, fun=shifted, constants={"offset": 100})
    keys = await controller.push_tasks([{"x": i} for i in range(5)])
    table = await controller.wait_for_tasks(keys, timeout=60)
    assert table["y"] == [100 + i for i in range(5)]


async def test_changed_constants_are_read_again(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    async def body() -> Any:
        first = await controller.push_tasks([{"x": 1}], constants={"offset": 10})
        await controller.wait_for_tasks(first, timeout=30)
        # The worker cached offset=10; the push moves the version before its tasks exist.
        second = await controller.push_tasks([{"x": 1}], constants={"offset": 20})
        await controller.wait_for_tasks(second, timeout=30)
        # Changed without moving the version: the worker keeps serving its cached value.
        await raw.hset(Keys(network_id).constants, "offset", encode(999))
        third = await controller.push_tasks([{"x": 2}])
        return await controller.wait_for_tasks(first + second + third, timeout=30)

    table = await with_worker(config, network_id, shifted_async, body)
    assert table["y"] == [11, 21, 22]


async def test_input_with_the_name_of_a_constant_is_refused_at_push(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    with pytest.raises(TaskError, match=r"xss\[1\] has inputs \['offset'\]"):
        await controller.push_tasks([{"x": 1}, {"x": 2, "offset": 3}], constants={"offset": 1})
    assert await controller.n_tasks() == 0
    await controller.push_tasks([{"x": 1}], constants={"offset": 1})
    with pytest.raises(TaskError, match="names of constants"):
        await controller.push_tasks([{"offset": 2}])
    # Another controller reads the names the network has on its first push.
    async with Controller(network_id, config=config) as other:
        with pytest.raises(TaskError, match="names of constants"):
            await other.push_priority_tasks([{"offset": 2}], priority=[None])
    assert await controller.n_tasks() == 1
    await controller.reset()  # deletes the constants: the name is free again
    await controller.push_tasks([{"offset": 2}])


async def test_empty_constants_write_nothing(controller: Controller, raw: redis.asyncio.Redis) -> None:
    await controller.push_tasks([{"x": 1}], constants={})
    assert await raw.exists(Keys(controller.network_id).constants_version) == 0


@pytest.mark.parametrize(
    ("constants", "match"),
    [
        ([("a", 1)], "must be a mapping"),
        ({"not valid": 1}, "must be a Python identifier"),
        ({1: 1}, "must be a Python identifier"),
        ({"s": {1, 2}}, "would come back as a list"),
    ],
)
async def test_invalid_constants(controller: Controller, constants: Any, match: str) -> None:
    with pytest.raises(TaskError, match=match):
        await controller.push_tasks([{"x": 1}], constants=constants)
    assert await controller.n_tasks() == 0


async def test_constant_larger_than_max_task_bytes(config: RedisConfig, network_id: str) -> None:
    async with Controller(network_id, config=config, max_task_bytes=1000) as rush:
        with pytest.raises(TaskError, match=r"constant 'big' is 2,00\d bytes.*max_task_bytes=1,000"):
            await rush.start_local_workers(1, fun=shifted, constants={"big": b"x" * 2000})
        assert rush.local_workers == {}


async def test_clash_and_damaged_constant_found_by_the_worker(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    keys = Keys(network_id)

    first = await controller.push_tasks([{"x": 1, "offset": 5}])
    # Written behind the controller's back (it checked the names it knew), before
    # any worker runs the task.
    await raw.hset(keys.constants, "offset", encode(1))
    await raw.incr(keys.constants_version)

    async def body() -> Any:
        second = await controller.push_tasks([{"x": 2}])
        table = await controller.wait_for_tasks(first + second, timeout=30)
        await raw.hset(keys.constants, "bad", b"\xc1")  # not msgpack
        await raw.incr(keys.constants_version)
        third = await controller.push_tasks([{"x": 3}])
        return table, await controller.wait_for_tasks(third, timeout=30)

    table, damaged = await with_worker(config, network_id, shifted, body)
    assert table["state"] == ["failed", "finished"]
    assert table["condition"][0]["type"] == "TaskError"
    assert "['offset']" in table["condition"][0]["message"]
    assert table["y"][1] == 3
    assert damaged["state"] == ["failed"]
    assert damaged["condition"][0]["type"] == "CorruptTask"
    assert "constant 'bad'" in damaged["condition"][0]["message"]
    assert damaged["attempts"] == [1]  # never retried: bad data does not heal


# -- large objects ----------------------------------------------------------------------------------------


async def test_large_inputs_are_stored_once_and_resolved(
    config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    big = np.arange(5000, dtype=np.int64)
    async with Controller(network_id, config=config, large_object_bytes=1000, shutdown_timeout=5) as rush:
        try:
            keys = await rush.push_tasks(
                [{"data": big, "k": k, "tag": "s"} for k in range(3)] + [{"data": [1, 2], "k": 9, "tag": "s"}]
            )
            objects = await raw.smembers(Keys(network_id).objects)
            assert len(objects) == 1  # identical values: one object
            queued = await rush.fetch_tasks(keys)
            ref = queued["data"][0]
            assert isinstance(ref, ObjectRef)
            assert repr(ref).startswith("<large object sha256:")
            assert queued["data"][3] == [1, 2]  # small inputs stay in the task
            assert queued["tag"] == ["s"] * 4  # also beside a large one
            await rush.start_local_workers(1, fun=measure)
            table = await rush.wait_for_tasks(keys, timeout=60)
            assert table["n"] == [5000, 5000, 5000, 2]
            assert table["total"] == [int(big.sum())] * 3 + [3]
            # A plain function with a timeout gets them in its child process too.
            more = await rush.push_tasks([{"data": big.tobytes(), "k": 1}], timeouts=30)
            table = await rush.wait_for_tasks(more, timeout=60)
            assert table["n"] == [big.nbytes]
            await rush.stop_workers()
            await rush.reset()
            assert await network_keys(raw, network_id) == []  # objects and constants deleted
        finally:
            await rush.reset()


async def test_missing_or_overwritten_object_fails_only_its_task(
    config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    keys_of = Keys(network_id)
    async with Controller(network_id, config=config, large_object_bytes=100) as rush:
        try:
            gone, bad, fine = (bytes([i]) * 500 for i in range(3))
            keys = await rush.push_tasks(
                [{"data": gone, "k": 0}, {"data": bad, "k": 1}, {"data": fine, "k": 2}]
            )
            await raw.delete(keys_of.object(digest_of(encode(gone))))
            await raw.set(keys_of.object(digest_of(encode(bad))), encode(b"other"))

            async def body() -> Any:
                return await rush.wait_for_tasks(keys, timeout=30)

            table = await with_worker(config, network_id, measure, body)
            assert table["state"] == ["failed", "failed", "finished"]
            assert {c["type"] for c in table["condition"][:2]} == {"CorruptTask"}
            assert f"sha256:{digest_of(encode(gone))} is missing" in table["condition"][0]["message"]
            assert "input 'data'" in table["condition"][0]["message"]
            assert "does not match its digest" in table["condition"][1]["message"]
            assert table["total"][2] == 2 * 500
        finally:
            await rush.reset()


async def test_large_object_limits(config: RedisConfig, network_id: str) -> None:
    with pytest.raises(ConfigError, match="large_object_bytes"):
        Controller(network_id, config=config, large_object_bytes=0)
    async with Controller(network_id, config=config, max_task_bytes=10_000, large_object_bytes=1000) as rush:
        with pytest.raises(
            TaskError, match=r"input 'data' of task 1 is 20,00\d bytes.*max_task_bytes=10,000"
        ):
            await rush.push_tasks([{"data": b"a"}, {"data": b"b" * 20_000}])
        assert await rush.n_tasks() == 0
    async with Controller(network_id, config=config, large_object_bytes=None) as rush:
        try:
            (key,) = await rush.push_tasks([{"data": b"c" * 5000}])
            assert (await rush.fetch_tasks([key]))["data"] == [b"c" * 5000]
        finally:
            await rush.reset()


# -- the worker's cache, directly against the server --------------------------------------------------


async def test_object_cache_is_bounded_and_serves_hits(store: Store, raw: redis.asyncio.Redis) -> None:
    blobs = {digest_of(encode(v)): encode(v) for v in (b"a" * 600, b"b" * 600)}
    await store.objects.put_objects(blobs)
    (da, db) = list(blobs)
    refs = {d: ObjectRef(d, len(b)) for d, b in blobs.items()}
    inputs = TaskInputs(store, "w-1", cache_bytes=1000)  # room for one of the two
    task_a = PoppedTask("ka", {"data": refs[da]})
    task_b = PoppedTask("kb", {"data": refs[db]})
    ready, failed = await inputs.prepare([task_a])
    assert failed == [] and ready[0][1] == {"data": b"a" * 600}
    await raw.delete(store.keys.object(da))
    ready, failed = await inputs.prepare([task_a])  # a hit: not read again
    assert ready[0][1] == {"data": b"a" * 600}
    ready, failed = await inputs.prepare([task_b])  # evicts a
    assert ready[0][1] == {"data": b"b" * 600}
    ready, failed = await inputs.prepare([task_a])
    assert ready == [] and "is missing" in failed[0][1].message


async def test_object_larger_than_the_cache_stays_until_the_next(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    value = b"z" * 600
    digest = digest_of(encode(value))
    await store.objects.put_objects({digest: encode(value)})
    inputs = TaskInputs(store, "w-1", cache_bytes=100)
    task = PoppedTask("k", {"data": ObjectRef(digest, 600)})
    assert (await inputs.prepare([task]))[0][0][1] == {"data": value}
    await raw.delete(store.keys.object(digest))
    # One large dataset used by every task is read once, however small the cache.
    assert (await inputs.prepare([task]))[0][0][1] == {"data": value}


async def test_object_that_does_not_decode(store: Store) -> None:
    digest = digest_of(b"\xc1")
    await store.objects.put_objects({digest: b"\xc1"})
    inputs = TaskInputs(store, "w-1")
    ready, failed = await inputs.prepare([PoppedTask("k", {"data": ObjectRef(digest, 1)})])
    assert ready == []
    assert failed[0][1].type == "CorruptTask"
    assert "does not decode" in failed[0][1].message


async def test_reset_repairs_an_objects_index_of_the_wrong_type(
    controller: Controller, raw: redis.asyncio.Redis
) -> None:
    await raw.set(Keys(controller.network_id).objects, "not a set")
    await controller.reset()
    assert await network_keys(raw, controller.network_id) == []


async def test_unreadable_constants_fail_the_batch(store: Store, raw: redis.asyncio.Redis) -> None:
    await raw.hset(store.keys.constants_version, "x", "1")  # a hash where a counter belongs
    inputs = TaskInputs(store, "w-1")
    ready, failed = await inputs.prepare([PoppedTask("k", {"x": 1})])
    assert ready == []
    assert failed[0][1].type == "CorruptTask"
    assert "cannot be read" in failed[0][1].message
    await raw.delete(store.keys.constants_version)


async def test_a_claim_tells_the_constants_version_so_a_batch_reads_nothing_more(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    """W2's critical path: between claim and result the worker sends no command about constants."""
    monitor_client = redis.asyncio.Redis.from_url(config.to_url(include_password=True))
    seen: list[str] = []

    async def body() -> Any:
        first = await controller.push_tasks([{"x": 1}], constants={"offset": 5})
        await controller.wait_for_tasks(first, timeout=30)
        async with monitor_client.monitor() as monitor:
            keys = await controller.push_tasks([{"x": 2}])
            async for command in monitor.listen():
                if command.get("client_type") != "lua":  # commands of clients, not of scripts
                    seen.append(command["command"])
                if command["command"].startswith("EVALSHA " + script("complete").sha):
                    break
        return await controller.wait_for_tasks(keys, timeout=30)

    table = await with_worker(config, network_id, shifted_async, body)
    await monitor_client.aclose()
    assert table["y"] == [7]
    assert any(c.startswith("EVALSHA " + script("claim").sha) for c in seen)
    assert not [c for c in seen if c.startswith("GET ") and "constants_version" in c], [c[:60] for c in seen]


async def test_tasks_without_a_claimed_version_read_it_and_see_damage(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    """A task the claim told the version of skips the read; an adopted one (version unknown) reads it."""
    await store.objects.set_constants({"offset": 1})
    tracker = TaskTracker("w-1")
    inputs = TaskInputs(store, "w-1", tracker=tracker)
    version = await store.objects.constants_version()
    tracker.claimed("a", 1, version)
    ready, failed = await inputs.prepare([PoppedTask("a", {"x": 1})])
    assert [kwargs for _, kwargs in ready] == [{"x": 1, "offset": 1}] and failed == []
    # The version key is damaged now: only a task whose claim did not say reads it.
    await raw.delete(store.keys.constants_version)
    await raw.hset(store.keys.constants_version, "x", "1")
    tracker.claimed("b", 1, version)
    ready, failed = await inputs.prepare([PoppedTask("b", {"x": 2})])
    assert [kwargs for _, kwargs in ready] == [{"x": 2, "offset": 1}] and failed == []
    tracker.claimed("c", 1)  # adopted after a lost reply
    ready, failed = await inputs.prepare([PoppedTask("c", {"x": 3})])
    assert ready == [] and "cannot be read" in failed[0][1].message
    await raw.delete(store.keys.constants_version)
