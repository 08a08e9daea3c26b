"""Announcements that carry rows, and waits that trust them (issue: W2's critical path).

A finished task's row travels in its ``F`` announcement when it is small, the
cache and the waits use it instead of reading the hash, and a wake-up caused
only by announcements closes exactly the announced keys without a lookup.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgpack
import pytest
import redis.asyncio

from rushpy import Controller, RedisConfig, Worker
from rushpy.announcements import Announcement, Outcomes, parse
from rushpy.codec import encode
from rushpy.errors import TaskTimeoutError, UnknownTaskError
from rushpy.store import Store

# -- parsing ---------------------------------------------------------------------------------


def test_parse_keys_and_rows() -> None:
    rows = [[b"ys", encode({"y": 1})], [b"ys", encode({"y": 2})]]
    found = parse(b"F 7 a b\n" + msgpack.packb(rows))
    assert found == Announcement(False, 7, [b"a", b"b"], rows)
    assert found.state == "finished"
    assert parse(b"X 0 c") == Announcement(True, 0, [b"c"], None)
    assert parse(b"X 0 c").state == "failed"  # type: ignore[union-attr]


@pytest.mark.parametrize("data", [b"C a b", b"W", b"F x a", b"", b"terminate"])
def test_parse_ignores_other_messages(data: bytes) -> None:
    assert parse(data) is None


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # not msgpack
        msgpack.packb({"a": 1}),  # not a list
        msgpack.packb([[b"ys"]]),  # odd number of items
        msgpack.packb([[b"ys", 1]]),  # not bytes
        msgpack.packb([[b"ys", b"1"], [b"ys", b"2"]]),  # more rows than keys
        msgpack.packb(["row"]),  # a row that is not a list
    ],
)
def test_damaged_rows_cost_the_rows_not_the_announcement(body: bytes) -> None:
    assert parse(b"F 3 a\n" + body) == Announcement(False, 3, [b"a"], None)


# -- outcomes --------------------------------------------------------------------------------


def test_outcomes_remember_only_watched_keys_and_only_news() -> None:
    outcomes = Outcomes()
    outcomes.record(Announcement(False, 0, [b"a"], None))  # nobody watches: counted, not kept
    assert outcomes.announcements == 1
    outcomes.watch(["a", "b"])
    outcomes.watch(["a"])
    assert outcomes.closed("a", 0) is None
    before = outcomes.announcements
    outcomes.record(Announcement(True, 4, [b"a", b"z"], None))
    assert outcomes.closed("a", before) == ("failed", None)
    assert outcomes.closed("z", before) is None  # not watched
    # An announcement the caller saw before its last look at Redis is stale.
    assert outcomes.closed("a", outcomes.announcements) is None
    outcomes.unwatch(["a"])
    assert outcomes.closed("a", before) == ("failed", None)  # another waiter still watches it
    outcomes.unwatch(["a", "b"])
    assert outcomes.closed("a", before) is None
    outcomes.watch(["a"])
    assert outcomes.closed("a", before) is None  # forgotten with its last waiter


def test_announced_since_names_the_watched_keys_in_order_and_the_log_stays_bounded() -> None:
    outcomes = Outcomes()
    outcomes.watch(["a", "b", "c"])
    start = outcomes.announcements
    outcomes.record(Announcement(False, 0, [b"a", b"z"], None))
    middle = outcomes.announcements
    outcomes.record(Announcement(True, 1, [b"c", b"a"], None))
    assert outcomes.announced_since(start) == ["a", "c", "a"]  # z is not watched
    assert outcomes.announced_since(middle) == ["c", "a"]
    assert outcomes.announced_since(outcomes.announcements) == []
    outcomes.unwatch(["a", "b", "c"])
    assert outcomes.announced_since(start) == []  # forgotten with the last waiter
    # A long-lived waiter keeps the log; keys of waiters that left are compacted away.
    outcomes.watch(["keep"])
    outcomes.record(Announcement(False, 0, [b"keep"], None))
    for i in range(3000):
        key = f"k{i}"
        outcomes.watch([key])
        outcomes.record(Announcement(False, i, [key.encode()], None))
        outcomes.unwatch([key])
    assert len(outcomes._log) <= 2 * 1 + 1024 + 1
    assert outcomes.announced_since(start)[0] == "keep"


async def test_a_wait_looks_only_at_the_keys_each_wake_up_announced(
    controller: Controller, raw: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait for N keys costs O(N) in all, not O(N) per wake-up (that made 30,000 keys cost minutes)."""
    n = 1000
    keys = await controller.push_tasks([{"x": i} for i in range(n)])
    calls = {"closed": 0, "wake-ups": 0}
    closed, announced_since = Outcomes.closed, Outcomes.announced_since

    def counting_closed(self: Outcomes, key: str, after: int) -> Any:
        calls["closed"] += 1
        return closed(self, key, after)

    def counting_since(self: Outcomes, after: int) -> list[str]:
        calls["wake-ups"] += 1
        return announced_since(self, after)

    monkeypatch.setattr(Outcomes, "closed", counting_closed)
    monkeypatch.setattr(Outcomes, "announced_since", counting_since)

    async def announce() -> None:
        for i, key in enumerate(keys):
            row = [b"xs", encode({"x": i}), b"ys", encode({"y": i})]
            message = b"F %d %s\n" % (i, key.encode()) + msgpack.packb([row])
            await raw.publish(controller._keys.results, message)
            if i % 10 == 9:
                await anyio.sleep(0.002)  # let the waiter wake up many times

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(announce)
            table = await controller.wait_for_tasks(keys, timeout=50, detect_lost_workers=False)
    assert table["y"] == list(range(n)) and set(table["state"]) == {"finished"}
    assert calls["closed"] <= n  # each announced key looked at once
    assert calls["wake-ups"] >= 20  # many wake-ups, each by announcements only


# -- the scripts --------------------------------------------------------------------------------


async def announcement_of(store: Store, action: Any) -> Announcement:
    pubsub = store.client.pubsub()
    await pubsub.subscribe(store.keys.results)
    await pubsub.get_message(timeout=5)
    try:
        await action()
        with anyio.fail_after(5):
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if msg is not None and (found := parse(bytes(msg["data"]))) is not None:
                    return found
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_batch_of_large_rows_announces_keys_only(
    controller: Controller, config: RedisConfig, network_id: str, store: Store
) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}])
    async with Worker(network_id, config=config) as worker:
        await worker.pop_tasks(2, timeout=5)
        small = await announcement_of(store, lambda: worker.finish_tasks([keys[0]], [{"y": 1}]))
        large = await announcement_of(store, lambda: worker.finish_tasks([keys[1]], [{"y": "x" * 5000}]))
    assert small.rows is not None and len(small.rows) == 1
    assert large.keys == [keys[1].encode()] and large.rows is None


# -- the cache and the waits ------------------------------------------------------------------


async def test_the_cache_takes_carried_rows_instead_of_reading(
    controller: Controller, raw: redis.asyncio.Redis
) -> None:
    """A row that came with its announcement is not read again (here it differs from Redis to tell)."""
    [key] = await controller.push_finished_tasks([{"x": 1}], [{"y": 1}])
    [other] = await controller.push_finished_tasks([{"x": 2}], [{"y": 2}])
    cache = controller._reads.cache
    cache.listening += 1
    try:
        carried = [b"xs", encode({"x": 1}), b"ys", encode({"y": 99})]
        cache.announce(0, [key.encode(), other.encode()], rows=None)
        cache.announce(0, [key.encode()], rows=[carried])
        assert await cache.update(announced_only=True) == 2
    finally:
        cache.listening -= 1
    rows = cache.take_new()
    assert [(r["key"], r["y"]) for r in rows] == [(key, 99), (other, 2)]


async def test_a_wake_by_announcements_only_closes_the_announced_keys_without_a_lookup(
    controller: Controller, raw: redis.asyncio.Redis
) -> None:
    """The waiter trusts an announcement: a key announced finished (but still queued) closes."""
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}])
    row = [b"xs", encode({"x": 1}), b"ys", encode({"y": 5})]
    got: list[dict[str, Any]] = []

    async def announce() -> None:
        await anyio.sleep(0.2)
        await raw.publish(controller._keys.results, b"F 0 " + keys[0].encode() + b"\n" + msgpack.packb([row]))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(announce)
            with pytest.raises(TaskTimeoutError, match="1 of 2 tasks still open"):
                async for found in controller.as_completed(keys, timeout=1, detect_lost_workers=False):
                    got.append(found)
    assert [(r["key"], r["state"], r["y"]) for r in got] == [(keys[0], "finished", 5)]


async def test_large_results_are_read_when_their_announcement_has_no_rows(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}])

    async def work() -> None:
        async with Worker(network_id, config=config) as worker:
            await worker.pop_tasks(2, timeout=5)
            await anyio.sleep(0.2)
            await worker.finish_tasks(keys, [{"y": "a" * 5000}, {"y": "b"}])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            rows = [row async for row in controller.as_completed(keys, timeout=5)]
            table = await controller.wait_for_tasks(keys, timeout=5)
    assert sorted(len(r["y"]) for r in rows) == [1, 5000]
    assert [len(y) for y in table["y"]] == [5000, 1]


async def test_a_reset_wakes_a_waiter_without_lost_detection_or_timeout(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    """Only a look at Redis tells that keys are gone: a reset says so on the events channel."""
    keys = await controller.push_tasks([{"x": 1}])
    async with Worker(network_id, config=config) as worker:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def reset_soon() -> None:
                    await anyio.sleep(0.3)
                    await controller.reset(workers=False)

                tg.start_soon(reset_soon)
                with pytest.raises(UnknownTaskError):
                    await worker.wait_for_tasks(keys, timeout=None)
