"""Controller behaviour against the suite's real server.

Most tests drive tasks with an in-process :class:`rushpy.Worker` (fast and
deterministic); a few start real local worker processes.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import anyio
import pytest
import redis.asyncio

import rushpy
from rushpy import Controller, RedisConfig, Worker
from rushpy.codec import encode
from rushpy.stored_rows import pack_row
from tests.funcs import async_square, bad_return, fail_on_odd, square
from tests.helpers import eventually, stored_fields

# Marked at collection time (not only by conftest's late marker) so that anyio keeps the
# ``parametrize`` ids of async tests instead of re-parametrizing them by backend alone.
pytestmark = pytest.mark.anyio

# -- helpers ----------------------------------------------------------------------------------


async def network_keys(controller: Controller) -> set[str]:
    """Every key of the controller's network on the server."""
    return {
        name.decode()
        async for name in controller._store.client.scan_iter(match=controller._keys.pattern, count=1000)
    }


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def by_key(table: rushpy.Table) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in table}


# -- push_tasks -------------------------------------------------------------------------------


async def test_push_tasks_returns_keys_in_order_and_rows_are_flat(controller: Controller) -> None:
    xss = [{"x": i, "name": f"t{i}"} for i in range(5)]
    keys = await controller.push_tasks(xss)

    assert len(keys) == 5
    assert len(set(keys)) == 5
    assert all(isinstance(k, str) and k for k in keys)

    table = await controller.fetch_queued_tasks()
    assert table.keys == keys
    assert table["state"] == ["queued"] * 5
    assert table["x"] == [0, 1, 2, 3, 4]
    assert table["name"] == ["t0", "t1", "t2", "t3", "t4"]
    assert "xs" not in table.columns
    assert table["worker_id"] == [None] * 5
    assert await controller.n_queued_tasks() == 5
    assert await controller.n_tasks() == 5


async def test_push_tasks_stores_xss_extra(controller: Controller, config: RedisConfig) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}], xss_extra=[{"tag": "warm", "x": 99}, None])
    rows = by_key(await controller.fetch_queued_tasks())
    assert rows[keys[0]]["tag"] == "warm"
    # An extra entry whose name is taken by xs is prefixed with its group.
    assert rows[keys[0]]["x"] == 1
    assert rows[keys[0]]["xs_extra.x"] == 99
    assert rows[keys[1]].get("tag") is None

    async with Worker(controller.network_id, config=config) as worker:
        task = await worker.pop_task()
        assert task is not None
        assert task.key == keys[0]
        assert task.xs == {"x": 1}
        assert task.xs_extra == {"tag": "warm", "x": 99}


async def test_push_nothing_is_a_noop(controller: Controller) -> None:
    before = await network_keys(controller)
    assert await controller.push_tasks([]) == []
    assert await controller.push_finished_tasks([], []) == []
    assert await controller.push_failed_tasks([], []) == []
    assert await network_keys(controller) == before == set()
    assert await controller.n_tasks() == 0


async def test_push_ten_thousand_tasks_in_one_call(controller: Controller) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(10_000)])
    assert len(keys) == 10_000
    assert len(set(keys)) == 10_000
    assert await controller.n_queued_tasks() == 10_000
    assert await controller.n_tasks() == 10_000
    table = await controller.fetch_queued_tasks()
    assert table.keys == keys
    assert table["x"] == list(range(10_000))


@pytest.mark.parametrize(
    ("xss", "xss_extra", "match"),
    [
        pytest.param({"x": 1}, None, "xss must be a list of mappings", id="one-mapping"),
        pytest.param("x=1", None, "xss must be a list of mappings, got str", id="string"),
        pytest.param(42, None, "xss must be a list of mappings, got int", id="int"),
        pytest.param([{"x": 1}, 3], None, r"xss\[1\] must be a mapping", id="element-not-mapping"),
        pytest.param([{"x": 1}, {2: "a"}], None, r"xss\[1\] has key 2 .*keys must be strings", id="int-key"),
        pytest.param(
            [{"x": 1}, {"x": 2}, {"x": 3}],
            [{"e": 1}, {"e": 2}],
            "xss_extra has 2 entries but there are 3 tasks",
            id="extra-length",
        ),
        pytest.param([{"x": 1}], "nope", "xss_extra must be a list", id="extra-not-list"),
        pytest.param([{"x": 1}, {"x": object()}], None, "cannot encode value .*object", id="unencodable"),
        pytest.param([{"x": 1}], [{"e": object()}], "cannot encode", id="unencodable-extra"),
    ],
)
async def test_push_tasks_rejects_bad_input(
    controller: Controller, xss: Any, xss_extra: Any, match: str
) -> None:
    with pytest.raises(rushpy.TaskError, match=match):
        await controller.push_tasks(xss, xss_extra)
    # Nothing was created, not even part of the batch.
    assert await controller.n_tasks() == 0
    assert await network_keys(controller) == set()


async def test_task_error_is_a_value_error_and_rush_error(controller: Controller) -> None:
    with pytest.raises(ValueError, match="must be a list"):
        await controller.push_tasks(None)  # type: ignore[arg-type]
    with pytest.raises(rushpy.RushError):
        await controller.push_tasks([1])  # type: ignore[list-item]


# -- priority tasks ---------------------------------------------------------------------------


async def test_priority_task_is_popped_before_older_shared_tasks(
    controller: Controller, config: RedisConfig
) -> None:
    shared = await controller.push_tasks([{"x": "s1"}, {"x": "s2"}])
    async with Worker(controller.network_id, config=config) as worker:
        prio = await controller.push_priority_tasks([{"x": "p"}], priority=[worker.worker_id])

        table = await controller.fetch_priority_tasks()
        assert table.keys == prio
        assert table["priority"] == [worker.worker_id]
        assert table["x"] == ["p"]
        assert table["state"] == ["queued"]
        assert await controller.n_queued_priority_tasks() == 1
        assert await controller.n_queued_tasks() == 3
        # Priority tasks are queued too.
        assert set(prio) <= set((await controller.fetch_queued_tasks()).keys)

        first = await worker.pop_task()
        second = await worker.pop_task()
        assert first is not None and second is not None
        assert first.key == prio[0]
        assert first.xs == {"x": "p"}
        assert second.key == shared[0]
        assert len(await controller.fetch_priority_tasks()) == 0


async def test_priority_to_unknown_stopped_or_none_goes_to_shared_queue(
    controller: Controller, config: RedisConfig
) -> None:
    async with Worker(controller.network_id, config=config) as gone:
        pass  # registered, then terminated
    keys = await controller.push_priority_tasks(
        [{"x": 1}, {"x": 2}, {"x": 3}], priority=["no-such-worker", None, gone.worker_id]
    )
    assert len(keys) == 3
    assert len(await controller.fetch_priority_tasks()) == 0
    assert await controller.n_queued_priority_tasks() == 0
    queued = await controller.fetch_queued_tasks()
    assert set(queued.keys) == set(keys)
    assert "priority" not in queued.columns


async def test_priority_keys_follow_input_order_across_targets(
    controller: Controller, config: RedisConfig
) -> None:
    async with Worker(controller.network_id, config=config) as worker:
        wid = worker.worker_id
        keys = await controller.push_priority_tasks(
            [{"x": 0}, {"x": 1}, {"x": 2}, {"x": 3}], priority=[wid, None, wid, None]
        )
        rows = by_key(await controller.fetch_tasks())
        assert [rows[k]["x"] for k in keys] == [0, 1, 2, 3]
        prio = await controller.fetch_priority_tasks()
        assert prio.keys == [keys[0], keys[2]]
        assert prio["priority"] == [wid, wid]


@pytest.mark.parametrize(
    ("priority", "match"),
    [
        pytest.param(["a"], "priority has 1 entries but there are 2 tasks", id="length"),
        pytest.param([1, None], "priority entries are worker ids", id="not-str"),
    ],
)
async def test_push_priority_tasks_rejects_bad_priority(
    controller: Controller, priority: Any, match: str
) -> None:
    with pytest.raises(rushpy.TaskError, match=match):
        await controller.push_priority_tasks([{"x": 1}, {"x": 2}], priority=priority)
    assert await controller.n_tasks() == 0


async def test_push_priority_tasks_with_unencodable_value_creates_nothing(
    controller: Controller, config: RedisConfig
) -> None:
    async with Worker(controller.network_id, config=config) as worker:
        with pytest.raises(rushpy.TaskError, match="cannot encode"):
            await controller.push_priority_tasks(
                [{"x": 1}, {"x": object()}], priority=[worker.worker_id, None]
            )
        # Invalid input must not leave half of the batch queued.
        assert await controller.n_tasks() == 0
        assert await controller.n_queued_tasks() == 0


# -- finished / failed tasks pushed directly --------------------------------------------------


async def test_push_finished_tasks(controller: Controller) -> None:
    keys = await controller.push_finished_tasks(
        [{"x": 1}, {"x": 2}],
        [{"y": 10}, {"y": 20}],
        xss_extra=[{"source": "warm"}, None],
        yss_extra=[None, {"cost": 0.5}],
    )
    table = await controller.fetch_finished_tasks()
    assert table.keys == keys
    assert table["state"] == ["finished", "finished"]
    assert table["x"] == [1, 2]
    assert table["y"] == [10, 20]
    assert table["source"] == ["warm", None]
    assert table["cost"] == [None, 0.5]
    assert all(row["finished_at"] is not None for row in table)
    assert await controller.n_finished_tasks() == 2
    assert await controller.n_queued_tasks() == 0
    assert await controller.tasks_with_state("finished") == {"finished": keys}


async def test_push_finished_tasks_rejects_mismatched_yss(controller: Controller) -> None:
    with pytest.raises(rushpy.TaskError, match="yss has 2 entries but there are 3 tasks"):
        await controller.push_finished_tasks([{"x": 1}, {"x": 2}, {"x": 3}], [{"y": 1}, {"y": 2}])
    with pytest.raises(rushpy.TaskError, match=r"yss\[0\] must be a mapping"):
        await controller.push_finished_tasks([{"x": 1}], [3])  # type: ignore[list-item]
    assert await controller.n_tasks() == 0


async def test_push_failed_tasks_conditions(controller: Controller) -> None:
    conditions: list[Any] = [
        ValueError("bad value"),
        "plain message",
        {"type": "Custom", "message": "from a mapping"},
        rushpy.Condition("Own", "a condition object"),
    ]
    keys = await controller.push_failed_tasks([{"x": i} for i in range(4)], conditions)
    rows = by_key(await controller.fetch_failed_tasks())
    assert set(rows) == set(keys)
    assert all(row["state"] == "failed" for row in rows.values())
    assert [rows[k]["x"] for k in keys] == [0, 1, 2, 3]

    cond = [rows[k]["condition"] for k in keys]
    assert cond[0]["type"] == "ValueError"
    assert cond[0]["message"] == "bad value"
    assert cond[1]["message"] == "plain message"
    assert isinstance(cond[1]["type"], str) and cond[1]["type"]
    assert cond[2]["type"] == "Custom"
    assert cond[2]["message"] == "from a mapping"
    assert cond[3]["type"] == "Own"
    assert cond[3]["message"] == "a condition object"

    assert await controller.n_failed_tasks() == 4
    assert await controller.is_failed_task(keys) == [True] * 4


@pytest.mark.parametrize(
    "condition",
    [pytest.param(42, id="int"), pytest.param({"type": "NoMessage"}, id="mapping-without-message")],
)
async def test_push_failed_tasks_rejects_bad_condition(controller: Controller, condition: Any) -> None:
    with pytest.raises(rushpy.TaskError, match="invalid condition"):
        await controller.push_failed_tasks([{"x": 1}], [condition])
    with pytest.raises(rushpy.TaskError, match="conditions has 2 entries"):
        await controller.push_failed_tasks([{"x": 1}], ["a", "b"])
    assert await controller.n_tasks() == 0


# -- empty_queue ------------------------------------------------------------------------------


async def test_empty_queue_fails_queued_tasks_and_leaves_running_ones(
    controller: Controller, config: RedisConfig
) -> None:
    shared = await controller.push_tasks([{"x": i} for i in range(3)])
    async with Worker(controller.network_id, config=config) as worker:
        prio = await controller.push_priority_tasks(
            [{"x": "p1"}, {"x": "p2"}], priority=[worker.worker_id] * 2
        )
        running = await worker.pop_task()
        assert running is not None and running.key == prio[0]

        moved = await controller.empty_queue()
        assert moved == 4
        assert await controller.n_queued_tasks() == 0
        assert await controller.n_queued_priority_tasks() == 0
        assert len(await controller.fetch_queued_tasks()) == 0

        failed = by_key(await controller.fetch_failed_tasks())
        assert set(failed) == {*shared, prio[1]}
        for row in failed.values():
            assert row["condition"]["type"]
            assert "empty_queue" in row["condition"]["message"]

        # The running task is untouched and can still be finished.
        assert await controller.is_running_task(running.key) is True
        assert await controller.n_running_tasks() == 1
        assert await worker.finish_tasks([running.key], [{"y": 1}]) == [True]

        assert await controller.empty_queue() == 0
    assert (await controller.fetch_finished_tasks()).keys == [running.key]


# -- reading by state -------------------------------------------------------------------------


async def test_fetch_running_tasks(controller: Controller, config: RedisConfig) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(3)])
    async with Worker(controller.network_id, config=config) as worker:
        popped = await worker.pop_tasks(2)
        assert [t.key for t in popped] == keys[:2]
        table = await controller.fetch_running_tasks()
        assert set(table.keys) == set(keys[:2])
        assert table["state"] == ["running", "running"]
        assert table["worker_id"] == [worker.worker_id] * 2
        assert sorted(table["x"]) == [0, 1]
        assert all(row["started_at"] is not None for row in table)
        assert await controller.n_running_tasks() == 2
        assert (await controller.fetch_queued_tasks()).keys == [keys[2]]


async def test_fetch_tasks_in_every_state_and_state_queries(
    controller: Controller, config: RedisConfig
) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(4)])
    a, b, c, d = keys
    async with Worker(controller.network_id, config=config) as worker:
        popped = await worker.pop_tasks(3)
        assert [t.key for t in popped] == [a, b, c]
        assert await worker.finish_tasks([b], [{"y": 1}]) == [True]
        assert await worker.fail_tasks([c], [RuntimeError("no")]) == [True]
        e = (await controller.push_finished_tasks([{"x": 4}], [{"y": 4}]))[0]

        table = await controller.fetch_tasks()
        assert table.keys == [a, b, c, d, e]
        assert table["state"] == ["running", "finished", "failed", "queued", "finished"]
        assert table["x"] == [0, 1, 2, 3, 4]
        assert by_key(table)[c]["condition"]["type"] == "RuntimeError"

        some = await controller.fetch_tasks_with_state(["queued", "finished"])
        assert some.keys == [b, d, e]
        assert some["state"] == ["finished", "queued", "finished"]
        assert (await controller.fetch_tasks_with_state("failed")).keys == [c]

        with pytest.raises(rushpy.TaskError, match="unknown task state 'done'"):
            await controller.fetch_tasks_with_state(["queued", "done"])
        with pytest.raises(rushpy.TaskError, match="unknown task state"):
            await controller.tasks_with_state("pending")

        states = await controller.tasks_with_state()
        assert set(states) == {"queued", "running", "finished", "failed"}
        assert states["queued"] == [d]
        assert states["running"] == [a]
        assert states["finished"] == [b, e]
        assert states["failed"] == [c]
        assert await controller.tasks_with_state(["failed", "running"]) == {"failed": [c], "running": [a]}

        assert await controller.is_running_task(a) is True
        assert await controller.is_running_task(b) is False
        assert await controller.is_running_task([a, b, c, d, "unknown"]) == [True, False, False, False, False]
        assert await controller.is_failed_task(c) is True
        assert await controller.is_failed_task(a) is False
        assert await controller.is_failed_task([a, b, c, d]) == [False, False, True, False]
        assert await controller.is_failed_task([]) == []


# -- fetch_new_tasks and the cache ------------------------------------------------------------


async def test_fetch_new_tasks_returns_only_new_results(controller: Controller, config: RedisConfig) -> None:
    assert len(await controller.fetch_new_tasks()) == 0
    first = await controller.push_finished_tasks([{"x": 1}, {"x": 2}], [{"y": 1}, {"y": 2}])
    new = await controller.fetch_new_tasks()
    assert new.keys == first
    assert new["y"] == [1, 2]
    assert len(await controller.fetch_new_tasks()) == 0

    [key] = await controller.push_tasks([{"x": 3}])
    async with Worker(controller.network_id, config=config) as worker:
        task = await worker.pop_task()
        assert task is not None
        assert await worker.finish_tasks([task.key], [{"y": 9}]) == [True]
    new = await controller.fetch_new_tasks()
    assert new.keys == [key]
    assert new["y"] == [9]
    assert new["worker_id"] == [worker.worker_id]
    assert len(await controller.fetch_new_tasks()) == 0
    # Failed tasks are not results.
    await controller.push_failed_tasks([{"x": 4}], ["broken"])
    assert len(await controller.fetch_new_tasks()) == 0
    assert (await controller.fetch_finished_tasks()).keys == [*first, key]


async def test_fetch_new_tasks_waits_for_a_later_result(controller: Controller, config: RedisConfig) -> None:
    [key] = await controller.push_tasks([{"x": 5}])
    async with Worker(controller.network_id, config=config) as worker:
        task = await worker.pop_task()
        assert task is not None
        assert len(await controller.fetch_new_tasks()) == 0

        async def finish_later() -> None:
            await anyio.sleep(0.2)
            await worker.finish_tasks([key], [{"y": 25}])

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_later)
            with anyio.fail_after(15):
                new = await controller.fetch_new_tasks(timeout=10)
        assert new.keys == [key]
        assert new["y"] == [25]


async def test_fetch_new_tasks_timeout_returns_empty_table(controller: Controller) -> None:
    await controller.push_tasks([{"x": 1}])
    with anyio.fail_after(10):
        new = await controller.fetch_new_tasks(timeout=0.2)
    assert isinstance(new, rushpy.Table)
    assert len(new) == 0
    with pytest.raises(rushpy.ConfigError, match="invalid timeout"):
        await controller.fetch_new_tasks(timeout=-1)


async def test_wait_for_new_tasks(controller: Controller, config: RedisConfig) -> None:
    with anyio.fail_after(10):
        assert await controller.wait_for_new_tasks(0.1) is False
    await controller.push_finished_tasks([{"x": 1}], [{"y": 1}])
    assert await controller.wait_for_new_tasks(0) is True
    # Waiting does not consume: fetch_new_tasks still returns the result.
    assert await controller.wait_for_new_tasks(1) is True
    assert len(await controller.fetch_new_tasks()) == 1
    assert await controller.wait_for_new_tasks(0) is False

    [key] = await controller.push_tasks([{"x": 2}])
    async with Worker(controller.network_id, config=config) as worker:
        assert await worker.pop_task() is not None

        async def finish_later() -> None:
            await anyio.sleep(0.2)
            await worker.finish_tasks([key], [{"y": 2}])

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_later)
            with anyio.fail_after(15):
                assert await controller.wait_for_new_tasks(10) is True
    assert (await controller.fetch_new_tasks()).keys == [key]


async def test_reset_cache_rereads_finished_tasks(controller: Controller) -> None:
    keys = await controller.push_finished_tasks([{"x": i} for i in range(3)], [{"y": i} for i in range(3)])
    assert (await controller.fetch_finished_tasks()).keys == keys
    assert (await controller.fetch_new_tasks()).keys == keys

    # Change a stored result behind the controller's back; only a re-read sees it.
    client, k = controller._store.client, controller._keys
    fields = await stored_fields(client, k, keys[0])
    await client.hset(k.rows, keys[0], pack_row({**fields, "ys": encode({"y": 100})}))
    controller.reset_cache()

    table = await controller.fetch_finished_tasks()
    assert table.keys == keys
    assert table["y"] == [100, 1, 2]
    # After a reset every finished task counts as new again.
    assert (await controller.fetch_new_tasks()).keys == keys
    assert len(await controller.fetch_new_tasks()) == 0


async def test_cache_serves_only_the_new_result_after_a_thousand(
    controller: Controller, config: RedisConfig
) -> None:
    old = await controller.push_finished_tasks(
        [{"x": i} for i in range(1000)], [{"y": i} for i in range(1000)]
    )
    assert (await controller.fetch_new_tasks()).keys == old
    assert len(await controller.fetch_finished_tasks()) == 1000

    [key] = await controller.push_tasks([{"x": 1000}])
    async with Worker(controller.network_id, config=config) as worker:
        task = await worker.pop_task()
        assert task is not None and task.key == key
        assert await worker.finish_tasks([key], [{"y": -1}]) == [True]

    new = await controller.fetch_new_tasks()
    assert new.keys == [key]
    assert new["y"] == [-1]
    finished = await controller.fetch_finished_tasks()
    assert len(finished) == 1001
    assert finished.keys == [*old, key]


# -- wait_for_tasks ---------------------------------------------------------------------------


async def test_wait_for_tasks_returns_finished_and_failed_rows(
    controller: Controller, config: RedisConfig
) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}, {"x": 3}])
    async with Worker(controller.network_id, config=config) as worker:
        assert len(await worker.pop_tasks(3)) == 3
        assert await worker.finish_tasks([keys[0]], [{"y": 1}]) == [True]
        assert await worker.fail_tasks([keys[1]], [ValueError("two")]) == [True]

        async def finish_later() -> None:
            await anyio.sleep(0.2)
            await worker.finish_tasks([keys[2]], [{"y": 3}])

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_later)
            table = await controller.wait_for_tasks(keys, timeout=10)

    assert table.keys == keys
    assert table["state"] == ["finished", "failed", "finished"]
    assert table["y"] == [1, None, 3]
    assert table[1]["condition"]["type"] == "ValueError"
    assert table[1]["condition"]["message"] == "two"


async def test_wait_for_tasks_timeout(controller: Controller) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}])
    with anyio.fail_after(10), pytest.raises(rushpy.TaskTimeoutError, match="2 of 2 tasks still open"):
        await controller.wait_for_tasks(keys, timeout=0.2)
    with pytest.raises(rushpy.TaskTimeoutError):
        await controller.wait_for_tasks(keys, timeout=0)
    # The error is also a TimeoutError.
    with pytest.raises(TimeoutError):
        await controller.wait_for_tasks(keys[:1], timeout=0)


async def test_wait_for_tasks_unknown_key(controller: Controller) -> None:
    keys = await controller.push_finished_tasks([{"x": 1}], [{"y": 1}])
    with pytest.raises(rushpy.UnknownTaskError, match="not-a-task"):
        await controller.wait_for_tasks([*keys, "not-a-task"], timeout=5)
    with pytest.raises(rushpy.UnknownTaskError):
        await controller.wait_for_tasks(["not-a-task"], timeout=None)
    with pytest.raises(rushpy.TaskError, match="task keys are strings"):
        await controller.wait_for_tasks([1], timeout=0)  # type: ignore[list-item]


# -- counts -----------------------------------------------------------------------------------


async def test_status_and_counts_agree_with_reality(controller: Controller, config: RedisConfig) -> None:
    empty = await controller.status()
    assert empty == rushpy.NetworkStatus(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    await controller.push_tasks([{"x": i} for i in range(4)])
    await controller.push_finished_tasks([{"x": 10}, {"x": 11}], [{"y": 0}, {"y": 1}])
    await controller.push_failed_tasks([{"x": 20}], ["bad"])
    async with Worker(controller.network_id, config=config) as worker:
        await controller.push_priority_tasks([{"x": "p"}], priority=[worker.worker_id])
        popped = await worker.pop_tasks(2)  # the priority task and the first shared one
        assert len(popped) == 2

        status = await controller.status()
        assert status.n_queued_tasks == 3
        assert status.n_queued_priority_tasks == 0
        assert status.n_running_tasks == 2
        assert status.n_finished_tasks == 2
        assert status.n_failed_tasks == 1
        assert status.n_tasks == 8
        assert status.n_workers == 1
        assert status.n_running_workers == 1
        assert status.n_terminated_workers == 0

        assert await controller.n_queued_tasks() == 3
        assert await controller.n_queued_priority_tasks() == 0
        assert await controller.n_running_tasks() == 2
        assert await controller.n_finished_tasks() == 2
        assert await controller.n_failed_tasks() == 1
        assert await controller.n_tasks() == 8
        assert await controller.n_workers() == 1
        assert await controller.n_running_workers() == 1

        snap = await controller.tasks_with_state()
        assert len(snap["queued"]) == status.n_queued_tasks
        assert len(snap["running"]) == status.n_running_tasks
        assert len(snap["finished"]) == status.n_finished_tasks
        assert len(snap["failed"]) == status.n_failed_tasks
        assert sum(len(v) for v in snap.values()) == status.n_tasks

        await controller.push_priority_tasks([{"x": "q"}], priority=[worker.worker_id])
        assert await controller.n_queued_priority_tasks() == 1
        assert await controller.n_queued_tasks() == 4

    # The worker left: its running tasks are settled, it counts as terminated.
    status = await controller.status()
    assert status.n_running_workers == 0
    assert status.n_terminated_workers == 1
    assert status.n_workers == 1
    assert status.n_running_tasks == 0
    assert status.n_failed_tasks == 3
    assert status.n_tasks == 9
    assert status.n_queued_tasks + status.n_finished_tasks + status.n_failed_tasks == 9


# -- reset ------------------------------------------------------------------------------------


async def test_reset_without_workers_keeps_registrations(controller: Controller, config: RedisConfig) -> None:
    await controller.push_tasks([{"x": 1}, {"x": 2}])
    await controller.push_finished_tasks([{"x": 3}], [{"y": 3}])
    assert len(await controller.fetch_finished_tasks()) == 1  # fills the cache
    async with Worker(controller.network_id, config=config) as worker:
        await controller.push_priority_tasks([{"x": "p"}], priority=[worker.worker_id])
        assert await worker.pop_task() is not None

        await controller.reset(workers=False)

        status = await controller.status()
        assert status.n_tasks == 0
        assert status.n_queued_tasks == 0
        assert status.n_running_tasks == 0
        assert status.n_finished_tasks == 0
        assert status.n_failed_tasks == 0
        assert status.n_workers == 1
        assert status.n_running_workers == 1
        assert len(await controller.fetch_tasks()) == 0
        assert len(await controller.fetch_finished_tasks()) == 0
        assert len(await controller.fetch_new_tasks()) == 0
        info = await controller.worker_info()
        assert info["worker_id"] == [worker.worker_id]
        assert info["state"] == ["running"]
        # No task key survives.
        assert not any(":task:" in k for k in await network_keys(controller))
        assert controller._keys.all_tasks not in await network_keys(controller)

        # The network is usable again.
        [key] = await controller.push_tasks([{"x": 9}])
        task = await worker.pop_task()
        assert task is not None and task.key == key


async def test_reset_with_workers_deletes_everything(controller: Controller, config: RedisConfig) -> None:
    await controller.push_tasks([{"x": 1}])
    await controller.push_finished_tasks([{"x": 2}], [{"y": 2}])
    await controller.push_failed_tasks([{"x": 3}], ["bad"])
    async with Worker(controller.network_id, config=config):
        pass
    assert await network_keys(controller)

    await controller.reset(workers=True)

    assert await network_keys(controller) == set()
    assert await controller.status() == rushpy.NetworkStatus(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert len(await controller.worker_info()) == 0
    assert len(await controller.fetch_finished_tasks()) == 0


async def test_reset_with_workers_stops_a_running_worker_and_leaves_no_key(
    controller: Controller, config: RedisConfig
) -> None:
    await controller.push_tasks([{"x": 1}])
    async with Worker(controller.network_id, config=config) as worker:
        assert await worker.pop_task() is not None
        await controller.reset(workers=True)
        assert await network_keys(controller) == set()
        await eventually(lambda: worker.terminated, "the worker is asked to terminate by reset()")
    # The worker's exit after the reset must not bring keys of the network back.
    assert await network_keys(controller) == set()


# -- workers ----------------------------------------------------------------------------------


async def test_worker_info(controller: Controller, config: RedisConfig) -> None:
    assert len(await controller.worker_info()) == 0
    async with Worker(controller.network_id, config=config, worker_id="info-worker-1") as worker:
        info = await controller.worker_info()
        assert len(info) == 1
        row = info[0]
        assert row["worker_id"] == worker.worker_id == "info-worker-1"
        assert row["state"] == "running"
        assert row["pid"] == os.getpid()
        assert row["hostname"] == socket.gethostname()
        assert row["started_at"] is not None
        for column in ("worker_id", "state", "pid", "hostname", "started_at"):
            assert column in info.columns
    info = await controller.worker_info()
    assert info["worker_id"] == ["info-worker-1"]
    assert info["state"] == ["terminated"]


async def test_wait_for_workers_times_out_at_once_without_workers(controller: Controller) -> None:
    with anyio.fail_after(5), pytest.raises(rushpy.WorkerTimeoutError, match="0 worker"):
        await controller.wait_for_workers(n=1, timeout=0)
    with anyio.fail_after(5), pytest.raises(rushpy.WorkerTimeoutError, match="missing ids"):
        await controller.wait_for_workers(worker_ids=["absent-worker"], timeout=0.1)


async def test_wait_for_workers_without_n_and_local_workers_is_a_config_error(
    controller: Controller,
) -> None:
    with pytest.raises(rushpy.ConfigError, match="needs n= or worker_ids="):
        await controller.wait_for_workers()
    with pytest.raises(rushpy.ConfigError, match="invalid n="):
        await controller.wait_for_workers(n=-1, timeout=0)
    with pytest.raises(rushpy.ConfigError, match="invalid worker id"):
        await controller.wait_for_workers(worker_ids=["bad id"], timeout=0)


async def test_wait_for_workers_returns_when_the_worker_registers(
    controller: Controller, config: RedisConfig
) -> None:
    wid = "awaited-worker-1"
    result: list[str] = []

    async def waiter() -> None:
        result.extend(await controller.wait_for_workers(worker_ids=[wid], timeout=10))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.1)
        assert result == []
        async with Worker(controller.network_id, config=config, worker_id=wid):
            await eventually(lambda: bool(result), "wait_for_workers to return", timeout=12)
    assert wid in result

    # Once registered (and running) a zero timeout answers at once.
    async with Worker(controller.network_id, config=config, worker_id="w-2"):
        assert await controller.wait_for_workers(n=1, timeout=0) == ["w-2"]
        assert await controller.wait_for_workers(worker_ids=["w-2"], timeout=0) == ["w-2"]


async def test_stop_workers_reports_unknown_ids(controller: Controller, config: RedisConfig) -> None:
    result = await controller.stop_workers(worker_ids=["nope"])
    assert result.unknown == ["nope"]
    assert result.stopped == []
    assert result.not_running == []

    async with Worker(controller.network_id, config=config) as gone:
        pass
    result = await controller.stop_workers("kill", worker_ids=[gone.worker_id, "nope"])
    assert result.not_running == [gone.worker_id]
    assert result.unknown == ["nope"]
    assert result.stopped == []


async def test_stop_workers_terminate_reaches_an_in_process_worker(
    controller: Controller, config: RedisConfig
) -> None:
    async with (
        Worker(controller.network_id, config=config) as target,
        Worker(controller.network_id, config=config) as bystander,
    ):
        assert target.terminated is False
        result = await controller.stop_workers("terminate", worker_ids=[target.worker_id])
        assert result.stopped == [target.worker_id]
        assert result.unknown == []
        await eventually(lambda: target.terminated, "the worker sees the terminate request")
        assert bystander.terminated is False

        result = await controller.stop_workers()  # default: terminate every running worker
        assert sorted(result.stopped) == sorted([target.worker_id, bystander.worker_id])
        await eventually(lambda: bystander.terminated, "every worker sees the terminate request")
    info = await controller.worker_info()
    assert set(info["state"]) == {"terminated"}


async def test_stop_workers_invalid_type(controller: Controller) -> None:
    with pytest.raises(rushpy.ConfigError, match="invalid type='stop'"):
        await controller.stop_workers("stop")  # type: ignore[arg-type]


async def test_push_tasks_terminate_workers_drains_the_queue_first(
    controller: Controller, config: RedisConfig
) -> None:
    async with Worker(controller.network_id, config=config) as worker:
        keys = await controller.push_tasks([{"x": 1}, {"x": 2}], terminate_workers=True)
        await eventually(lambda: worker.drain_requested, "terminate_workers reaches the worker")
        assert not worker.terminated  # the queue is not empty yet
        popped = await worker.pop_tasks(5, timeout=1)
        assert sorted(t.key for t in popped) == sorted(keys)
        assert await worker.pop_task(timeout=1) is None
        assert worker.terminated  # the queue was empty: now it stops
    # A worker joining later drains too: nothing is queued, so its first pop ends it.
    async with Worker(controller.network_id, config=config) as late:
        assert late.drain_requested
        assert await late.pop_task(timeout=None) is None
        assert late.terminated is True


# -- worker_script and connection -------------------------------------------------------------


def test_worker_script_never_contains_the_password(network_id: str) -> None:
    config = RedisConfig(host="127.0.0.1", port=6390, password="s3cret")
    rush = Controller(network_id, config)  # not entered: worker_script needs no connection
    script = rush.worker_script()
    assert "s3cret" not in script
    assert "--network" in script
    assert network_id in script
    assert "--url redis://127.0.0.1:6390/0" in script
    assert "rushpy.worker" in script

    script = rush.worker_script(square, concurrency=3, python="/usr/bin/python3")
    assert script.startswith("/usr/bin/python3 -m rushpy.worker")
    assert "--fun tests.funcs:square" in script
    assert "--concurrency 3" in script
    assert "s3cret" not in script
    with pytest.raises(rushpy.ConfigError, match="concurrency"):
        rush.worker_script(concurrency=0)

    other = Controller(network_id, RedisConfig(port=6390), prefix="custom")
    assert "--prefix custom" in other.worker_script()
    assert "--prefix" not in rush.worker_script()


async def test_unreachable_server_raises_connection_failed(network_id: str) -> None:
    port = closed_port()
    config = RedisConfig(host="127.0.0.1", port=port, connect_timeout=2)
    with anyio.fail_after(15), pytest.raises(rushpy.ConnectionFailedError) as info:
        async with Controller(network_id, config=config):
            pass
    assert f"redis://127.0.0.1:{port}/0" in str(info.value)
    assert isinstance(info.value, ConnectionError)


async def test_closing_controller_and_worker_releases_connections(
    config: RedisConfig, network_id: str
) -> None:
    probe = redis.asyncio.Redis(host=config.host, port=config.port)
    try:

        async def client_ids() -> set[int]:
            return {int(c["id"]) for c in await probe.client_list()}

        before = await client_ids()
        async with Controller(network_id, config=config) as rush:
            async with Worker(network_id, config=config) as worker:
                await rush.push_tasks([{"x": 1}])
                assert await worker.pop_task() is not None
                assert await client_ids() - before  # both are connected now
            await rush.reset(workers=True)

        async def all_closed() -> bool:
            return not (await client_ids() - before)

        # The server sees a closed socket almost at once; allow it a moment.
        await eventually(all_closed, "the server sees every connection of the closed clients go")
    finally:
        await probe.aclose()


# -- first writer wins ------------------------------------------------------------------------


async def test_first_writer_wins(controller: Controller, config: RedisConfig) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}, {"x": 3}])
    async with Worker(controller.network_id, config=config) as worker:
        assert len(await worker.pop_tasks(2)) == 2
        assert await worker.finish_tasks([keys[0]], [{"y": 1}]) == [True]
        assert await worker.finish_tasks([keys[0]], [{"y": 999}]) == [False]
        assert await worker.fail_tasks([keys[0]], ["too late"]) == [False]

        assert await worker.fail_tasks([keys[1]], ["failed first"]) == [True]
        assert await worker.finish_tasks([keys[1]], [{"y": 2}]) == [False]

        # A queued task was never popped: it cannot be finished.
        assert await worker.finish_tasks([keys[2]], [{"y": 3}]) == [False]
        # None of these is running any more: every one is rejected.
        assert await worker.finish_tasks(keys, [{"y": 0}] * 3) == [False, False, False]

    rows = by_key(await controller.fetch_tasks())
    assert rows[keys[0]]["state"] == "finished"
    assert rows[keys[0]]["y"] == 1
    assert rows[keys[0]].get("condition") is None
    assert rows[keys[1]]["state"] == "failed"
    assert rows[keys[1]].get("y") is None
    assert rows[keys[1]]["condition"]["message"] == "failed first"
    assert rows[keys[2]]["state"] == "queued"
    assert (await controller.fetch_finished_tasks()).keys == [keys[0]]
    assert await controller.n_finished_tasks() == 1
    assert await controller.n_failed_tasks() == 1


# -- real local worker processes --------------------------------------------------------------


async def test_local_workers_async_function_more_workers_kill_and_terminate(
    controller: Controller,
) -> None:
    first = await controller.start_local_workers(2, fun=async_square, concurrency=4)
    assert len(first) == 2
    assert sorted(await controller.wait_for_workers(timeout=30)) == sorted(first)
    keys = await controller.push_tasks([{"x": i} for i in range(40)])
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert table.keys == keys
    assert table["y"] == [i * i for i in range(40)]
    assert set(table["state"]) == {"finished"}
    assert set(table["worker_id"]) <= set(first)

    # Calling it again adds workers (with the stored function).
    more = await controller.start_local_workers(1)
    assert set(more).isdisjoint(first)
    assert set(controller.local_workers) == {*first, *more}
    running = await controller.wait_for_workers(timeout=30)
    assert set(running) == {*first, *more}
    assert await controller.n_running_workers() == 3

    victim = more[0]
    result = await controller.stop_workers("kill", worker_ids=[victim])
    assert result.stopped == [victim]
    assert controller.local_workers[victim].process.poll() is not None
    info = await controller.worker_info()
    assert dict(zip(info["worker_id"], info["state"], strict=True))[victim] == "killed"
    assert await controller.n_running_workers() == 2
    assert (await controller.status()).n_killed_workers == 1

    result = await controller.stop_workers("terminate")
    assert sorted(result.stopped) == sorted(first)
    for wid in first:
        process = controller.local_workers[wid].process
        await eventually(lambda p=process: p.poll() is not None, f"local worker {wid} exits", timeout=15)
        assert process.returncode == 0, controller.local_workers[wid].log_tail()
    await eventually(lambda: _no_running(controller), "terminated workers deregister", timeout=10)
    info = await controller.worker_info()
    states = dict(zip(info["worker_id"], info["state"], strict=True))
    assert states == {first[0]: "terminated", first[1]: "terminated", victim: "killed"}


async def _no_running(controller: Controller) -> bool:
    return await controller.n_running_workers() == 0


async def test_local_worker_failures_become_conditions(controller: Controller) -> None:
    await controller.start_local_workers(1, fun=fail_on_odd)
    await controller.wait_for_workers(n=1, timeout=30)
    keys = await controller.push_tasks([{"x": i} for i in range(6)])
    table = await controller.wait_for_tasks(keys, timeout=30)
    rows = by_key(table)
    for i, key in enumerate(keys):
        row = rows[key]
        if i % 2:
            assert row["state"] == "failed"
            assert row["condition"]["type"] == "ValueError"
            assert row["condition"]["message"] == f"odd input {i}"
            assert "ValueError" in row["condition"]["traceback"]
        else:
            assert row["state"] == "finished"
            assert row["y"] == i
    assert await controller.n_failed_tasks() == 3
    assert await controller.n_finished_tasks() == 3


async def test_local_worker_non_mapping_result_fails_with_type_error(controller: Controller) -> None:
    await controller.start_local_workers(1, fun=bad_return)
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}])
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert table["state"] == ["failed", "failed"]
    for row in table:
        assert row["condition"]["type"] == "TypeError"
        assert "mapping" in row["condition"]["message"]
    assert await controller.n_finished_tasks() == 0
