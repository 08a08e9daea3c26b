"""The in-process Worker against a real server: registration, popping, results, the run loop."""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis.asyncio

import rushpy
from rushpy import ConfigError, Controller, RedisConfig, TaskError, Worker, run_function
from rushpy.keys import Keys
from tests import funcs

# Request the backend fixture explicitly: the anyio plugin otherwise re-creates the call spec of
# async tests that lack it and drops their own parametrization.
pytestmark = pytest.mark.usefixtures("anyio_backend")


# -- helpers -------------------------------------------------------------------------------
async def worker_row(controller: Controller, worker_id: str) -> dict[str, Any]:
    rows = [r for r in await controller.worker_info() if r["worker_id"] == worker_id]
    assert len(rows) == 1, f"expected one worker_info row for {worker_id}, got {rows}"
    return rows[0]


def assert_each_key_in_one_state(snapshot: dict[str, list[str]], keys: list[str]) -> None:
    flat = [k for state_keys in snapshot.values() for k in state_keys]
    assert len(flat) == len(set(flat)), f"a key is in two states at once: {snapshot}"
    missing = set(keys) - set(flat)
    assert not missing, f"keys in no state: {sorted(missing)}"


async def stop_and_join(
    controller: Controller, worker: Worker, fun: Callable[..., Any], concurrency: int, body: Any
) -> Any:
    """Run ``body()`` while run_function runs; then stop the loop (bounded) and return the result."""
    out: dict[str, Any] = {}
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_function(worker, fun, concurrency=concurrency))
            out["value"] = await body()
            await controller.stop_workers("terminate", [worker.worker_id])
    return out["value"]


# -- registration --------------------------------------------------------------------------
async def test_worker_registers_and_is_terminated_on_exit(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        row = await worker_row(controller, w.worker_id)
        assert row["pid"] == os.getpid()
        assert row["hostname"] == socket.gethostname()
        assert row["state"] == "running"
        status = await controller.status()
        assert status.n_workers == 1
        assert status.n_running_workers == 1
        assert await controller.wait_for_workers(worker_ids=[w.worker_id], timeout=0) == [w.worker_id]
        assert not w.terminated
    row = await worker_row(controller, w.worker_id)
    assert row["state"] == "terminated"
    status = await controller.status()
    assert status.n_running_workers == 0
    assert status.n_terminated_workers == 1


async def test_worker_id_is_used_as_given(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config, worker_id="my-worker.1") as w:
        assert w.worker_id == "my-worker.1"
        assert (await worker_row(controller, "my-worker.1"))["state"] == "running"


# -- popping -------------------------------------------------------------------------------
async def test_pop_on_empty_queue_returns_none(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        assert await w.pop_task(timeout=0) is None
        assert await w.pop_tasks(5, timeout=0) == []
        assert await w.pop_task() is None  # default timeout is 0: no wait


async def test_pop_order_is_priority_queue_then_shared_fifo(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        shared = await controller.push_tasks(
            [{"x": i} for i in range(3)], xss_extra=[{"tag": f"s{i}"} for i in range(3)]
        )
        prio = await controller.push_priority_tasks([{"x": 10}, {"x": 11}], priority=[w.worker_id] * 2)
        popped = []
        for _ in range(5):
            task = await w.pop_task(timeout=0)
            assert task is not None
            popped.append(task)
        assert [t.key for t in popped] == prio + shared
        assert [t.xs for t in popped] == [{"x": 10}, {"x": 11}, {"x": 0}, {"x": 1}, {"x": 2}]
        assert [t.xs_extra for t in popped[2:]] == [{"tag": "s0"}, {"tag": "s1"}, {"tag": "s2"}]
        assert await w.pop_task(timeout=0) is None

        keys = [t.key for t in popped]
        assert await controller.is_running_task(keys) == [True] * 5
        assert await controller.is_running_task(keys[0]) is True
        running = await controller.fetch_running_tasks()
        assert sorted(running["key"]) == sorted(keys)
        assert set(running["worker_id"]) == {w.worker_id}
        assert (await controller.status()).n_queued_tasks == 0


async def test_pop_tasks_pops_up_to_n_in_order(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await controller.push_tasks([{"x": i} for i in range(5)])
        first = await w.pop_tasks(3, timeout=0)
        assert [t.key for t in first] == keys[:3]
        rest = await w.pop_tasks(10, timeout=0)
        assert [t.key for t in rest] == keys[3:]
        assert await w.pop_tasks(10, timeout=0) == []
        assert await controller.is_running_task(keys) == [True] * 5


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2", None])
async def test_pop_tasks_rejects_invalid_n(
    controller: Controller, config: RedisConfig, network_id: str, n: Any
) -> None:
    async with Worker(network_id, config=config) as w:
        await controller.push_tasks([{"x": 1}])
        with pytest.raises(ConfigError, match="invalid n"):
            await w.pop_tasks(n, timeout=0)
        # Nothing was popped by the rejected call.
        assert (await controller.status()).n_queued_tasks == 1


@pytest.mark.parametrize("timeout", [-1, -0.5, "1", math.nan, True, [1]])
async def test_pop_rejects_invalid_timeout(
    controller: Controller, config: RedisConfig, network_id: str, timeout: Any
) -> None:
    async with Worker(network_id, config=config) as w:
        with anyio.fail_after(2), pytest.raises(ConfigError, match="timeout"):
            await w.pop_task(timeout=timeout)
        with anyio.fail_after(2), pytest.raises(ConfigError, match="timeout"):
            await w.pop_tasks(2, timeout=timeout)


async def test_blocking_pop_returns_task_pushed_later(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        got: list[rushpy.PoppedTask | None] = []

        async def pop() -> None:
            got.append(await w.pop_task(timeout=5))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pop)
                await anyio.sleep(0.2)  # let the pop start waiting
                assert got == []
                keys = await controller.push_tasks([{"x": 42}])
        assert len(got) == 1 and got[0] is not None
        assert got[0].key == keys[0]
        assert got[0].xs == {"x": 42}
        assert await controller.is_running_task(keys[0]) is True


async def test_blocking_pop_on_priority_queue(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        got: list[rushpy.PoppedTask | None] = []

        async def pop() -> None:
            got.append(await w.pop_task(timeout=5))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pop)
                await anyio.sleep(0.2)
                keys = await controller.push_priority_tasks([{"x": 7}], priority=[w.worker_id])
        assert got[0] is not None and got[0].key == keys[0]


async def test_pop_with_timeout_on_empty_queue_returns_none(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        with anyio.fail_after(5):
            assert await w.pop_task(timeout=0.2) is None
            assert await w.pop_tasks(3, timeout=0.2) == []


async def test_timed_out_pop_does_not_keep_later_tasks_from_other_workers(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    # Worker a waited for work and gave up; a task pushed afterwards must stay available
    # to any worker that asks for it, not be reserved for a that is no longer popping.
    async with Worker(network_id, config=config) as a, Worker(network_id, config=config) as b:
        assert await a.pop_task(timeout=0.2) is None
        keys = await controller.push_tasks([{"x": 1}])
        with anyio.fail_after(5):
            task = await b.pop_task(timeout=1)
        assert task is not None, (
            "a task pushed after worker a's pop timed out went to a's pending list: "
            f"{await controller.tasks_with_state()}"
        )
        assert task.key == keys[0]


# -- concurrency and state invariants ------------------------------------------------------
async def test_two_workers_popping_concurrently_get_each_task_once(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(500)])
    got: dict[str, list[str]] = {}

    async def drain(w: Worker, batch: int) -> None:
        while True:
            tasks = await w.pop_tasks(batch, timeout=0) if batch > 1 else [await w.pop_task(timeout=0)]
            real = [t for t in tasks if t is not None]
            if not real:
                return
            got.setdefault(w.worker_id, []).extend(t.key for t in real)
            await anyio.sleep(0)

    async with Worker(network_id, config=config) as a, Worker(network_id, config=config) as b:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                # Two loops per worker, as run_function with concurrency=2 does.
                tg.start_soon(drain, a, 1)
                tg.start_soon(drain, a, 7)
                tg.start_soon(drain, b, 1)
                tg.start_soon(drain, b, 3)
        all_popped = [k for ks in got.values() for k in ks]
        assert len(all_popped) == len(set(all_popped)), "a task was popped twice"
        assert sorted(all_popped) == sorted(keys)
        assert set(got) == {a.worker_id, b.worker_id}, "both workers should have popped tasks"
        running = await controller.fetch_running_tasks()
        owner = dict(zip(running["key"], running["worker_id"], strict=True))
        assert len(owner) == 500
        for wid, ks in got.items():
            assert all(owner[k] == wid for k in ks)
        snap = await controller.tasks_with_state()
        assert sorted(snap["running"]) == sorted(keys)
        assert snap["queued"] == []


async def test_popped_task_is_running_at_once(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await controller.push_tasks([{"x": 1}, {"x": 2}])
        task = await w.pop_task(timeout=0)
        assert task is not None
        snap = await controller.tasks_with_state()
        assert task.key in snap["running"]
        assert task.key not in snap["queued"]
        assert snap["queued"] == [keys[1]]
        assert_each_key_in_one_state(snap, keys)


async def test_every_task_is_in_exactly_one_state_throughout(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(120)])
    snapshots: list[dict[str, list[str]]] = []
    done = anyio.Event()

    async def work(w: Worker) -> None:
        while True:
            tasks = await w.pop_tasks(3, timeout=0)
            if not tasks:
                return
            even = [t for t in tasks if t.xs["x"] % 2 == 0]
            odd = [t for t in tasks if t.xs["x"] % 2]
            if even:
                assert await w.finish_tasks([t.key for t in even], [{"y": t.xs["x"]} for t in even]) == [
                    True
                ] * len(even)
            if odd:
                assert await w.fail_tasks([t.key for t in odd], ["odd"] * len(odd)) == [True] * len(odd)

    async def watch() -> None:
        while not done.is_set():
            snapshots.append(await controller.tasks_with_state())
            await anyio.sleep(0)

    async with Worker(network_id, config=config) as a, Worker(network_id, config=config) as b:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                async with anyio.create_task_group() as workers:
                    workers.start_soon(work, a)
                    workers.start_soon(work, b)
                done.set()
    final = await controller.tasks_with_state()
    snapshots.append(final)
    assert len(snapshots) >= 2
    for snap in snapshots:
        assert_each_key_in_one_state(snap, keys)
    assert final["queued"] == [] and final["running"] == []
    assert len(final["finished"]) == 60 and len(final["failed"]) == 60
    states = await controller.tasks_with_state(["finished", "failed"])
    assert set(states) == {"finished", "failed"}


# -- writing results -----------------------------------------------------------------------
async def test_push_running_tasks_are_owned_by_the_worker(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await w.push_running_tasks([{"x": 1}, {"x": 2}], xss_extra=[{"origin": "local"}, None])
        assert len(keys) == 2 and len(set(keys)) == 2
        assert await controller.is_running_task(keys) == [True, True]
        running = await controller.fetch_running_tasks()
        rows = {r["key"]: r for r in running}
        assert set(rows) == set(keys)
        assert rows[keys[0]]["worker_id"] == w.worker_id
        assert rows[keys[1]]["worker_id"] == w.worker_id
        assert rows[keys[0]]["x"] == 1 and rows[keys[0]]["origin"] == "local"
        assert rows[keys[1]]["x"] == 2
        assert (await controller.status()).n_tasks == 2
        assert await w.push_running_tasks([]) == []
        with pytest.raises(TaskError):
            await w.push_running_tasks({"x": 1})  # type: ignore[arg-type]


async def test_finish_tasks_records_results_and_first_writer_wins(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await controller.push_tasks([{"x": 3}])
        task = await w.pop_task(timeout=0)
        assert task is not None and task.key == keys[0]
        assert await w.finish_tasks([task.key], [{"y": 9}], yss_extra=[{"note": "ok"}]) == [True]
        assert await w.finish_tasks([task.key], [{"y": -1}]) == [False]
        assert await w.fail_tasks([task.key], ["too late"]) == [False]
        finished = await controller.fetch_finished_tasks()
        assert len(finished) == 1
        row = finished[0]
        assert row["key"] == task.key
        assert row["state"] == "finished"
        assert row["y"] == 9
        assert row["note"] == "ok"
        assert row["x"] == 3
        assert row["worker_id"] == w.worker_id
        assert "condition" not in row
        snap = await controller.tasks_with_state()
        assert snap["finished"] == [task.key]
        assert snap["failed"] == [] and snap["running"] == []
        assert await controller.is_failed_task(task.key) is False


async def test_finish_of_a_task_that_is_not_running_is_discarded(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        queued = await controller.push_tasks([{"x": 1}])
        assert await w.finish_tasks(queued, [{"y": 1}]) == [False]
        assert await w.finish_tasks(["0" * 32], [{"y": 1}]) == [False]
        snap = await controller.tasks_with_state()
        assert snap["queued"] == queued and snap["finished"] == []


async def test_fail_tasks_records_condition_from_exception(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        await controller.push_tasks([{"x": 1}, {"x": 2}])
        first, second = await w.pop_tasks(2, timeout=0)
        try:
            raise ValueError("bad input 1")
        except ValueError as exc:
            error = exc
        assert await w.fail_tasks([first.key, second.key], [error, "plain message"]) == [True, True]
        assert await w.fail_tasks([first.key], ["again"]) == [False]
        assert await w.finish_tasks([first.key], [{"y": 1}]) == [False]
        failed = {r["key"]: r for r in await controller.fetch_failed_tasks()}
        cond = failed[first.key]["condition"]
        assert cond["type"] == "ValueError"
        assert cond["message"] == "bad input 1"
        assert "Traceback" in cond["traceback"] and "ValueError: bad input 1" in cond["traceback"]
        assert failed[second.key]["condition"]["message"] == "plain message"
        assert failed[first.key]["worker_id"] == w.worker_id
        assert await controller.is_failed_task([first.key, second.key]) == [True, True]
        assert (await controller.status()).n_running_tasks == 0


async def test_mismatched_lengths_raise_task_error_and_change_nothing(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        await controller.push_tasks([{"x": 1}, {"x": 2}])
        tasks = await w.pop_tasks(2, timeout=0)
        keys = [t.key for t in tasks]
        with pytest.raises(TaskError, match="yss has 3 entries"):
            await w.finish_tasks(keys, [{"y": 1}] * 3)
        with pytest.raises(TaskError, match="yss_extra has 3 entries"):
            await w.finish_tasks(keys, [{"y": 1}, {"y": 2}], yss_extra=[{"a": 1}] * 3)
        with pytest.raises(TaskError, match="conditions has 3 entries"):
            await w.fail_tasks(keys, ["one", "two", "three"])
        with pytest.raises(TaskError, match=r"conditions\[0\] is None"):
            await w.fail_tasks(keys, [None])  # type: ignore[list-item]
        with pytest.raises(TaskError, match="xss_extra"):
            await w.push_running_tasks([{"x": 1}], xss_extra=[{}, {}])
        with pytest.raises(TaskError):
            await w.finish_tasks(keys[0], [{"y": 1}])  # a bare string is not a list of keys
        assert await controller.is_running_task(keys) == [True, True]
        assert (await controller.status()).n_tasks == 2


async def test_a_list_of_one_applies_to_every_key(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        own = await w.push_running_tasks([{"x": 1}, {"x": 2}], xss_extra=[{"origin": "loop"}])
        await controller.push_tasks([{"x": 3}, {"x": 4}])
        popped = [t.key for t in await w.pop_tasks(2, timeout=0)]
        assert await w.finish_tasks(own, [{"y": 0}], yss_extra=[{"note": "same"}]) == [True, True]
        assert await w.fail_tasks(popped, ["one reason for both"]) == [True, True]
    finished = {r["key"]: r for r in await controller.fetch_finished_tasks()}
    assert {k: (r["origin"], r["y"], r["note"]) for k, r in finished.items()} == {
        k: ("loop", 0, "same") for k in own
    }
    failed = await controller.fetch_failed_tasks()
    assert sorted(failed["key"]) == sorted(popped)
    assert {r["condition"]["message"] for r in failed} == {"one reason for both"}


async def test_fail_tasks_with_invalid_condition_raises_task_error(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await w.push_running_tasks([{"x": 1}])
        with pytest.raises(TaskError, match="condition"):
            await w.fail_tasks(keys, [42])  # type: ignore[list-item]
        assert await controller.is_running_task(keys) == [True]


# -- termination ---------------------------------------------------------------------------
async def test_set_terminated_wakes_a_blocked_pop(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        got: list[Any] = []

        async def pop() -> None:
            got.append(await w.pop_task(timeout=None))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pop)
                await anyio.sleep(0.2)
                assert got == []
                w.set_terminated()
        assert got == [None]
        assert w.terminated
        # Once terminated, a pop on an empty queue does not wait any more.
        with anyio.fail_after(5):
            assert await w.pop_task(timeout=None) is None
            assert await w.pop_tasks(3, timeout=30) == []


async def test_stop_workers_terminate_wakes_a_blocked_pop(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        got: list[Any] = []

        async def pop() -> None:
            got.append(await w.pop_task(timeout=None))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pop)
                await anyio.sleep(0.2)
                assert not w.terminated
                result = await controller.stop_workers("terminate", [w.worker_id])
                assert result.stopped == [w.worker_id]
        assert got == [None]
        assert w.terminated


async def test_worker_started_after_terminate_all_is_terminated(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": 1}], terminate_workers=True)
    async with Worker(network_id, config=config) as w:
        assert not w.terminated
        task = await w.pop_task(timeout=None)
        assert task is not None and task.key == keys[0]
        assert await w.pop_task(timeout=None) is None  # drained: returns at once
        assert w.terminated


# -- exit ----------------------------------------------------------------------------------
async def test_exit_returns_popped_unclaimed_tasks_to_the_queue(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(3)])
    names = Keys(network_id)
    raw = redis.asyncio.Redis.from_url(config.to_url(include_password=True))
    async with Worker(network_id, config=config) as w:
        # Popped but not yet marked running (what a blocking move does): the keys
        # sit in the worker's pending list.
        for key in keys[:2]:
            moved = await raw.lmove(names.queued, names.pending(w.worker_id), "LEFT", "RIGHT")
            assert moved.decode() == key
        await raw.aclose()
        snap = await controller.tasks_with_state()
        assert sorted(snap["queued"]) == sorted(keys)
        assert_each_key_in_one_state(snap, keys)
    snap = await controller.tasks_with_state()
    assert snap["queued"] == keys  # back at the head of the shared queue, in order
    async with Worker(network_id, config=config) as other:
        popped = await other.pop_tasks(3, timeout=0)
        assert [t.key for t in popped] == keys


@pytest.mark.parametrize("raise_in_body", [False, True])
async def test_tasks_running_at_exit_are_not_left_running(
    controller: Controller, config: RedisConfig, network_id: str, raise_in_body: bool
) -> None:
    pushed = await controller.push_tasks([{"x": 1}])
    with pytest.raises(RuntimeError) if raise_in_body else contextlib.nullcontext():
        async with Worker(network_id, config=config) as w:
            task = await w.pop_task(timeout=0)
            assert task is not None
            own = await w.push_running_tasks([{"x": 2}])
            if raise_in_body:
                raise RuntimeError("loop crashed")
    keys = [*pushed, *own]
    snap = await controller.tasks_with_state()
    assert_each_key_in_one_state(snap, keys)
    assert snap["running"] == [], f"tasks left running by an exited worker: {snap}"
    failed = {r["key"]: r for r in await controller.fetch_failed_tasks()}
    for key in keys:
        if key in snap["queued"]:
            continue
        assert key in failed, f"task {key} is neither re-queued nor failed: {snap}"
        assert w.worker_id in failed[key]["condition"]["message"]


# -- run_function --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fun", "concurrency"),
    [(funcs.square, 1), (funcs.square, 3), (funcs.async_square, 1), (funcs.async_square, 4)],
)
async def test_run_function_finishes_all_tasks(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    fun: Callable[..., Any],
    concurrency: int,
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await controller.push_tasks([{"x": i} for i in range(40)])

        async def body() -> rushpy.Table:
            table = await controller.wait_for_tasks(keys, timeout=20)
            # Tasks pushed while the loop runs are picked up too.
            more = await controller.push_tasks([{"x": 100}])
            return rushpy.Table([*table, *await controller.wait_for_tasks(more, timeout=20)])

        table = await stop_and_join(controller, w, fun, concurrency, body)
    assert set(table["state"]) == {"finished"}
    assert {r["x"]: r["y"] for r in table} == {i: i * i for i in [*range(40), 100]}
    assert set(table["worker_id"]) == {w.worker_id}
    status = await controller.status()
    assert status.n_finished_tasks == 41 and status.n_running_tasks == 0


@pytest.mark.parametrize("fun", [funcs.fail_on_odd])
async def test_run_function_failure_fails_only_that_task(
    controller: Controller, config: RedisConfig, network_id: str, fun: Callable[..., Any]
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await controller.push_tasks([{"x": i} for i in range(10)])

        async def body() -> rushpy.Table:
            return await controller.wait_for_tasks(keys, timeout=20)

        table = await stop_and_join(controller, w, fun, 1, body)
    rows = {r["x"]: r for r in table}
    for x in range(10):
        if x % 2:
            assert rows[x]["state"] == "failed"
            assert rows[x]["condition"]["type"] == "ValueError"
            assert rows[x]["condition"]["message"] == f"odd input {x}"
            assert "Traceback" in rows[x]["condition"]["traceback"]
        else:
            assert rows[x]["state"] == "finished"
            assert rows[x]["y"] == x


async def _async_fail_on_odd(x: int) -> dict[str, int]:
    await anyio.sleep(0)
    if x % 2:
        raise KeyError(f"odd {x}")
    return {"y": x}


async def test_run_function_async_failure_fails_only_that_task(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await controller.push_tasks([{"x": i} for i in range(6)])

        async def body() -> rushpy.Table:
            return await controller.wait_for_tasks(keys, timeout=20)

        table = await stop_and_join(controller, w, _async_fail_on_odd, 2, body)
    states = {r["x"]: r["state"] for r in table}
    assert states == {i: "failed" if i % 2 else "finished" for i in range(6)}
    assert {r["condition"]["type"] for r in table if r["state"] == "failed"} == {"KeyError"}


async def test_run_function_non_mapping_result_fails_that_task_with_type_error(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await controller.push_tasks([{"x": i} for i in range(6)])

        async def body() -> rushpy.Table:
            return await controller.wait_for_tasks(keys, timeout=20)

        table = await stop_and_join(controller, w, funcs.bad_return_on_odd, 1, body)
    for row in table:
        if row["x"] % 2:
            assert row["state"] == "failed"
            assert row["condition"]["type"] == "TypeError"
            assert "list" in row["condition"]["message"]
        else:
            assert row["state"] == "finished" and row["y"] == row["x"]


async def test_run_function_ends_when_terminated_while_idle(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: run_function(w, funcs.square, concurrency=2))
                await anyio.sleep(0.3)  # the loop is waiting on an empty queue
                assert (await controller.stop_workers("terminate")).stopped == [w.worker_id]
        assert w.terminated
    assert (await worker_row(controller, w.worker_id))["state"] == "terminated"


async def test_run_function_ends_after_set_terminated(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: run_function(w, funcs.async_square, concurrency=3))
                await anyio.sleep(0.3)
                w.set_terminated()


async def test_run_function_rejects_invalid_concurrency(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        with pytest.raises(rushpy.RushError, match="concurrency"):
            await run_function(w, funcs.square, concurrency=0)


@pytest.mark.parametrize("fun", [funcs.async_interval, funcs.interval])
async def test_run_function_concurrency_overlaps_tasks(
    controller: Controller, config: RedisConfig, network_id: str, fun: Callable[..., Any]
) -> None:
    async with Worker(network_id, config=config) as w:
        keys = await controller.push_tasks([{"x": i, "duration": 0.3} for i in range(4)])

        async def body() -> rushpy.Table:
            return await controller.wait_for_tasks(keys, timeout=20)

        table = await stop_and_join(controller, w, fun, 4, body)
    assert set(table["state"]) == {"finished"}
    starts, ends = table["start"], table["end"]
    # Some instant lies inside all four runs: the four tasks were in flight together.
    assert max(starts) < min(ends), f"tasks did not overlap: starts={starts} ends={ends}"
