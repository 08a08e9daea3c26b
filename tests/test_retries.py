"""Retries, seeds, attempt fencing, cancellation and task timeouts against the suite's real server.

Most tests drive tasks by hand with an in-process :class:`rushpy.Worker` (fast and
deterministic) or run the real run loop in-process; the interruption tests start
real local worker processes.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from rushpy import Condition, Controller, PoppedTask, RedisConfig, TaskError, Worker, run_function
from rushpy.controller import next_seed
from rushpy.worker.child import ChildProcess
from tests import funcs
from tests.test_controller import by_key, eventually
from tests.test_worker import assert_each_key_in_one_state

pytestmark = pytest.mark.anyio

T = TypeVar("T")

UNKNOWN_KEY = "0" * 32


# -- helpers -----------------------------------------------------------------------------------
async def pop(worker: Worker) -> PoppedTask:
    """Pop one task that must be there."""
    task = await worker.pop_task(timeout=5)
    assert task is not None, "expected a queued task"
    return task


async def row_of(controller: Controller, key: str) -> dict[str, Any]:
    """The task's row, whatever its state."""
    rows = by_key(await controller.fetch_tasks())
    assert key in rows, f"task {key} not found"
    return rows[key]


async def run_until(
    controller: Controller,
    worker: Worker,
    fun: Callable[..., Any],
    body: Callable[[], Awaitable[T]],
    *,
    fun_path: str | None = None,
) -> T:
    """Run ``body()`` while the run loop runs ``fun`` on ``worker``; then stop the loop (bounded)."""
    out: dict[str, T] = {}
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(run_function, worker, fun, fun_path=fun_path))
            out["value"] = await body()
            await controller.stop_workers("terminate", [worker.worker_id])
    return out["value"]


def messages(row: dict[str, Any]) -> list[str]:
    return [c["message"] for c in row.get("conditions") or []]


# -- retries -----------------------------------------------------------------------------------
async def test_failure_with_retries_left_requeues_then_fails_with_the_last_condition(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}], max_retries=2)
    async with Worker(network_id, config=config) as w:
        for attempt in (1, 2, 3):
            task = await pop(w)
            assert (task.key, task.attempt) == (key, attempt)
            assert await w.fail_tasks([key], [ValueError(f"boom {attempt}")]) == [True]
            if attempt < 3:
                # Attempts left: back in the queue, history kept, no final condition yet.
                queued = by_key(await controller.fetch_queued_tasks())
                assert list(queued) == [key]
                assert queued[key]["attempts"] == attempt
                assert "condition" not in queued[key]
                assert messages(queued[key]) == [f"boom {i}" for i in range(1, attempt + 1)]
                assert await controller.n_failed_tasks() == 0
        assert await w.pop_task(timeout=0) is None

    row = (await controller.wait_for_tasks([key], timeout=30))[0]
    assert row["state"] == "failed"
    assert row["attempts"] == 3
    assert row["max_retries"] == 2
    assert row["condition"]["type"] == "ValueError"
    assert row["condition"]["message"] == "boom 3"
    assert messages(row) == ["boom 1", "boom 2", "boom 3"]
    assert {c["type"] for c in row["conditions"]} == {"ValueError"}
    failed = by_key(await controller.fetch_failed_tasks())
    assert failed[key]["conditions"] == row["conditions"]
    assert failed[key]["condition"] == row["conditions"][-1]
    status = await controller.status()
    assert (status.n_queued_tasks, status.n_running_tasks, status.n_failed_tasks) == (0, 0, 1)


async def test_max_retries_per_task(controller: Controller, config: RedisConfig, network_id: str) -> None:
    keys = await controller.push_tasks([{"x": 0}, {"x": 1}, {"x": 2}], max_retries=[0, 1, None])
    async with Worker(network_id, config=config) as w:
        tasks = await w.pop_tasks(3)
        assert [(t.key, t.attempt) for t in tasks] == [(k, 1) for k in keys]
        assert await w.fail_tasks(keys, ["e0", "e1", "e2"]) == [True, True, True]
        # Only the task with a retry left went back to the queue.
        assert await controller.is_failed_task(keys) == [True, False, True]
        assert (await controller.tasks_with_state("queued"))["queued"] == [keys[1]]
        task = await pop(w)
        assert (task.key, task.attempt) == (keys[1], 2)
        assert await w.fail_tasks([keys[1]], ["e1 again"]) == [True]
    rows = by_key(await controller.wait_for_tasks(keys, timeout=30))
    assert [rows[k]["state"] for k in keys] == ["failed"] * 3
    assert [rows[k]["attempts"] for k in keys] == [1, 2, 1]
    assert [messages(rows[k]) for k in keys] == [["e0"], ["e1", "e1 again"], ["e2"]]
    assert rows[keys[1]]["condition"]["message"] == "e1 again"
    assert "max_retries" not in rows[keys[2]]  # None: the default, no retry


async def test_finish_after_a_failed_attempt_keeps_the_failure_in_the_history(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 3}], max_retries=1)
    async with Worker(network_id, config=config) as w:
        await pop(w)
        assert await w.fail_tasks([key], [RuntimeError("flaky")]) == [True]
        task = await pop(w)
        assert task.attempt == 2
        assert await w.finish_tasks([key], [{"y": 9}]) == [True]
    row = (await controller.wait_for_tasks([key], timeout=30))[0]
    assert row["state"] == "finished"
    assert row["y"] == 9
    assert row["attempts"] == 2
    assert [(c["type"], c["message"]) for c in row["conditions"]] == [("RuntimeError", "flaky")]
    assert "condition" not in row
    assert (await controller.fetch_finished_tasks()).keys == [key]


@pytest.mark.parametrize("max_retries", [0, 1])
async def test_run_loop_retries_a_function_that_fails_once(
    controller: Controller, config: RedisConfig, network_id: str, tmp_path: Path, max_retries: int
) -> None:
    marker = str(tmp_path / "first-run")
    [key] = await controller.push_tasks([{"marker": marker, "x": 5}], max_retries=max_retries)
    async with Worker(network_id, config=config) as w:
        table = await run_until(
            controller, w, funcs.fail_first, lambda: controller.wait_for_tasks([key], timeout=30)
        )
    row = table[0]
    assert [c["type"] for c in row["conditions"]] == ["RuntimeError"]
    assert "first attempt fails" in row["conditions"][0]["message"]
    if max_retries:
        assert row["state"] == "finished"
        assert row["y"] == 5
        assert row["attempts"] == 2
        assert "condition" not in row
    else:
        assert row["state"] == "failed"
        assert row["attempts"] == 1
        assert row["condition"] == row["conditions"][0]


async def test_local_workers_retry_failing_tasks_until_max_retries(controller: Controller) -> None:
    await controller.start_local_workers(2, fun="tests.funcs:fail_on_odd")
    keys = await controller.push_tasks([{"x": i} for i in range(6)], max_retries=1)
    rows = by_key(await controller.wait_for_tasks(keys, timeout=30))
    for i, key in enumerate(keys):
        row = rows[key]
        if i % 2:
            assert row["state"] == "failed"
            assert row["attempts"] == 2
            assert messages(row) == [f"odd input {i}"] * 2
            assert row["condition"] == row["conditions"][-1]
            assert row["condition"]["type"] == "ValueError"
        else:
            assert row["state"] == "finished"
            assert row["y"] == i
            assert row["attempts"] == 1
            assert "conditions" not in row
    status = await controller.status()
    assert (status.n_finished_tasks, status.n_failed_tasks, status.n_queued_tasks) == (3, 3, 0)
    assert status.n_running_tasks == 0


# -- retry_tasks and seeds ---------------------------------------------------------------------
async def test_retry_tasks_requeues_only_failed_tasks_with_attempts_left(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        k_done, k_used = await controller.push_tasks([{"x": 0}, {"x": 1}])
        await w.pop_tasks(2)
        assert await w.finish_tasks([k_done], [{"y": 0}]) == [True]
        assert await w.fail_tasks([k_used], ["used up"]) == [True]  # max_retries 0: failed for good
        [k_left] = await controller.push_tasks([{"x": 2}])
        assert await controller.empty_queue() == 1  # failed without ever running: attempts left
        [k_queued] = await controller.push_tasks([{"x": 3}])

        assert await controller.retry_tasks([]) == []
        retried = await controller.retry_tasks([k_done, k_used, k_left, k_queued, UNKNOWN_KEY])
        assert retried == [k_left]
        assert (await controller.tasks_with_state("queued"))["queued"] == [k_queued, k_left]
        row = await row_of(controller, k_left)
        assert row["state"] == "queued"
        assert "condition" not in row and "finished_at" not in row
        assert [c["type"] for c in row["conditions"]] == ["Removed"]
        assert (await row_of(controller, k_used))["state"] == "failed"
        assert (await row_of(controller, k_done))["state"] == "finished"

        # Ignoring max_retries re-queues the used-up task too; attempts and history stay.
        assert await controller.retry_tasks([k_used, k_done], ignore_max_retries=True) == [k_used]
        row = await row_of(controller, k_used)
        assert row["state"] == "queued"
        assert "condition" not in row and "finished_at" not in row
        assert row["attempts"] == 1
        assert messages(row) == ["used up"]

        popped = {t.key: t for t in await w.pop_tasks(3)}
        assert set(popped) == {k_queued, k_left, k_used}
        assert popped[k_left].attempt == 1
        assert popped[k_used].attempt == 2
        assert await w.finish_tasks([k_used], [{"y": 1}]) == [True]
    row = await row_of(controller, k_used)
    assert (row["state"], row["y"], row["attempts"]) == ("finished", 1, 2)
    assert messages(row) == ["used up"]
    assert (await controller.fetch_finished_tasks()).keys == [k_done, k_used]


async def test_push_tasks_stores_seeds_and_popped_tasks_carry_them(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    seeds: list[int | None] = [0, 2**64 - 1, None]
    keys = await controller.push_tasks([{"x": i} for i in range(3)], seeds=seeds)
    hashes = await controller._store.reads.read_tasks(keys)
    assert [h.get("seed") if h else "missing" for h in hashes] == seeds
    rows = by_key(await controller.fetch_queued_tasks())
    assert [rows[k].get("seed") for k in keys] == seeds
    async with Worker(network_id, config=config) as w:
        [prio] = await controller.push_priority_tasks([{"x": 9}], priority=[w.worker_id], seeds=[42])
        tasks = await w.pop_tasks(4)
        assert [t.key for t in tasks] == [prio, *keys]
        assert [t.seed for t in tasks] == [42, *seeds]


async def test_retry_tasks_next_seed(controller: Controller, config: RedisConfig, network_id: str) -> None:
    # SplitMix64: the same on every machine (reference value of the first output for state 0).
    assert next_seed(0) == 0xE220A8397B1DCDAF
    assert next_seed(7) != 7 and 0 <= next_seed(7) < 2**64
    assert next_seed(next_seed(7)) not in (7, next_seed(7))

    keys = await controller.push_tasks([{"x": 1}, {"x": 2}], seeds=[7, None])
    async with Worker(network_id, config=config) as w:
        assert [t.seed for t in await w.pop_tasks(2)] == [7, None]
        await w.fail_tasks(keys, ["a", "b"])
        assert await controller.retry_tasks(keys, ignore_max_retries=True, next_seed=True) == keys
        tasks = await w.pop_tasks(2)
        assert [(t.key, t.seed, t.attempt) for t in tasks] == [(keys[0], next_seed(7), 2), (keys[1], None, 2)]
        await w.fail_tasks(keys, ["c", "d"])
        # Without next_seed the seed stays as it is.
        assert await controller.retry_tasks(keys, ignore_max_retries=True) == keys
        assert [t.seed for t in await w.pop_tasks(2)] == [next_seed(7), None]
        await w.fail_tasks(keys, ["e", "f"])
        # Not re-queued (attempts used up): the seed does not move either.
        assert await controller.retry_tasks(keys, next_seed=True) == []
    rows = by_key(await controller.fetch_failed_tasks())
    assert rows[keys[0]]["seed"] == next_seed(7)
    assert "seed" not in rows[keys[1]]
    assert messages(rows[keys[0]]) == ["a", "c", "e"]


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("timeouts", "shown"),
    [
        (0, "timeouts=0:"),
        (-1, "timeouts=-1:"),
        (math.nan, "timeouts=nan:"),
        (math.inf, "timeouts=inf:"),
        ("x", "timeouts='x':"),
        (True, "timeouts=True:"),
        ([1, 2], "timeouts has 2 entries but there are 3 tasks"),
        ([1, 0, 1], "timeouts[1]=0:"),
        ([1, "2", 1], "timeouts[1]='2':"),
    ],
)
async def test_push_tasks_rejects_bad_timeouts(controller: Controller, timeouts: Any, shown: str) -> None:
    with pytest.raises(TaskError, match=re.escape(shown)):
        await controller.push_tasks([{"x": i} for i in range(3)], timeouts=timeouts)
    assert await controller.n_tasks() == 0


@pytest.mark.parametrize(
    ("max_retries", "shown"),
    [
        (-1, "max_retries=-1:"),
        (1.5, "max_retries=1.5:"),
        (True, "max_retries=True:"),
        ("1", "max_retries='1':"),
        ([0, 1], "max_retries has 2 entries but there are 3 tasks"),
        ([0, -1, 0], "max_retries[1]=-1:"),
        ([0, 1, False], "max_retries[2]=False:"),
    ],
)
async def test_push_tasks_rejects_bad_max_retries(
    controller: Controller, max_retries: Any, shown: str
) -> None:
    with pytest.raises(TaskError, match=re.escape(shown)):
        await controller.push_tasks([{"x": i} for i in range(3)], max_retries=max_retries)
    assert await controller.n_tasks() == 0


@pytest.mark.parametrize(
    ("seeds", "shown"),
    [
        ([1, -1, 2], "seeds[1]=-1:"),
        ([1, 2**64, 2], f"seeds[1]={2**64}:"),
        ([1, 1.5, 2], "seeds[1]=1.5:"),
        ([1, "3", 2], "seeds[1]='3':"),
        ([1, True, 2], "seeds[1]=True:"),
        (5, "got 5"),
        ("abc", "got 'abc'"),
        ([1, 2], "seeds has 2 entries but there are 3 tasks"),
    ],
)
async def test_push_tasks_rejects_bad_seeds(controller: Controller, seeds: Any, shown: str) -> None:
    with pytest.raises(TaskError, match=re.escape(shown)):
        await controller.push_tasks([{"x": i} for i in range(3)], seeds=seeds)
    assert await controller.n_tasks() == 0


@pytest.mark.parametrize(
    ("option", "shown"),
    [
        ({"timeouts": -2}, "timeouts=-2:"),
        ({"max_retries": [1]}, "max_retries has 1 entries"),
        ({"seeds": [-5, 1]}, "seeds[0]=-5:"),
    ],
)
async def test_push_priority_tasks_validates_the_same_options(
    controller: Controller, config: RedisConfig, network_id: str, option: dict[str, Any], shown: str
) -> None:
    async with Worker(network_id, config=config) as w:
        with pytest.raises(TaskError, match=re.escape(shown)):
            await controller.push_priority_tasks([{"x": 1}, {"x": 2}], priority=[w.worker_id, None], **option)
    assert await controller.n_tasks() == 0


# -- attempt fencing ---------------------------------------------------------------------------
async def test_late_outcome_of_a_requeued_attempt_is_discarded(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}], max_retries=1)
    async with Worker(network_id, config=config) as a, Worker(network_id, config=config) as b:
        assert (await pop(a)).attempt == 1
        # The controller settles a's tasks (as for a lost worker): back to the queue.
        settled = await controller._store.tasks.requeue_worker_tasks(
            a.worker_id, Condition("WorkerLost", "a is gone")
        )
        assert (settled.requeued, settled.failed) == ([key], [])
        task = await pop(b)
        assert (task.key, task.attempt) == (key, 2)
        # a's late outcomes for attempt 1 are discarded; b's attempt keeps running.
        assert await a.finish_tasks([key], [{"y": "late"}]) == [False]
        assert await a.fail_tasks([key], ["late failure"]) == [False]
        assert await controller.is_running_task(key) is True
        assert await b.finish_tasks([key], [{"y": "b"}]) == [True]
        assert await b.finish_tasks([key], [{"y": "again"}]) == [False]
        assert await a.finish_tasks([key], [{"y": "later"}]) == [False]
    assert await controller._store.reads.finished_keys() == [key]
    assert (await controller.fetch_finished_tasks()).keys == [key]
    row = (await controller.wait_for_tasks([key], timeout=30))[0]
    assert (row["state"], row["y"], row["worker_id"], row["attempts"]) == ("finished", "b", b.worker_id, 2)
    assert row["conditions"] == [{"type": "WorkerLost", "message": "a is gone"}]
    assert await controller.n_failed_tasks() == 0


async def test_stale_attempt_on_the_same_worker_is_fenced(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}], max_retries=1)
    async with Worker(network_id, config=config) as w:
        assert (await pop(w)).attempt == 1
        await controller._store.tasks.requeue_worker_tasks(
            w.worker_id, Condition("WorkerLost", "declared lost")
        )
        task = await pop(w)
        assert (task.key, task.attempt) == (key, 2)
        # Outcomes of attempt 1 (as the run loop writes them, tagged with their attempt)
        # arrive while attempt 2 runs on the same worker: both are discarded.
        stale_fail = {"condition": Condition("E", "stale").to_dict()}
        assert await w._store.tasks.complete(w.worker_id, "finished", [(key, 1, {"ys": {"y": "stale"}})]) == [
            0
        ]
        assert await w._store.tasks.complete(w.worker_id, "failed", [(key, 1, stale_fail)]) == [0]
        assert await controller.is_running_task(key) is True
        assert await w.finish_tasks([key], [{"y": "fresh"}]) == [True]
    assert await controller._store.reads.finished_keys() == [key]
    row = await row_of(controller, key)
    assert (row["state"], row["y"], row["attempts"]) == ("finished", "fresh", 2)
    assert messages(row) == ["declared lost"]


async def test_late_finish_after_a_retry_is_discarded(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}], max_retries=1)
    async with Worker(network_id, config=config) as a, Worker(network_id, config=config) as b:
        await pop(a)
        assert await a.fail_tasks([key], ["first try"]) == [True]  # re-queued: one retry left
        assert await a.finish_tasks([key], [{"y": "late"}]) == [False]
        task = await pop(b)
        assert (task.key, task.attempt) == (key, 2)
        assert await a.finish_tasks([key], [{"y": "late"}]) == [False]
        assert await b.finish_tasks([key], [{"y": 2}]) == [True]
    assert await controller._store.reads.finished_keys() == [key]
    row = await row_of(controller, key)
    assert (row["state"], row["y"], row["worker_id"]) == ("finished", 2, b.worker_id)
    assert messages(row) == ["first try"]


async def test_late_finish_after_the_task_failed_for_good_is_discarded(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}])  # no retry
    async with Worker(network_id, config=config) as w:
        await pop(w)
        gone = Condition("WorkerLost", "gone")
        settled = await controller._store.tasks.requeue_worker_tasks(w.worker_id, gone)
        assert (settled.requeued, settled.failed) == ([], [key])
        assert await w.finish_tasks([key], [{"y": 1}]) == [False]
    row = await row_of(controller, key)
    assert row["state"] == "failed"
    assert row["condition"] == {"type": "WorkerLost", "message": "gone"}
    assert await controller.n_finished_tasks() == 0
    assert await controller._store.reads.finished_keys() == []


# -- cancellation ------------------------------------------------------------------------------
async def test_cancel_queued_priority_and_pending_tasks(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        [k_pending] = await controller.push_tasks([{"x": 0}])
        # Popped but not yet claimed: in the worker's pending list.
        assert await w._store.tasks.pop_keys(w.worker_id, 1) == [k_pending]
        [k_shared, k_other] = await controller.push_tasks([{"x": 1}, {"x": 2}])
        [k_prio] = await controller.push_priority_tasks([{"x": 3}], priority=[w.worker_id])
        assert (await controller.fetch_priority_tasks()).keys == [k_prio]
        queued = (await controller.tasks_with_state("queued"))["queued"]
        assert set(queued) == {k_pending, k_shared, k_other, k_prio}

        cancelled = await controller.cancel_tasks([k_shared, k_prio, k_pending, k_shared, UNKNOWN_KEY])
        assert cancelled == [k_shared, k_prio, k_pending]
        assert (await controller.tasks_with_state("queued"))["queued"] == [k_other]
        assert len(await controller.fetch_priority_tasks()) == 0
        # The worker gets only the task that was not cancelled.
        task = await pop(w)
        assert task.key == k_other
        assert await w.pop_task(timeout=0) is None
        assert await w.finish_tasks([k_other], [{"y": 2}]) == [True]
        assert await controller.cancel_tasks([k_shared]) == []  # failed already

    rows = by_key(await controller.fetch_failed_tasks())
    assert set(rows) == {k_shared, k_prio, k_pending}
    for key in cancelled:
        assert rows[key]["condition"]["type"] == "Cancelled"
        assert [c["type"] for c in rows[key]["conditions"]] == ["Cancelled"]
        assert "attempts" not in rows[key]  # never started
    assert_each_key_in_one_state(await controller.tasks_with_state(), [k_pending, k_shared, k_other, k_prio])


async def test_cancel_running_task_of_an_in_process_worker(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": 0}, {"x": 1}, {"x": 2}], max_retries=3)
    async with Worker(network_id, config=config) as w:
        running, done = await w.pop_tasks(2)
        assert await w.finish_tasks([done.key], [{"y": 1}]) == [True]
        assert not w.is_cancelled(running.key)

        assert await controller.cancel_tasks([running.key, done.key, UNKNOWN_KEY]) == [running.key]
        await eventually(lambda: w.is_cancelled(running.key), "the worker hears of the cancellation")
        assert not w.is_cancelled(done.key)
        # The cancelled attempt's outcome is discarded; with retries left it is still not retried.
        assert await w.finish_tasks([running.key], [{"y": 0}]) == [False]
        assert await w.fail_tasks([running.key], ["late"]) == [False]
        assert (await controller.tasks_with_state("queued"))["queued"] == [keys[2]]
        assert await controller.n_running_tasks() == 0

    row = await row_of(controller, running.key)
    assert row["state"] == "failed"
    assert row["condition"]["type"] == "Cancelled"
    assert row["attempts"] == 1
    assert [c["type"] for c in row["conditions"]] == ["Cancelled"]
    assert (await row_of(controller, done.key))["state"] == "finished"
    assert await controller._store.reads.finished_keys() == [done.key]


@pytest.mark.parametrize(
    ("fun", "long_xs", "short_xs", "timeout"),
    [
        ("tests.funcs:async_sleepy", {"x": 1, "duration": 120}, {"x": 2, "duration": 0.01}, None),
        ("tests.funcs:burn", {"seconds": 120}, {"seconds": 0.01}, None),
        ("tests.funcs:sleepy", {"x": 1, "duration": 120}, {"x": 2, "duration": 0.01}, 300.0),
    ],
    ids=["async-task", "thread-busy-loop", "child-process"],
)
async def test_cancel_interrupts_a_task_on_a_local_worker_that_lives_on(
    controller: Controller,
    fun: str,
    long_xs: dict[str, Any],
    short_xs: dict[str, Any],
    timeout: float | None,
) -> None:
    [wid] = await controller.start_local_workers(1, fun=fun)
    [key] = await controller.push_tasks([long_xs], timeouts=timeout)
    await eventually(lambda: controller.is_running_task(key), "the worker runs the long task", timeout=30)
    assert await controller.cancel_tasks([key]) == [key]
    row = await row_of(controller, key)
    assert row["state"] == "failed"
    assert row["condition"]["type"] == "Cancelled"

    # The worker was interrupted, not stopped: it runs the next task (with the long
    # task still running it would be busy for two minutes).
    [after] = await controller.push_tasks([short_xs], timeouts=timeout)
    table = await controller.wait_for_tasks([after], timeout=30)
    assert table[0]["state"] == "finished"
    assert table[0]["worker_id"] == wid
    assert controller.local_workers[wid].process.poll() is None
    assert await controller.n_running_workers() == 1
    # Nothing of the cancelled attempt was written after the cancellation.
    row = await row_of(controller, key)
    assert row["state"] == "failed"
    assert [c["type"] for c in row["conditions"]] == ["Cancelled"]


# -- timeouts ----------------------------------------------------------------------------------
async def test_async_task_past_its_timeout_fails_and_the_next_task_runs(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    slow, fast = await controller.push_tasks(
        [{"x": 1, "duration": 5}, {"x": 2, "duration": 0.01}], timeouts=[0.3, 5]
    )
    async with Worker(network_id, config=config) as w:
        table = await run_until(
            controller, w, funcs.async_sleepy, lambda: controller.wait_for_tasks([slow, fast], timeout=30)
        )
    rows = by_key(table)
    assert rows[slow]["state"] == "failed"
    assert rows[slow]["condition"]["type"] == "TaskTimeout"
    assert "timed out after 0.3 s" in rows[slow]["condition"]["message"]
    assert rows[slow]["timeout"] == 0.3
    assert rows[slow]["attempts"] == 1
    assert (rows[fast]["state"], rows[fast]["y"]) == ("finished", 2)


async def test_timed_out_task_is_retried_then_fails(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1, "duration": 5}], timeouts=0.3, max_retries=1)
    async with Worker(network_id, config=config) as w:
        table = await run_until(
            controller, w, funcs.async_sleepy, lambda: controller.wait_for_tasks([key], timeout=30)
        )
    row = table[0]
    assert row["state"] == "failed"
    assert row["attempts"] == 2
    assert [c["type"] for c in row["conditions"]] == ["TaskTimeout", "TaskTimeout"]
    assert row["condition"]["type"] == "TaskTimeout"


async def test_plain_function_with_a_timeout_runs_in_a_child_and_returns_its_value(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    # The deadline covers the function, not the child's start (imports take longer than 0.3 s).
    child, thread = await controller.push_tasks([{"x": 3}, {"x": 4}], timeouts=[0.3, None])
    async with Worker(network_id, config=config) as w:
        table = await run_until(
            controller, w, funcs.pid_square, lambda: controller.wait_for_tasks([child, thread], timeout=30)
        )
    rows = by_key(table)
    assert (rows[child]["state"], rows[child]["y"]) == ("finished", 9)
    assert (rows[thread]["state"], rows[thread]["y"]) == ("finished", 16)
    assert rows[child]["pid"] != os.getpid()
    assert rows[thread]["pid"] == os.getpid()


async def test_plain_function_past_its_timeout_is_killed_and_the_local_worker_goes_on(
    controller: Controller,
) -> None:
    [wid] = await controller.start_local_workers(1, fun="tests.funcs:sleepy")
    [slow] = await controller.push_tasks([{"x": 1, "duration": 5}], timeouts=0.3)
    after = await controller.push_tasks(
        [{"x": 2, "duration": 0.01}, {"x": 3, "duration": 0.01}], timeouts=[None, 10]
    )
    rows = by_key(await controller.wait_for_tasks([slow, *after], timeout=30))
    assert rows[slow]["state"] == "failed"
    assert rows[slow]["condition"]["type"] == "TaskTimeout"
    assert "timed out after 0.3 s" in rows[slow]["condition"]["message"]
    # The killed child's late reply never reaches the next timed task (y would be 1).
    assert [(rows[k]["state"], rows[k]["y"]) for k in after] == [("finished", 2), ("finished", 3)]
    assert {rows[k]["worker_id"] for k in [slow, *after]} == {wid}
    assert controller.local_workers[wid].process.poll() is None
    assert await controller.n_running_workers() == 1


async def test_child_process_that_dies_fails_its_task_and_a_new_child_runs_the_next(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    dies, lives = await controller.push_tasks([{"x": -1, "code": 3}, {"x": 5}], timeouts=10)
    async with Worker(network_id, config=config) as w:
        table = await run_until(
            controller,
            w,
            funcs.exit_on_negative,
            lambda: controller.wait_for_tasks([dies, lives], timeout=30),
        )
    rows = by_key(table)
    assert rows[dies]["state"] == "failed"
    assert rows[dies]["condition"]["type"] == "ChildProcessDied"
    assert "exited with code 3" in rows[dies]["condition"]["message"]
    assert (rows[lives]["state"], rows[lives]["y"]) == ("finished", 5)


async def test_child_that_cannot_import_the_function_fails_only_timed_tasks(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    timed, untimed = await controller.push_tasks([{"x": 2}, {"x": 3}], timeouts=[10, None])
    async with Worker(network_id, config=config) as w:
        table = await run_until(
            controller,
            w,
            funcs.square,
            lambda: controller.wait_for_tasks([timed, untimed], timeout=30),
            fun_path="tests.funcs:no_such_function",
        )
    rows = by_key(table)
    assert rows[timed]["state"] == "failed"
    assert rows[timed]["condition"]["type"] == "ChildProcessDied"
    assert "while starting" in rows[timed]["condition"]["message"]
    assert (rows[untimed]["state"], rows[untimed]["y"]) == ("finished", 9)


# -- the child process itself --------------------------------------------------------------------
async def interrupted_run(child: ChildProcess, xs: dict[str, Any], after: float) -> Any:
    """Run ``xs`` in ``child`` and interrupt it ``after`` seconds (0: as it starts); the result."""
    out: dict[str, Any] = {}

    async def run() -> None:
        out["result"] = await child.run(xs, None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(after)
        child.interrupt()
    return out["result"]


async def test_child_interrupted_while_it_starts_does_not_run_the_task() -> None:
    child = ChildProcess("tests.funcs:sleepy")
    try:
        with anyio.fail_after(20):  # the task would sleep for two minutes
            # sleep(0): run() is then starting the child process.
            assert await interrupted_run(child, {"x": 1, "duration": 120}, 0) == ("cancelled", None)
            assert await child.run({"x": 2, "duration": 0}, 10) == ("ok", {"y": 2})
    finally:
        await child.close()


async def test_next_task_after_an_interrupted_one_runs_in_a_fresh_child() -> None:
    child = ChildProcess("tests.funcs:sleepy")
    try:
        with anyio.fail_after(30):
            assert await child.run({"x": 0, "duration": 0}, 10) == ("ok", {"y": 0})
            for i in range(3):
                # Wherever the interruption lands, the outcome is the same.
                result = await interrupted_run(child, {"x": 1, "duration": 120}, 0.05)
                assert result == ("cancelled", None)
                # The killed child must not be mistaken for a live one (not yet reaped).
                assert await child.run({"x": 2 + i, "duration": 0}, 10) == ("ok", {"y": 2 + i})
    finally:
        await child.close()
