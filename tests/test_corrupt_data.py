"""Bad stored data fails one task, never a worker or a read (issue 8, point 1).

Each test corrupts live task hashes by hand (a raw client, as an operator or a
bug elsewhere would) and checks, against real workers (an in-process
:class:`rushpy.Worker` and a pool of worker processes), that the task with
the bad field fails alone with a ``CorruptTask`` condition naming the field,
that the worker stays up and finishes the other tasks, and that every read
returns the other rows plus the bad one with an ``error`` column.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import anyio
import msgpack  # type: ignore[import-untyped]
import pytest
import redis.asyncio

from rushpy import Controller, RedisConfig, Worker, run_function
from rushpy.codec import encode
from rushpy.fields import CorruptTask, DamagedTask, decode_task, popped_from_hash, popped_task
from rushpy.keys import Keys
from rushpy.models import PoppedTask
from rushpy.table import flatten_task
from tests import funcs
from tests.helpers import set_stored_field

pytestmark = pytest.mark.usefixtures("anyio_backend")

KINDS: dict[str, tuple[str, bytes]] = {
    "xs-invalid-msgpack": ("xs", b"\xc1"),
    "xs-empty": ("xs", b""),
    "xs-not-a-mapping": ("xs", encode([1, 2])),
    "xs-int-keys": ("xs", encode({1: 2})),
    "xs-pickled": ("xs", pickle.dumps({"x": 1})),
    "xs-ext-value": ("xs", msgpack.packb(msgpack.ExtType(42, b"zz"))),
    "xs-bad-known-ext": ("xs", msgpack.packb({"x": msgpack.ExtType(1, b"not a date")})),
    "xs-truncated": ("xs", encode({"x": 1})[:-1]),
    "xs_extra-not-a-mapping": ("xs_extra", encode(5)),
    "xs_extra-garbage": ("xs_extra", b"\xff\xff"),
    "seed-string": ("seed", encode("seven")),
    "seed-negative": ("seed", encode(-1)),
    "seed-float": ("seed", encode(1.5)),
    "timeout-nan": ("timeout", encode(math.nan)),
    "timeout-negative": ("timeout", encode(-1.0)),
    "timeout-string": ("timeout", encode("10")),
    "timeout-bool": ("timeout", encode(True)),
}
"""Corruption kinds of the fields a claim decodes: (field, raw value)."""


def field_of(kind: str) -> str:
    return KINDS[kind][0]


async def set_field(raw: redis.asyncio.Redis, network_id: str, key: str, field: str, value: bytes) -> None:
    await set_stored_field(raw, Keys(network_id), key, field, value)


def assert_corrupt(row: dict[str, Any], field: str) -> None:
    assert row["state"] == "failed", row
    assert row["condition"]["type"] == "CorruptTask", row["condition"]
    assert f"field '{field}'" in row["condition"]["message"], row["condition"]


async def push(controller: Controller, n: int) -> list[str]:
    # Every task has a seed and a timeout-free plain function: seeds and
    # timeouts are corrupted by hand below.
    return await controller.push_tasks([{"x": i} for i in range(n)], seeds=list(range(n)))


async def check_reads(controller: Controller, keys: list[str], bad: dict[str, str]) -> None:
    """Every read returns all rows; the bad ones carry an ``error`` naming their field."""
    for table in (
        await controller.fetch_tasks(),
        await controller.wait_for_tasks(keys, timeout=10),
        await controller.fetch_tasks_with_state(["finished", "failed"]),
    ):
        rows = {r["key"]: r for r in table}
        assert set(rows) == set(keys)
        for key, field in bad.items():
            assert f"field '{field}'" in rows[key]["error"], rows[key]
        for key in set(keys) - set(bad):
            assert "error" not in rows[key] or rows[key]["error"] is None
            assert rows[key]["y"] == rows[key]["x"] ** 2
    failed = {r["key"]: r for r in await controller.fetch_failed_tasks()}
    assert set(failed) == set(bad)
    for key, field in bad.items():
        assert_corrupt(failed[key], field)
    finished = await controller.fetch_finished_tasks()
    assert set(finished.keys) == set(keys) - set(bad)


# -- the in-process worker ------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_in_process_worker_fails_only_the_corrupt_task(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis, kind: str
) -> None:
    keys = await push(controller, 5)
    field, value = KINDS[kind]
    await set_field(raw, network_id, keys[2], field, value)
    async with Worker(network_id, config=config) as worker:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: run_function(worker, funcs.square))
                await controller.wait_for_tasks(keys, timeout=20)
                # The worker is still up and claims new work after the bad task.
                more = await push(controller, 2)
                await controller.wait_for_tasks(more, timeout=20)
                assert not worker.terminated
                await controller.stop_workers("terminate", [worker.worker_id])
    await check_reads(controller, keys + more, {keys[2]: field})


async def test_in_process_worker_fails_every_corrupt_task_of_one_batch(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    keys = await push(controller, 2 * len(KINDS))
    bad = {}
    for i, (field, value) in enumerate(KINDS.values()):
        await set_field(raw, network_id, keys[2 * i], field, value)
        bad[keys[2 * i]] = field
    async with Worker(network_id, config=config) as worker:
        tasks = await worker.pop_tasks(len(keys))
        # The good half came back; the bad half failed already, for good.
        assert sorted(t.key for t in tasks) == sorted(set(keys) - set(bad))
        await worker.finish_tasks([t.key for t in tasks], [{"y": t.xs["x"] ** 2} for t in tasks])
    await check_reads(controller, keys, bad)


async def test_a_corrupt_task_is_not_retried(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    [key] = await controller.push_tasks([{"x": 1}], max_retries=5)
    await set_field(raw, network_id, key, "xs", b"\xc1")
    async with Worker(network_id, config=config) as worker:
        assert await worker.pop_tasks(5) == []
    [row] = await controller.fetch_failed_tasks()
    assert_corrupt(row, "xs")
    assert row["attempts"] == 1
    assert [c["type"] for c in row["conditions"]] == ["CorruptTask"]
    assert await controller.n_queued_tasks() == 0


# -- a pool of worker processes -------------------------------------------------------------


async def test_local_workers_fail_only_the_corrupt_tasks(
    controller: Controller, network_id: str, raw: redis.asyncio.Redis
) -> None:
    keys = await push(controller, 2 * len(KINDS))
    bad = {}
    for i, (field, value) in enumerate(KINDS.values()):
        await set_field(raw, network_id, keys[2 * i], field, value)
        bad[keys[2 * i]] = field
    worker_ids = await controller.start_local_workers(2, fun=funcs.square)
    await controller.wait_for_workers(2, timeout=30)
    await controller.wait_for_tasks(keys, timeout=30, detect_lost_workers=True)
    more = await push(controller, 4)
    await controller.wait_for_tasks(more, timeout=30, detect_lost_workers=True)
    info = {r["worker_id"]: r["state"] for r in await controller.worker_info()}
    assert info == dict.fromkeys(worker_ids, "running")
    assert await controller.detect_lost_workers() == []
    await check_reads(controller, keys + more, bad)


# -- reads ------------------------------------------------------------------------------------


READ_KINDS: dict[str, tuple[str, bytes]] = {
    "ys-garbage": ("ys", b"\xc1"),
    "ys-not-a-mapping": ("ys", encode(5)),
    "ys_extra-list": ("ys_extra", encode([1])),
    "xs-string": ("xs", encode("x")),
    "condition-without-message": ("condition", encode({"type": "E"})),
    "conditions-not-a-list": ("conditions", encode(3)),
    "attempts-negative": ("attempts", encode(-2)),
    "max_retries-string": ("max_retries", encode("3")),
    "created_at-int": ("created_at", encode(17)),
    "finished_at-garbage": ("finished_at", b"\xc1"),
    "worker_id-int": ("worker_id", encode(3)),
    "unknown-garbage": ("whatever", b"\xc1"),
}


@pytest.mark.parametrize("kind", sorted(READ_KINDS))
async def test_reads_return_a_bad_finished_row_with_its_error(
    controller: Controller, network_id: str, raw: redis.asyncio.Redis, kind: str
) -> None:
    xss, yss = [{"x": i} for i in range(3)], [{"y": i * i} for i in range(3)]
    keys = await controller.push_finished_tasks(xss, yss)
    assert "error" not in (await controller.fetch_finished_tasks()).columns
    field, value = READ_KINDS[kind]
    await set_field(raw, network_id, keys[2], field, value)
    controller.reset_cache()
    for table in (
        await controller.fetch_finished_tasks(),
        await controller.fetch_tasks(),
        await controller.wait_for_tasks(keys, timeout=5),
        await controller.fetch_new_tasks(),
    ):
        rows = {r["key"]: r for r in table}
        assert set(rows) == set(keys)
        assert f"field '{field}'" in rows[keys[2]]["error"]
        assert [rows[k]["y"] for k in keys[:2]] == [0, 1]
        assert field == "xs" or rows[keys[2]]["x"] == 2
    # The cache keeps the bad row like any other.
    assert (await controller.fetch_finished_tasks()).keys == keys


async def test_reads_report_a_task_key_of_the_wrong_redis_type(
    controller: Controller, network_id: str, raw: redis.asyncio.Redis
) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(3)])
    hash_key = Keys(network_id).task(keys[1])
    await raw.delete(hash_key)
    await raw.rpush(hash_key, b"garbage")
    rows = {r["key"]: r for r in await controller.fetch_tasks()}
    assert set(rows) == set(keys)
    assert "stored as a list, not a hash" in rows[keys[1]]["error"]
    assert rows[keys[0]]["x"] == 0
    assert len(await controller.fetch_queued_tasks()) == 3


async def test_reads_report_a_field_name_that_is_not_utf8(
    controller: Controller, network_id: str, raw: redis.asyncio.Redis
) -> None:
    [key] = await controller.push_tasks([{"x": 1}])
    await raw.hset(Keys(network_id).task(key), b"\xff\xfe", encode(1))
    [row] = await controller.fetch_tasks()
    assert row["x"] == 1
    assert "not UTF-8" in row["error"]


# -- the decoder on its own -------------------------------------------------------------------


def flat(**fields: bytes) -> list[bytes]:
    return [part for name, value in fields.items() for part in (name.encode(), value)]


def test_decode_task_keeps_the_good_fields_and_names_the_bad_ones() -> None:
    task = decode_task(flat(xs=encode({"x": 1}), ys=b"\xc1", seed=encode(-1), extra=encode("kept")))
    assert isinstance(task, DamagedTask)
    assert dict(task) == {"xs": {"x": 1}, "extra": "kept"}
    assert set(task.errors) == {"ys", "seed"}
    assert "field 'ys' is not valid msgpack" in task.error
    assert "field 'seed'" in task.error
    assert task  # truthy even when no field is left, so `if task` keeps the row


def test_decode_task_fast_path_returns_a_plain_dict() -> None:
    task = decode_task(flat(xs=encode({"x": 1}), timeout=encode(2), seed=encode(3)))
    assert type(task) is dict
    assert task == {"xs": {"x": 1}, "timeout": 2, "seed": 3}


def test_decode_task_of_a_wrong_redis_type() -> None:
    task = decode_task(b"string")
    assert isinstance(task, DamagedTask)
    assert dict(task) == {}
    assert "stored as a string, not a hash" in task.error


def test_decode_task_reports_a_huge_value_briefly() -> None:
    task = decode_task(flat(xs=b"\x91" + b"x" * 1_000_000))
    assert isinstance(task, DamagedTask)
    assert len(task.error) < 400


def test_flatten_task_adds_the_error_column_and_keeps_an_input_named_error() -> None:
    damaged = decode_task(flat(xs=encode({"error": 1}), ys=encode(3)))
    row = flatten_task("k", "finished", damaged)
    assert row["xs.error"] == 1
    assert "field 'ys'" in row["error"]
    clean = flatten_task("k", "finished", decode_task(flat(xs=encode({"error": 1}))))
    assert clean["error"] == 1


def test_popped_task_checks_every_input() -> None:
    ok = popped_task("k", 2, [encode({"x": 1}), encode({"e": 1}), encode(1.5), encode(2**64 - 1)])
    assert ok == PoppedTask("k", {"x": 1}, {"e": 1}, 2, 1.5, 2**64 - 1)
    assert popped_task("k", 1, [encode({}), None, None, None]) == PoppedTask("k", {}, None, 1, None, None)
    missing = popped_task("k", 1, [None, None, None, None])
    assert isinstance(missing, CorruptTask)
    assert "field 'xs' of task k is missing" in missing.message
    for field, value in KINDS.values():
        raws: dict[str, bytes | None] = dict.fromkeys(("xs", "xs_extra", "timeout", "seed"))
        raws["xs"] = encode({"x": 1})
        raws[field] = value
        bad = popped_task("k", 3, list(raws.values()))
        assert isinstance(bad, CorruptTask), (field, value)
        assert (bad.key, bad.attempt) == ("k", 3)
        assert f"field '{field}' of task k" in bad.message
        assert bad.condition().type == "CorruptTask"


def test_popped_from_hash_uses_the_same_checks() -> None:
    good = decode_task(flat(xs=encode({"x": 1}), attempts=encode(2), ys=b"\xc1"))
    assert popped_from_hash("k", good) == PoppedTask("k", {"x": 1}, None, 2)
    task = decode_task(flat(xs=encode({"x": 1}), attempts=encode(2), timeout=encode(-1)))
    bad = popped_from_hash("k", task)
    assert isinstance(bad, CorruptTask)
    assert bad.attempt == 2
    assert "field 'timeout'" in bad.message
    no_attempts = popped_from_hash("k", decode_task(flat(xs=encode({}), attempts=encode("x"))))
    assert isinstance(no_attempts, CorruptTask)
    assert no_attempts.attempt is None
    wrong_type = popped_from_hash("k", decode_task(b"list"))
    assert isinstance(wrong_type, CorruptTask)
    assert "not a hash" in wrong_type.message
