"""The finished-task cache of a Controller shared by many coroutines.

Regression tests for the cache that used ``len(cache)`` as the read offset and
extended it after two awaits without a lock: concurrent fetches repeated rows
and lost results, and a finished task whose hash was gone shifted the offset.
"""

from __future__ import annotations

import anyio
import pytest

from rushpy import Controller, RedisConfig, Worker
from rushpy.models import TaskState
from tests.helpers import delete_task_data, eventually


async def test_concurrent_fetch_finished_never_repeats_rows(controller: Controller) -> None:
    await controller.push_finished_tasks([{"x": i} for i in range(10)], [{"y": i} for i in range(10)])
    results: list[int] = []

    async def fetch() -> None:
        results.append(len(await controller.fetch_finished_tasks()))

    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(fetch)
    assert results == [10, 10]
    assert len(await controller.fetch_finished_tasks()) == 10


async def test_every_result_comes_out_of_fetch_new_tasks_once(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    n_tasks, n_readers = 400, 8
    keys = await controller.push_tasks([{"x": i} for i in range(n_tasks)])
    seen: list[str] = []
    done = anyio.Event()

    async def reader() -> None:
        while not done.is_set():
            seen.extend(row["key"] for row in await controller.fetch_new_tasks(timeout=0.05))

    async def work() -> None:
        async with Worker(network_id, config=config) as worker:
            finished = 0
            while finished < n_tasks:
                tasks = await worker.pop_tasks(7, timeout=5)
                assert tasks, "the queue ran dry before every task finished"
                await worker.finish_tasks([t.key for t in tasks], [{"y": 1}] * len(tasks))
                finished += len(tasks)
                await anyio.sleep(0)  # interleave with the readers
            worker.set_terminated()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(n_readers):
                tg.start_soon(reader)
            await work()
            while len(seen) < n_tasks:
                await anyio.sleep(0.05)
            done.set()
    assert sorted(seen) == sorted(keys)
    assert len(await controller.fetch_new_tasks()) == 0


async def test_missing_hash_does_not_shift_the_cache(controller: Controller) -> None:
    first, second = await controller.push_finished_tasks([{"x": 1}, {"x": 2}], [{"y": 1}, {"y": 2}])
    await delete_task_data(controller._store.client, controller._keys, first)
    assert [r["key"] for r in await controller.fetch_finished_tasks()] == [second]
    assert [r["key"] for r in await controller.fetch_finished_tasks()] == [second]
    assert [r["key"] for r in await controller.fetch_new_tasks()] == [second]
    (third,) = await controller.push_finished_tasks([{"x": 3}], [{"y": 3}])
    assert [r["key"] for r in await controller.fetch_new_tasks()] == [third]
    assert [r["key"] for r in await controller.fetch_finished_tasks()] == [second, third]


async def test_missing_hash_does_not_shift_announced_reads(controller: Controller) -> None:
    """The events-channel shortcut (keys announced with their list index) stays aligned."""
    cache = controller._reads.cache
    cache.listening += 1  # as a waiter does: announcements are kept only while someone waits
    # Rows over 4 KB in all are announced without them (announce_finished): read by key.
    pad = "p" * 3000
    first, second = await controller.push_finished_tasks(
        [{"x": 1, "pad": pad}, {"x": 2, "pad": pad}], [{"y": 1}, {"y": 2}]
    )
    await delete_task_data(controller._store.client, controller._keys, first)
    await eventually(lambda: 1 in cache._announced, "the announcement of both finished tasks")
    cache.listening -= 1
    assert await cache.update(announced_only=True) == 2
    assert cache.offset == 2
    assert [r["key"] for r in await controller.fetch_new_tasks()] == [second]
    (third,) = await controller.push_finished_tasks([{"x": 3}], [{"y": 3}])
    assert await controller.wait_for_new_tasks(timeout=5)
    assert [r["key"] for r in await controller.fetch_new_tasks()] == [third]
    assert [r["key"] for r in await controller.fetch_finished_tasks()] == [second, third]
    assert cache.rows_read == 3


async def test_new_results_read_only_new_rows(controller: Controller) -> None:
    """The cache reads from Redis only the results past its offset."""
    await controller.push_finished_tasks([{"x": i} for i in range(50)], [{"y": i} for i in range(50)])
    assert len(await controller.fetch_new_tasks()) == 50
    assert controller._reads.cache.rows_read == 50
    await controller.push_finished_tasks([{"x": 1}], [{"y": 1}])
    assert len(await controller.fetch_new_tasks()) == 1
    assert len(await controller.fetch_finished_tasks()) == 51
    assert controller._reads.cache.rows_read == 51
    controller.reset_cache()
    assert len(await controller.fetch_finished_tasks()) == 51
    assert controller._reads.cache.rows_read == 51 + 51
    assert len(await controller.fetch_new_tasks()) == 51


@pytest.mark.parametrize("n_callers", [2, 5])
async def test_concurrent_wait_for_new_tasks_sees_each_result_once(
    controller: Controller, n_callers: int
) -> None:
    got: list[str] = []

    async def waiter() -> None:
        with anyio.fail_after(10):
            while len(got) < 3:
                got.extend(r["key"] for r in await controller.fetch_new_tasks(timeout=0.2))

    async with anyio.create_task_group() as tg:
        for _ in range(n_callers):
            tg.start_soon(waiter)
        keys = []
        for i in range(3):
            keys += await controller.push_finished_tasks([{"x": i}], [{"y": i}])
            await anyio.sleep(0.01)
    assert sorted(got) == sorted(keys)


async def test_announcements_are_kept_only_while_someone_waits(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    """A worker that never waits for results is not even sent announcements; nobody keeps them unasked."""
    async with Worker(network_id, config=config) as worker:
        channel = controller._keys.results
        assert not worker._session.events.listens_to(channel)
        await controller.push_finished_tasks([{"x": i} for i in range(50)], [{"y": i} for i in range(50)])
        with anyio.fail_after(5):
            assert await controller.wait_for_new_tasks(timeout=5)
        assert controller._reads.cache.listening == 0
        seen = controller._session.events.counter(channel)
        await controller.push_finished_tasks([{"x": 1}], [{"y": 1}])
        events = controller._session.events
        await eventually(lambda: events.counter(channel) > seen, "the announcement arrives")
        assert controller._reads.cache._announced == {}
        assert len(await worker.fetch_new_tasks()) == 51
        # Waiting subscribes the worker; from then on it hears results like a controller.
        assert not await worker.wait_for_new_tasks(timeout=0.05)
        assert worker._session.events.listens_to(channel)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(controller.push_finished_tasks, [{"x": 2}], [{"y": 2}])
                assert [r["y"] for r in await worker.fetch_new_tasks(timeout=5)] == [2]


async def test_announced_failures_are_read_without_the_log(controller: Controller) -> None:
    """Failures announced with their log index are read without an LRANGE, aligned like finished ones."""
    cache = controller._reads.cache
    cache.listening += 1
    first, second = await controller.push_failed_tasks([{"x": 1}, {"x": 2}], ["a", "b"])
    await eventually(lambda: 1 in cache._failed_announced, "the announcement of both failures")
    await controller._store.client.delete(controller._keys.task(first))  # no row, same offset
    client = controller._store.client
    before = int((await client.info("commandstats")).get("cmdstat_lrange", {}).get("calls", 0))
    assert await cache.update_failed(announced_only=True) == 2
    after = int((await client.info("commandstats")).get("cmdstat_lrange", {}).get("calls", 0))
    cache.listening -= 1
    assert after == before
    assert cache.failed_offset == 2
    assert not cache._failed_announced
    assert [r["key"] for r in cache.take_new([TaskState.FAILED])] == [second]
    # Announcements of entries already read, or while nobody listens, are dropped.
    cache.announce(0, [first.encode()], failed=True)
    (third,) = await controller.push_failed_tasks([{"x": 3}], ["c"])
    assert not cache._failed_announced
    assert [r["key"] for r in await controller.fetch_new_tasks(states=("failed",))] == [third]


async def test_catching_up_on_many_results_is_not_cut_by_the_deadline_grace(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch with timeout=0 reads a large backlog in windows, each answered within the grace.

    Regression: the whole backlog went out as one pipeline under the call's
    deadline, so a healthy server that took longer than the grace (5 s) to send
    10^5 rows made fetch_new_tasks() raise ConnectionFailedError.
    """
    import rushpy.cache
    import rushpy.deadline

    n = 300_000
    await controller.push_finished_tasks([{"x": i} for i in range(n)], [{"y": i} for i in range(n)])
    monkeypatch.setattr(rushpy.cache, "READ_WINDOW", 1000)
    # A grace shorter than reading 300,000 rows at once takes (one pipeline fails
    # it on a 2-core VM), and 20-50 times what reading 1,000 takes, so a busy
    # machine (the full suite) does not fail a healthy window.
    monkeypatch.setattr(rushpy.deadline, "DEADLINE_GRACE", 0.1)
    with anyio.fail_after(60):
        rows = await controller.fetch_new_tasks()  # the whole backlog, window by window
    assert [r["y"] for r in rows] == list(range(n))
    assert len(await controller.fetch_finished_tasks()) == n


async def test_a_reset_by_another_client_drops_the_stale_rows_and_hands_nothing_out_twice(
    controller: Controller, config: RedisConfig
) -> None:
    await controller.push_finished_tasks([{"x": i} for i in range(3)], [{"y": i} for i in range(3)])
    assert [r["y"] for r in await controller.fetch_new_tasks()] == [0, 1, 2]
    async with Controller(controller.network_id, config=config) as other:
        await other.reset()
        await other.push_finished_tasks([{"x": 10}], [{"y": 10}])

    async def fresh() -> bool:  # once the reset's message has come
        return (await controller.fetch_finished_tasks())["y"] == [10]

    await eventually(fresh, "the stale rows are dropped", timeout=10)
    assert [r["y"] for r in await controller.fetch_new_tasks()] == [10]
    assert len(await controller.fetch_new_tasks()) == 0


async def test_a_clients_own_reset_hands_no_row_out_twice(controller: Controller) -> None:
    await controller.push_finished_tasks([{"x": 1}], [{"y": 1}])
    assert len(await controller.fetch_new_tasks()) == 1
    await controller.reset()
    await controller.push_finished_tasks([{"x": 2}, {"x": 3}], [{"y": 2}, {"y": 3}])
    assert [r["y"] for r in await controller.fetch_new_tasks()] == [2, 3]
    # Its own reset message, as if it came only now (it may, after the rows were taken):
    # the lists did not shrink below what was read, so nothing is dropped and read again.
    controller._reads.cache.suspect_reset()
    assert len(await controller.fetch_new_tasks()) == 0
    assert (await controller.fetch_finished_tasks())["y"] == [2, 3]
