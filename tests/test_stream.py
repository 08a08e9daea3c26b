"""The result stream: fetch_new_tasks / wait_for_new_tasks with failed tasks.

Regression tests for a stream that carried only finished tasks: a task that
failed for good never appeared, so a loop keeping N evaluations in flight
stalled on its first failure.
"""

from __future__ import annotations

import anyio
import pytest

from rushpy import Controller, RedisConfig, Worker
from rushpy.errors import TaskError
from rushpy.lost import settle_worker
from rushpy.models import Condition, WorkerState

BOTH = ("finished", "failed")


async def finish_and_fail(worker: Worker, n_finish: int, n_fail: int) -> tuple[list[str], list[str]]:
    """Pop ``n_finish + n_fail`` tasks; finish the first ones, fail the rest."""
    tasks = await worker.pop_tasks(n_finish + n_fail, timeout=5)
    assert len(tasks) == n_finish + n_fail
    done, bad = [t.key for t in tasks[:n_finish]], [t.key for t in tasks[n_finish:]]
    await worker.finish_tasks(done, [{"y": 1}] * len(done))
    await worker.fail_tasks(bad, [ValueError("boom")] * len(bad))
    return done, bad


async def test_failed_tasks_appear_once_with_state_and_condition(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    await controller.push_tasks([{"x": i} for i in range(4)])
    async with Worker(network_id, config=config) as worker:
        done, bad = await finish_and_fail(worker, 2, 2)
    table = await controller.fetch_new_tasks(states=BOTH)
    # Finished rows first, then failures in failure order.
    assert [r["key"] for r in table] == done + bad
    assert [r["state"] for r in table] == ["finished"] * 2 + ["failed"] * 2
    assert all(r["condition"]["type"] == "ValueError" for r in table[2:])
    assert len(await controller.fetch_new_tasks(states=BOTH)) == 0


async def test_default_stream_is_finished_only_and_leaves_failures(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    await controller.push_tasks([{"x": i} for i in range(3)])
    async with Worker(network_id, config=config) as worker:
        done, bad = await finish_and_fail(worker, 1, 2)
    assert [r["key"] for r in await controller.fetch_new_tasks()] == done
    assert controller._reads.cache.failed_read == 0  # the failed log was not even read
    assert [r["key"] for r in await controller.fetch_new_tasks(states="failed")] == bad
    assert len(await controller.fetch_new_tasks(states=BOTH)) == 0


async def test_bad_states_are_refused(controller: Controller) -> None:
    for states in (("queued",), (), ("finished", "running")):
        with pytest.raises(TaskError, match="result stream"):
            await controller.fetch_new_tasks(states=states)
    with pytest.raises(TaskError, match="unknown task state 'nope'"):
        await controller.wait_for_new_tasks(0, states=("nope",))


async def test_a_failure_with_retries_left_appears_only_when_final(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}], max_retries=1)
    async with Worker(network_id, config=config) as worker:
        for _ in range(2):
            assert len(await controller.fetch_new_tasks(states=BOTH)) == 0  # retried: not final
            [task] = await worker.pop_tasks(1, timeout=5)
            await worker.fail_tasks([task.key], [RuntimeError("again")])
    [row] = await controller.fetch_new_tasks(states=BOTH)
    assert (row["key"], row["state"], row["attempts"]) == (key, "failed", 2)


async def test_every_way_to_fail_for_good_appears(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [pushed] = await controller.push_failed_tasks([{"x": 0}], ["given up"])
    async with Worker(network_id, config=config) as worker:
        running, plain, lost = await controller.push_tasks([{"x": i} for i in range(3)])
        assert len(await worker.pop_tasks(3, timeout=5)) == 3
        await worker.fail_tasks([plain], [ValueError("plain")])
        assert await controller.cancel_tasks([running]) == [running]
        [queued] = await controller.push_tasks([{"x": 3}])
        assert await controller.cancel_tasks([queued]) == [queued]
        # `lost` runs on a worker that is then settled as lost (what detection does).
        gone = Condition("WorkerLost", "gone")
        await settle_worker(controller._store, worker.worker_id, WorkerState.LOST, gone)
    # A corrupt attempts count fails the task at its claim (CorruptTask).
    [corrupt] = await controller.push_tasks([{"x": 4}])
    await controller._store.client.hset(controller._keys.task(corrupt), "attempts", b"\xa3bad")
    async with Worker(network_id, config=config) as other:
        assert await other.pop_tasks(1, timeout=0.2) == []
    table = await controller.fetch_new_tasks(states=["failed"])
    stream = {r["key"]: r["condition"]["type"] for r in table}
    assert stream == {
        pushed: stream[pushed],
        plain: "ValueError",
        running: "Cancelled",
        queued: "Cancelled",
        lost: "WorkerLost",
        corrupt: "CorruptTask",
    }
    assert len(table) == 6
    assert {r["state"] for r in table} == {"failed"}


async def test_empty_queue_failures_appear(controller: Controller) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(3)])
    await controller.empty_queue()
    assert sorted(r["key"] for r in await controller.fetch_new_tasks(states="failed")) == sorted(keys)


async def test_retried_by_hand_appears_again_with_its_next_outcome(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}])
    async with Worker(network_id, config=config) as worker:
        for _ in range(2):
            [task] = await worker.pop_tasks(1, timeout=5)
            await worker.fail_tasks([task.key], ["no"])
            [row] = await controller.fetch_new_tasks(states=BOTH)
            assert (row["key"], row["state"]) == (key, "failed")
            assert await controller.retry_tasks([key], ignore_max_retries=True) == [key]
        # Failed, then retried before the stream read it: the stale entry is skipped...
        [task] = await worker.pop_tasks(1, timeout=5)
        await worker.fail_tasks([task.key], ["no"])
        assert await controller.retry_tasks([key], ignore_max_retries=True) == [key]
        assert len(await controller.fetch_new_tasks(states=BOTH)) == 0
        # ...and the next outcome comes instead.
        [task] = await worker.pop_tasks(1, timeout=5)
        await worker.finish_tasks([task.key], [{"y": 2}])
    [row] = await controller.fetch_new_tasks(states=BOTH)
    assert (row["key"], row["state"], row["y"]) == (key, "finished", 2)


async def test_failed_twice_in_one_batch_counts_once(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}])
    async with Worker(network_id, config=config) as worker:
        [task] = await worker.pop_tasks(1, timeout=5)
        await worker.fail_tasks([task.key], ["no"])
        await controller.retry_tasks([key], ignore_max_retries=True)
        [task] = await worker.pop_tasks(1, timeout=5)
        await worker.fail_tasks([task.key], ["no"])
    assert await controller._store.client.llen(controller._keys.failed_log) == 2
    assert [r["key"] for r in await controller.fetch_new_tasks(states="failed")] == [key]


async def test_many_coroutines_get_each_task_exactly_once(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    n_tasks, n_readers = 300, 6
    keys = await controller.push_tasks([{"x": i} for i in range(n_tasks)])
    seen: list[tuple[str, str]] = []
    done = anyio.Event()

    async def reader(i: int) -> None:
        # Half wait first (the announced path), half poll with a timeout.
        while not done.is_set():
            if i % 2 and not await controller.wait_for_new_tasks(0.05, states=BOTH):
                continue
            seen.extend((r["key"], r["state"]) for r in await controller.fetch_new_tasks(0.05, states=BOTH))

    async def work() -> None:
        async with Worker(network_id, config=config) as worker:
            handled = 0
            while handled < n_tasks:
                tasks = await worker.pop_tasks(6, timeout=5)
                assert tasks
                half = len(tasks) // 2
                await worker.finish_tasks([t.key for t in tasks[:half]], [{"y": 1}] * half)
                await worker.fail_tasks([t.key for t in tasks[half:]], ["odd"] * (len(tasks) - half))
                handled += len(tasks)
                await anyio.sleep(0)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(n_readers):
                tg.start_soon(reader, i)
            await work()
            while len(seen) < n_tasks:
                await anyio.sleep(0.05)
            done.set()
    assert sorted(k for k, _ in seen) == sorted(keys)
    assert {s for _, s in seen} == {"finished", "failed"}
    assert controller._reads.cache.failed_read < 2 * n_tasks  # no range read twice


async def test_wait_for_new_failures_wakes_on_an_announced_failure(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    await controller.push_tasks([{"x": 1}, {"x": 2}])
    results: list[bool] = []

    async def wait() -> None:
        results.append(await controller.wait_for_new_tasks(10, states=["failed"]))

    async with Worker(network_id, config=config) as worker, anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.sleep(0.1)
        tasks = await worker.pop_tasks(2, timeout=5)
        await worker.finish_tasks([tasks[0].key], [{"y": 1}])  # does not end the wait
        await worker.fail_tasks([tasks[1].key], ["x"])
    assert results == [True]
    [row] = await controller.fetch_new_tasks(states="failed")
    assert row["key"] == tasks[1].key


async def test_a_worker_streams_failures_too(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    await controller.push_tasks([{"x": 1}])
    async with Worker(network_id, config=config) as worker:
        _, bad = await finish_and_fail(worker, 0, 1)
        assert [r["key"] for r in await worker.fetch_new_tasks(1, states=BOTH)] == bad


async def test_reset_cache_streams_failures_again_and_reset_deletes_the_log(controller: Controller) -> None:
    pushed = await controller.push_failed_tasks([{"x": 0}], ["no"])
    assert [r["key"] for r in await controller.fetch_new_tasks(states="failed")] == pushed
    controller.reset_cache()
    assert [r["key"] for r in await controller.fetch_new_tasks(states="failed")] == pushed
    await controller.reset()
    assert not await controller._store.client.exists(controller._keys.failed_log)
