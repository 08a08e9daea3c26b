"""Lua transitions are all-or-nothing under corrupt bookkeeping data (issue 8, point 2).

Each test corrupts a live task hash by hand (raw client), runs the transition
through the store and checks that every task ends in exactly one state, that
the corrupt task failed alone with a ``CorruptTask`` condition naming the
field, and that the good tasks of the same batch went through.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio

from rushpy.codec import decode, encode
from rushpy.errors import ServerError
from rushpy.models import Condition
from rushpy.scripts import calls as sc
from rushpy.store import Store
from tests.helpers import stored_fields

pytestmark = pytest.mark.anyio

W = "worker-1"
LOST = Condition("Lost", "worker lost")
BAD = [b"\xc1", encode("three"), encode([1])]
"""Values that are not a msgpack number: invalid msgpack, a string, an array."""


async def states(store: Store, worker_id: str = W) -> dict[str, list[str]]:
    """Every collection a key can be in, as lists (duplicates show)."""
    c, k = store.client, store.keys
    return {
        "queued": sc.text(await c.lrange(k.queued, 0, -1)),
        "pending": sc.text(await c.lrange(k.pending(worker_id), 0, -1)),
        "priority": sc.text(await c.lrange(k.priority_queue(worker_id), 0, -1)),
        "running": sc.text(await c.smembers(k.running)),
        "worker_running": sc.text(await c.smembers(k.worker_running(worker_id))),
        "finished": sc.text(await c.lrange(k.finished, 0, -1)),
        "failed": sc.text(await c.smembers(k.failed)),
    }


async def where(store: Store, keys: list[str], *, worker_set: bool = True) -> dict[str, str]:
    """The one state of each key; fails when a key is in none or in several.

    With ``worker_set``, the worker's running set must match the running set
    (cancel leaves the worker's set to the worker, which discards its result).
    """
    seen = await states(store)
    out = {}
    for key in keys:
        found = [
            name
            for name in ("queued", "pending", "priority", "running", "finished", "failed")
            for item in seen[name]
            if item == key
        ]
        assert len(found) == 1, f"{key} is in {found}"
        assert not worker_set or (key in seen["running"]) == (key in seen["worker_running"])
        out[key] = found[0]
    return out


async def hfield(raw: redis.asyncio.Redis, store: Store, key: str, name: str) -> Any:
    """A task field as stored, decoded (``None``: absent)."""
    value = (await stored_fields(raw, store.keys, key)).get(name)
    return None if value is None else decode(value)


async def condition(raw: redis.asyncio.Redis, store: Store, key: str) -> Any:
    return await hfield(raw, store, key, "condition")


async def register(store: Store, worker_id: str = W) -> None:
    await store.workers.register_worker(worker_id, {"pid": 1, "hostname": "h"})


async def pending(store: Store, n: int, **fields: Any) -> list[str]:
    await register(store)
    keys = await store.tasks.create_tasks("queued", [{"xs": {"i": i}, **fields} for i in range(n)])
    assert await store.tasks.pop_keys(W, n) == keys
    return keys


async def running(store: Store, n: int, **fields: Any) -> list[str]:
    keys = await pending(store, n, **fields)
    assert [t.key for t in await store.tasks.claim(W, keys)] == keys
    return keys


def corrupt_condition(cond: Any, field: str) -> None:
    assert cond["type"] == "CorruptTask"
    assert f"field '{field}'" in cond["message"]


# -- claim ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD)
async def test_claim_fails_only_the_task_with_bad_attempts(
    store: Store, raw: redis.asyncio.Redis, bad: bytes
) -> None:
    keys = await pending(store, 3)
    await raw.hset(store.keys.task(keys[1]), "attempts", bad)
    claimed = await store.tasks.claim(W, keys)
    assert [t.key for t in claimed] == [keys[0], keys[2]]
    assert await where(store, keys) == {keys[0]: "running", keys[1]: "failed", keys[2]: "running"}
    corrupt_condition(await condition(raw, store, keys[1]), "attempts")
    history = await hfield(raw, store, keys[1], "conditions")
    assert history[-1]["type"] == "CorruptTask"
    assert await raw.hget(store.keys.task(keys[1]), "finished_at") is not None


async def test_claim_repeat_fails_a_running_task_whose_attempts_went_bad(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await pending(store, 2)
    first = await store.tasks.claim(W, keys, token="t-1")
    assert [t.key for t in first] == keys
    await raw.hset(store.keys.task(keys[0]), "attempts", b"\xc1")
    again = await store.tasks.claim(W, keys, token="t-1")
    assert [t.key for t in again] == [keys[1]]
    assert await where(store, keys) == {keys[0]: "failed", keys[1]: "running"}
    corrupt_condition(await condition(raw, store, keys[0]), "attempts")


async def test_claim_fails_a_task_whose_hash_has_the_wrong_type(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await pending(store, 2)
    await raw.delete(store.keys.task(keys[0]))
    await raw.set(store.keys.task(keys[0]), b"garbage")
    assert [t.key for t in await store.tasks.claim(W, keys)] == [keys[1]]
    assert await where(store, keys) == {keys[0]: "failed", keys[1]: "running"}


async def test_claim_refuses_a_key_already_running(store: Store, raw: redis.asyncio.Redis) -> None:
    keys = await running(store, 1)
    # The same key queued a second time (a duplicate entry) and popped again.
    await raw.rpush(store.keys.pending(W), keys[0])
    assert await store.tasks.claim(W, keys) == []
    assert await where(store, keys) == {keys[0]: "running"}
    assert await hfield(raw, store, keys[0], "attempts") == 1


async def test_claim_refuses_a_key_already_failed(store: Store, raw: redis.asyncio.Redis) -> None:
    keys = await running(store, 1)
    assert await store.tasks.complete(
        W, "failed", [(keys[0], 1, {"condition": Condition("E", "x").to_dict()})]
    ) == [1]
    await raw.rpush(store.keys.pending(W), keys[0])
    assert await store.tasks.claim(W, keys) == []
    assert await where(store, keys) == {keys[0]: "failed"}


async def test_claim_refuses_a_key_twice_in_one_batch(store: Store, raw: redis.asyncio.Redis) -> None:
    keys = await pending(store, 1)
    await raw.rpush(store.keys.pending(W), keys[0])
    assert [t.key for t in await store.tasks.claim(W, [keys[0], keys[0]])] == keys
    assert await where(store, keys) == {keys[0]: "running"}
    assert await hfield(raw, store, keys[0], "attempts") == 1


async def test_claim_raises_before_writing_when_a_set_has_the_wrong_type(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await pending(store, 1)
    await raw.set(store.keys.worker_running(W), b"garbage")
    with pytest.raises(ServerError, match="holds a string, not a set"):
        await store.tasks.claim(W, keys)
    assert sc.text(await raw.lrange(store.keys.pending(W), 0, -1)) == keys


# -- pop --------------------------------------------------------------------------------------


async def test_a_key_queued_twice_is_claimed_once(store: Store, raw: redis.asyncio.Redis) -> None:
    keys = await running(store, 1)
    fresh = await store.tasks.create_tasks("queued", [{"xs": {"i": 9}}])
    # A running key queued again, and a queued key present twice.
    await raw.rpush(store.keys.queued, keys[0], fresh[0])
    popped = await store.tasks.pop_keys(W, 5)
    assert popped == [fresh[0], keys[0]]  # the second entry of fresh was dropped
    assert [t.key for t in await store.tasks.claim(W, popped)] == fresh
    assert await where(store, keys + fresh) == {keys[0]: "running", fresh[0]: "running"}
    assert await raw.llen(store.keys.pending(W)) == 0


# -- complete ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_retries", "attempts", "conditions"])
async def test_complete_failed_fails_only_the_corrupt_task(
    store: Store, raw: redis.asyncio.Redis, field: str
) -> None:
    keys = await running(store, 3, max_retries=1)
    await raw.hset(store.keys.task(keys[1]), field, b"\xc1" if field != "conditions" else encode(5))
    boom = {"condition": Condition("ValueError", "boom").to_dict()}
    out = await store.tasks.complete(W, "failed", [(k, None, boom) for k in keys])
    assert out == [2, 1, 2]
    assert await where(store, keys) == {keys[0]: "queued", keys[1]: "failed", keys[2]: "queued"}
    corrupt_condition(await condition(raw, store, keys[1]), field)


@pytest.mark.parametrize(
    ("value", "why"), [(None, "is missing"), (encode(1.5), "is 1.5"), (encode(0), "is 0")]
)
async def test_complete_fails_a_running_task_whose_attempts_no_fence_can_match(
    store: Store, raw: redis.asyncio.Redis, value: bytes | None, why: str
) -> None:
    """Missing, a fraction, or below the attempt reported: left alone, the task would run for ever."""
    keys = await running(store, 2)
    if value is None:
        await raw.hdel(store.keys.task(keys[1]), "attempts")
    else:
        await raw.hset(store.keys.task(keys[1]), "attempts", value)
    out = await store.tasks.complete(W, "finished", [(k, 1, {"ys": {"y": 1}}) for k in keys])
    assert out == [1, 0]
    assert await where(store, keys) == {keys[0]: "finished", keys[1]: "failed"}
    cond = await condition(raw, store, keys[1])
    corrupt_condition(cond, "attempts")
    assert why in cond["message"]


async def test_complete_never_retries_a_corrupt_task_condition(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await running(store, 2, max_retries=3)
    corrupt = {"condition": Condition("CorruptTask", "field 'xs' of task k is bad").to_dict()}
    other = {"condition": Condition("ValueError", "boom").to_dict()}
    out = await store.tasks.complete(W, "failed", [(keys[0], 1, corrupt), (keys[1], 1, other)])
    assert out == [1, 2]
    assert await where(store, keys) == {keys[0]: "failed", keys[1]: "queued"}
    assert await hfield(raw, store, keys[0], "conditions") == [corrupt["condition"]]


# -- a key is never claimed twice ------------------------------------------------------------


async def finish(store: Store, keys: list[str]) -> None:
    done = await store.tasks.complete(W, "finished", [(k, 1, {"ys": {"y": 1}}) for k in keys])
    assert done == [1] * len(keys)


@pytest.mark.parametrize("where_to", ["shared", "priority"])
async def test_a_finished_key_queued_again_is_dropped_at_claim(
    store: Store, raw: redis.asyncio.Redis, where_to: str
) -> None:
    keys = await running(store, 2)
    await finish(store, keys)
    queue = store.keys.queued if where_to == "shared" else store.keys.priority_queue(W)
    await raw.rpush(queue, keys[0])
    popped = await store.tasks.pop_keys(W, 5)
    assert popped == [keys[0]]
    assert await store.tasks.claim(W, popped) == []
    assert await where(store, keys) == {keys[0]: "finished", keys[1]: "finished"}
    assert await raw.lrange(store.keys.finished, 0, -1) == [k.encode() for k in keys]
    assert await hfield(raw, store, keys[0], "attempts") == 1


@pytest.mark.parametrize("damage", ["wrong_type", "attempts"])
async def test_a_finished_key_with_bad_data_queued_again_is_dropped_not_failed(
    store: Store, raw: redis.asyncio.Redis, damage: str
) -> None:
    keys = await running(store, 1)
    await finish(store, keys)
    hash_key = store.keys.task(keys[0])
    if damage == "wrong_type":
        await raw.delete(hash_key)
        await raw.set(hash_key, b"garbage")
    else:
        await raw.hset(hash_key, "attempts", b"\xc1")
    await raw.rpush(store.keys.queued, keys[0])
    assert await store.tasks.claim(W, await store.tasks.pop_keys(W, 1)) == []
    assert await where(store, keys) == {keys[0]: "finished"}


async def test_a_pushed_finished_key_queued_again_is_dropped_at_claim(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    await register(store)
    [key] = await store.tasks.create_tasks(
        "finished", [{"xs": {"x": 1}, "ys": {"y": 1}}], common={"finished_at": encode(1)}
    )
    await raw.rpush(store.keys.queued, key)
    assert await store.tasks.claim(W, await store.tasks.pop_keys(W, 1)) == []
    assert await where(store, [key]) == {key: "finished"}


async def test_a_queued_task_that_only_looks_finished_is_claimed(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    """Marker fields written by hand do not drop a queued key into no state: the finished list decides."""
    keys = await pending(store, 2)
    await raw.hset(store.keys.task(keys[0]), "finished_at", b"\xc1")
    await raw.hset(store.keys.task(keys[1]), "ys", encode({"y": 1}))
    assert [t.key for t in await store.tasks.claim(W, keys)] == keys
    assert await where(store, keys) == {keys[0]: "running", keys[1]: "running"}


async def test_a_retried_task_is_claimed_again(store: Store, raw: redis.asyncio.Redis) -> None:
    keys = await running(store, 1)
    boom = {"condition": Condition("ValueError", "boom").to_dict()}
    assert await store.tasks.complete(W, "failed", [(keys[0], 1, boom)]) == [1]
    assert await store.tasks.retry(keys, ignore_max_retries=True) == keys
    [task] = await store.tasks.claim(W, await store.tasks.pop_keys(W, 1))
    assert (task.key, task.attempt) == (keys[0], 2)


async def test_a_key_in_a_queue_and_another_workers_pending_list_runs_once(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    other = "worker-2"
    await register(store, other)
    keys = await pending(store, 1)
    await raw.rpush(store.keys.queued, keys[0])  # the same key in the shared queue too
    assert await store.tasks.pop_keys(other, 1) == keys
    assert [t.key for t in await store.tasks.claim(W, keys)] == keys
    assert await store.tasks.claim(other, keys) == []
    assert await where(store, keys) == {keys[0]: "running"}
    assert await raw.llen(store.keys.pending(other)) == 0


async def test_complete_finished_fails_a_task_with_bad_attempts(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await running(store, 3)
    await raw.hset(store.keys.task(keys[1]), "attempts", encode("one"))
    out = await store.tasks.complete(W, "finished", [(k, 1, {"ys": {"y": 1}}) for k in keys])
    assert out == [1, 0, 1]
    assert await where(store, keys) == {keys[0]: "finished", keys[1]: "failed", keys[2]: "finished"}
    corrupt_condition(await condition(raw, store, keys[1]), "attempts")


async def test_complete_finished_ignores_bad_bookkeeping_it_does_not_read(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await running(store, 2)
    await raw.hset(store.keys.task(keys[0]), "max_retries", b"\xc1")
    out = await store.tasks.complete(W, "finished", [(k, None, {"ys": {"y": 1}}) for k in keys])
    assert out == [1, 1]
    assert await where(store, keys) == {keys[0]: "finished", keys[1]: "finished"}


# -- requeue ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_retries", "attempts", "conditions"])
async def test_requeue_settles_every_task_of_a_lost_worker(
    store: Store, raw: redis.asyncio.Redis, field: str
) -> None:
    keys = await running(store, 3, max_retries=1)
    await raw.hset(store.keys.task(keys[1]), field, encode("bad") if field != "conditions" else b"\xc1")
    result = await store.tasks.requeue_worker_tasks(W, LOST)
    assert sorted(result.requeued) == sorted([keys[0], keys[2]])
    assert result.failed == [keys[1]]
    assert await where(store, keys) == {keys[0]: "queued", keys[1]: "failed", keys[2]: "queued"}
    corrupt_condition(await condition(raw, store, keys[1]), field)


async def test_requeue_raises_before_writing_when_a_list_has_the_wrong_type(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await running(store, 1)
    await raw.set(store.keys.priority_queue(W), b"garbage")
    await raw.rpush(store.keys.pending(W), "other")
    with pytest.raises(ServerError, match="holds a string, not a list"):
        await store.tasks.requeue_worker_tasks(W, LOST)
    assert sc.text(await raw.smembers(store.keys.running)) == keys
    assert sc.text(await raw.smembers(store.keys.worker_running(W))) == keys
    assert sc.text(await raw.lrange(store.keys.pending(W), 0, -1)) == ["other"]


# -- more complete branches -------------------------------------------------------------------


async def test_complete_fails_a_task_whose_hash_has_the_wrong_type(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await running(store, 2)
    await raw.delete(store.keys.task(keys[0]))
    await raw.set(store.keys.task(keys[0]), b"garbage")
    out = await store.tasks.complete(W, "finished", [(k, None, {"ys": {"y": 1}}) for k in keys])
    assert out == [0, 1]
    assert await where(store, keys) == {keys[0]: "failed", keys[1]: "finished"}
    # A repeat finds the key gone from running and does not trip on its type.
    again = await store.tasks.complete(W, "finished", [(keys[0], None, {"ys": {"y": 1}})])
    assert again == [0]


async def test_complete_raises_before_writing_when_a_set_has_the_wrong_type(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await running(store, 1)
    await raw.set(store.keys.failed, b"garbage")
    with pytest.raises(ServerError, match="holds a string, not a set"):
        await store.tasks.complete(W, "finished", [(keys[0], None, {"ys": {"y": 1}})])
    assert sc.text(await raw.smembers(store.keys.running)) == keys


# -- more pop branches ------------------------------------------------------------------------


async def test_claim_drops_entries_of_keys_that_run_or_failed(store: Store, raw: redis.asyncio.Redis) -> None:
    keys = await running(store, 1)
    done = await store.tasks.create_tasks("failed", [{"xs": {"i": 8}}])
    fresh = await store.tasks.create_tasks("queued", [{"xs": {"i": 9}}])
    await raw.delete(store.keys.queued)
    await raw.rpush(store.keys.queued, keys[0], done[0], fresh[0])
    popped = await store.tasks.pop_keys(W, 3)
    assert popped == [keys[0], done[0], fresh[0]]
    assert [t.key for t in await store.tasks.claim(W, popped)] == fresh
    assert sc.text(await raw.lrange(store.keys.queued, 0, -1)) == []
    assert await raw.llen(store.keys.pending(W)) == 0
    assert await where(store, keys + done + fresh) == {
        keys[0]: "running",
        done[0]: "failed",
        fresh[0]: "running",
    }


async def test_pop_raises_before_writing_when_a_list_has_the_wrong_type(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    await register(store)
    keys = await store.tasks.create_tasks("queued", [{"xs": {"i": 1}}])
    await raw.set(store.keys.pending(W), b"garbage")
    with pytest.raises(ServerError, match="holds a string, not a list"):
        await store.tasks.pop_keys(W, 1)
    assert sc.text(await raw.lrange(store.keys.queued, 0, -1)) == keys


# -- cancel, dequeue, retry -------------------------------------------------------------------


async def test_cancel_replaces_an_unreadable_history_and_skips_a_bad_hash(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await running(store, 2)
    queued = await store.tasks.create_tasks("queued", [{"xs": {"i": 5}}])
    await raw.hset(store.keys.task(keys[0]), "conditions", b"\xc1")
    await raw.delete(store.keys.task(keys[1]))
    await raw.set(store.keys.task(keys[1]), b"garbage")
    await raw.hset(store.keys.task(queued[0]), "conditions", encode({"not": "a list"}))
    cancelled = await store.tasks.cancel(keys + queued, Condition("Cancelled", "by hand"))
    assert cancelled == (queued, keys) or (cancelled[0], sorted(cancelled[1])) == (queued, sorted(keys))
    assert await where(store, keys + queued, worker_set=False) == dict.fromkeys(keys + queued, "failed")
    for key in (keys[0], queued[0]):
        history = await hfield(raw, store, key, "conditions")
        assert [c["type"] for c in history] == ["Cancelled"]


async def test_cancel_raises_before_writing_when_a_list_has_the_wrong_type(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await running(store, 1)
    await raw.set(store.keys.queued, b"garbage")
    with pytest.raises(ServerError, match="holds a string, not a list"):
        await store.tasks.cancel(keys, Condition("Cancelled", "by hand"))
    assert sc.text(await raw.smembers(store.keys.running)) == keys
    assert await raw.hget(store.keys.task(keys[0]), "condition") is None


async def test_dequeue_replaces_an_unreadable_history_and_skips_a_bad_hash(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await store.tasks.create_tasks("queued", [{"xs": {"i": i}} for i in range(3)])
    await raw.hset(store.keys.task(keys[0]), "conditions", encode(7))
    await raw.delete(store.keys.task(keys[1]))
    await raw.set(store.keys.task(keys[1]), b"garbage")
    assert await store.tasks.dequeue(store.keys.queued, Condition("Removed", "x")) == 3
    assert await where(store, keys) == dict.fromkeys(keys, "failed")
    history = await hfield(raw, store, keys[0], "conditions")
    assert [c["type"] for c in history] == ["Removed"]


async def test_retry_leaves_tasks_with_unreadable_counts_failed(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    keys = await store.tasks.create_tasks("failed", [{"xs": {"i": i}, "max_retries": 3} for i in range(3)])
    await raw.hset(store.keys.task(keys[0]), "max_retries", b"\xc1")
    await raw.delete(store.keys.task(keys[1]))
    await raw.set(store.keys.task(keys[1]), b"garbage")
    assert await store.tasks.retry(keys, ignore_max_retries=False) == [keys[2]]
    assert await where(store, keys) == {keys[0]: "failed", keys[1]: "failed", keys[2]: "queued"}
    # Ignoring max_retries re-queues even the bad hash, without touching it.
    assert await store.tasks.retry(keys[:2], ignore_max_retries=True, seeds=[1, 2]) == keys[:2]
    assert await raw.get(store.keys.task(keys[1])) == b"garbage"
    assert await hfield(raw, store, keys[0], "seed") == 1
