"""Finished tasks stored as packed rows (rushpy.stored_rows): layout, reads, bad rows."""

from __future__ import annotations

import re
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import redis.asyncio

from rushpy import Controller, Worker
from rushpy.codec import decode, encode
from rushpy.models import TaskState
from rushpy.scripts import calls as sc
from rushpy.scripts import script
from rushpy.store import Store
from rushpy.stored_rows import ROW_SLOTS, UNREADABLE, flat_of, pack_row, unpack_row
from tests.helpers import stored_fields

pytestmark = pytest.mark.usefixtures("anyio_backend")

W = "worker-1"


def test_the_scripts_and_python_agree_on_the_slots() -> None:
    match = re.search(r"local ROW_SLOTS = \{(.*?)\}", script("create").source, re.S)
    assert match is not None
    assert tuple(re.findall(r'"(\w+)"', match.group(1))) == ROW_SLOTS


def test_a_row_reads_back_as_the_fields_it_was_packed_from() -> None:
    fields = {"ys": encode({"y": 1}), "xs": encode({"x": 2}), "claim": encode("t"), "other": b"\x01"}
    flat = unpack_row(pack_row(fields))
    assert dict(zip(flat[::2], flat[1::2], strict=True)) == {k.encode(): v for k, v in fields.items()}
    # Trailing absent slots are left out; an unknown field fills every slot first.
    assert len(msgpack.unpackb(pack_row({"xs": b"\x80"}), raw=True)) == 1
    assert len(msgpack.unpackb(pack_row({"zz": b"\x80"}), raw=True)) == len(ROW_SLOTS) + 2


@pytest.mark.parametrize(
    "blob",
    [
        b"\xc1garbage",  # not msgpack
        msgpack.packb({"xs": 1}),  # a map, not an array
        msgpack.packb([1, 2]),  # values that are not stored bytes
        msgpack.packb([False] * len(ROW_SLOTS) + [b"name"]),  # an unpaired extra field
        msgpack.packb([False] * len(ROW_SLOTS) + [1, b"v"]),  # an extra field's name not bytes
    ],
)
def test_an_unreadable_row_becomes_one_field_that_never_decodes(blob: bytes) -> None:
    flat = unpack_row(blob)
    assert flat[0] == UNREADABLE
    with pytest.raises(Exception):  # noqa: B017 - any decoder error: the value must not decode
        decode(flat[1])


def test_flat_of_passes_hashes_and_type_names_through() -> None:
    assert flat_of([b"xs", b"\x80"]) == [b"xs", b"\x80"]
    assert flat_of(b"string") == b"string"
    assert flat_of([]) == []
    assert flat_of([pack_row({"xs": b"\x80"})]) == [b"xs", b"\x80"]



async def _claimed_one(store: Store) -> tuple[str, Any]:
    """A queued task ``{"x": 1}`` popped and claimed by worker ``W``: its key and claimed task."""
    await store.workers.register_worker(W, {"pid": 1, "hostname": "h"})
    [key] = await store.tasks.create_tasks("queued", [{"xs": {"x": 1}}])
    await store.tasks.pop_keys(W, 1)
    [task] = await store.tasks.claim(W, [key])
    return key, task

async def test_a_finished_task_leaves_its_hash_for_a_row(store: Store, raw: redis.asyncio.Redis) -> None:
    await store.workers.register_worker(W, {"pid": 1, "hostname": "h"})
    [key] = await store.tasks.create_tasks("queued", [{"xs": {"x": 1}}])
    assert await raw.exists(store.keys.task(key)) == 1
    assert await store.tasks.pop_keys(W, 1) == [key]
    [task] = await store.tasks.claim(W, [key])
    assert await store.tasks.complete(W, "finished", [(key, task.attempt, {"ys": {"y": 2}})]) == [1]
    assert await raw.exists(store.keys.task(key)) == 0
    row = await raw.hget(store.keys.rows, key)
    assert row is not None
    stored = await stored_fields(raw, store.keys, key)
    assert decode(stored["xs"]) == {"x": 1} and decode(stored["ys"]) == {"y": 2}
    assert decode(stored["worker_id"]) == W and decode(stored["attempts"]) == 1
    # The Lua packer and the Python one (archive import) write the same bytes.
    assert pack_row(stored) == row
    [read] = await store.reads.read_tasks([key])
    assert read is not None and read["ys"] == {"y": 2} and "error" not in read
    assert await store.reads.lookup([key]) == ["finished"]


async def test_a_field_written_by_hand_while_it_ran_is_kept_in_the_row(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    key, task = await _claimed_one(store)
    await raw.hset(store.keys.task(key), "note", encode("kept"))
    await store.tasks.complete(W, "finished", [(key, task.attempt, {"ys": {"y": 2}})])
    assert decode((await stored_fields(raw, store.keys, key))["note"]) == "kept"
    [read] = await store.reads.read_tasks([key])
    assert read is not None and read["note"] == "kept"


async def test_tasks_created_finished_are_rows_and_are_never_created_twice(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    call = sc.create(store.keys, "finished", [("k1", [encode({"y": 1})])], names=["ys"])
    assert await call.run(store.client) == 1
    assert await raw.exists(store.keys.task("k1")) == 0
    assert await call.run(store.client) == 0  # the row exists: first writer wins
    queued = sc.create(store.keys, "queued", [("k1", [encode({"x": 1})])], names=["xs"])
    assert await queued.run(store.client) == 0  # nor as a queued task
    assert await raw.exists(store.keys.task("k1")) == 0
    assert sc.text(await raw.lrange(store.keys.finished, 0, -1)) == ["k1"]


async def test_a_finished_task_queued_again_is_dropped_not_run_twice(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    await store.workers.register_worker(W, {"pid": 1, "hostname": "h"})
    [key] = await store.tasks.create_tasks("finished", [{"xs": {"x": 1}, "ys": {"y": 1}}])
    await raw.rpush(store.keys.queued, key)
    assert await store.tasks.pop_keys(W, 1) == [key]
    assert list(await store.tasks.claim(W, [key])) == []
    assert await raw.exists(store.keys.task(key)) == 0  # no hash was made for it
    assert sc.text(await raw.smembers(store.keys.running)) == []


async def test_a_row_made_by_hand_for_a_task_not_finished_does_not_hide_it(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    """Only the finished list says a task finished: a stray row does not drop a queued task."""
    await store.workers.register_worker(W, {"pid": 1, "hostname": "h"})
    [key] = await store.tasks.create_tasks("queued", [{"xs": {"x": 1}}])
    await raw.hset(store.keys.rows, key, pack_row({"ys": encode({"y": 9})}))
    await store.tasks.pop_keys(W, 1)
    [task] = await store.tasks.claim(W, [key])
    assert task.key == key and task.xs == {"x": 1}
    assert await store.tasks.complete(W, "finished", [(key, task.attempt, {"ys": {"y": 2}})]) == [1]
    [read] = await store.reads.read_tasks([key])
    assert read is not None and read["ys"] == {"y": 2}


async def test_a_repeated_completion_is_recognised_from_the_row(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    key, task = await _claimed_one(store)
    items = [(key, task.attempt, {"ys": {"y": 2}})]
    assert await store.tasks.complete(W, "finished", items, token="t1") == [1]
    assert await store.tasks.complete(W, "finished", items, token="t1") == [1]  # the lost reply's repeat
    assert await store.tasks.complete(W, "finished", items, token="t2") == [0]  # another call: discarded
    await raw.hset(store.keys.rows, key, b"\xc1garbage")
    # An unreadable row is not mistaken for a repeat of this call: the completion is refused.
    assert await store.tasks.complete(W, "finished", items, token="t1") == [0]
    assert sc.text(await raw.lrange(store.keys.finished, 0, -1)) == [key]


async def test_a_bad_row_fails_its_own_read_only(
    controller: Controller, raw: redis.asyncio.Redis, config: Any
) -> None:
    keys = await controller.push_finished_tasks([{"x": i} for i in range(3)], [{"y": i} for i in range(3)])
    rows_key = controller._keys.rows
    await raw.hset(rows_key, keys[1], b"\xc1garbage")
    controller.reset_cache()
    table = await controller.fetch_finished_tasks()
    by_key = {row["key"]: row for row in table.rows}
    assert by_key[keys[0]]["y"] == 0 and by_key[keys[2]]["y"] == 2
    assert "field 'row'" in by_key[keys[1]]["error"]
    task = await controller.fetch_task(keys[1])
    assert task is not None and "field 'row'" in task["error"]
    assert await controller.tasks_with_state([TaskState.FINISHED]) == {TaskState.FINISHED: keys}
    async with Worker(controller.network_id, config=config) as worker:
        assert len(await worker.fetch_finished_tasks()) == 3


async def test_reset_deletes_the_rows(controller: Controller, raw: redis.asyncio.Redis) -> None:
    await controller.push_finished_tasks([{"x": 1}], [{"y": 1}])
    assert await raw.exists(controller._keys.rows) == 1
    await controller.reset()
    assert await raw.exists(controller._keys.rows) == 0


async def test_a_rows_key_of_the_wrong_type_is_refused_before_any_write(
    store: Store, raw: redis.asyncio.Redis
) -> None:
    await raw.set(store.keys.rows, b"garbage")
    with pytest.raises(Exception, match="holds a string, not a hash"):
        await store.tasks.create_tasks("finished", [{"xs": {"x": 1}, "ys": {"y": 1}}])
    assert await raw.llen(store.keys.finished) == 0
    assert await raw.llen(store.keys.all_tasks) == 0

