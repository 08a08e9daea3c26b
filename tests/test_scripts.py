"""Every Lua transition, called through its typed wrapper, against the real server.

Each test drives one branch of one script (including each first-writer-wins
race and each lost-reply token branch) and fails within seconds when that
branch is broken.
"""

from __future__ import annotations

import hashlib
from typing import Any

import anyio
import pytest

from rushpy.announcements import parse as parse_announcement
from rushpy.codec import decode, encode
from rushpy.errors import ServerError, WorkerNotRunningError
from rushpy.models import Condition, PoppedTask, WorkerState
from rushpy.scripts import PRELUDE, SCRIPT_NAMES, script
from rushpy.scripts import calls as sc
from rushpy.store import CHUNK, Store
from tests.helpers import stored_fields

pytestmark = pytest.mark.anyio

W = "worker-1"
BOOM = Condition("ValueError", "boom")




# -- helpers ----------------------------------------------------------------------------------


async def lst(store: Store, name: str) -> list[str]:
    return sc.text(await store.client.lrange(name, 0, -1))


async def members(store: Store, name: str) -> set[str]:
    return set(sc.text(await store.client.smembers(name)))


async def field(store: Store, key: str, name: str) -> Any:
    raw = (await stored_fields(store.client, store.keys, key)).get(name)
    return None if raw is None else decode(raw)


async def queued(store: Store, n: int = 1, **fields: Any) -> list[str]:
    return await store.tasks.create_tasks("queued", [{"xs": {"i": i}, **fields} for i in range(n)])


async def register(store: Store, worker_id: str = W) -> None:
    await store.workers.register_worker(worker_id, {"pid": 1, "hostname": "h"})


async def running(store: Store, n: int = 1, worker_id: str = W, **fields: Any) -> list[str]:
    """Queue ``n`` tasks, pop and claim them on a registered worker."""
    await register(store, worker_id)
    keys = await queued(store, n, **fields)
    assert await store.tasks.pop_keys(worker_id, n) == keys
    assert [t.key for t in await store.tasks.claim(worker_id, keys)] == keys
    return keys


class Events:
    """Messages published on the network's events and results channels, in publish order."""

    def __init__(self, store: Store) -> None:
        self.pubsub = store.client.pubsub()
        self.channels = [store.keys.events, store.keys.results]

    async def __aenter__(self) -> Events:
        await self.pubsub.subscribe(*self.channels)
        for _ in self.channels:
            await self.pubsub.get_message(timeout=5)  # the subscription confirmations
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]

    async def next(self) -> str:
        """The next message without the rows an announcement may carry (after a newline)."""
        return (await self.next_raw()).partition(b"\n")[0].decode()

    async def next_raw(self) -> bytes:
        with anyio.fail_after(5):
            while True:
                msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if msg is not None:
                    return bytes(msg["data"])

    async def none(self) -> bool:
        return await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None


# -- loading ------------------------------------------------------------------------------------


def test_every_script_runs_with_the_prelude_and_by_the_sha_of_the_whole() -> None:
    prelude = script(PRELUDE).source.split("\n-- ---")[0]
    for name in SCRIPT_NAMES:
        s = script(name)
        assert s.source.startswith(prelude)
        assert s.sha == hashlib.sha1(s.source.encode()).hexdigest()


async def test_a_flushed_script_cache_is_reloaded_for_single_and_batched_calls(store: Store) -> None:
    keys = await queued(store, 2)
    await store.client.script_flush()
    assert await store.reads.read_tasks(keys[:1]) != [None]
    await store.client.script_flush()
    assert len(await store.tasks.create_tasks("queued", [{"xs": {"i": i}} for i in range(CHUNK + 1)])) > CHUNK


async def test_a_script_error_is_a_server_error(store: Store) -> None:
    await store.client.set(store.keys.queued, b"not a list")
    with pytest.raises(ServerError, match=r"pop\.lua"):
        await store.tasks.pop_keys(W, 1)
    with pytest.raises(ServerError, match=r"create\.lua"):
        await store.tasks.create_tasks("queued", [{"xs": {}}] * (CHUNK + 1))


# -- create, running ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["queued", "finished", "failed"])
async def test_create_puts_tasks_in_their_state_and_first_writer_wins(store: Store, state: Any) -> None:
    rows = [("k1", [encode({"x": 1})]), ("k2", [b""])]
    call = sc.create(store.keys, state, rows, names=["xs"], common=[("created_at", sc.now())])
    assert await call.run(store.client) == 2
    assert await call.run(store.client) == 0  # hashes exist: nothing is created twice
    assert await lst(store, store.keys.all_tasks) == ["k1", "k2"]
    if state == "failed":
        assert await members(store, store.keys.failed) == {"k1", "k2"}
    else:
        dest = store.keys.queued if state == "queued" else store.keys.finished
        assert await lst(store, dest) == ["k1", "k2"]
    assert await field(store, "k1", "xs") == {"x": 1}
    assert await field(store, "k2", "xs") is None  # "" leaves a field unset


async def test_create_announces_finished_tasks_with_their_index(store: Store) -> None:
    await store.tasks.create_tasks("finished", [{"xs": {}, "ys": {}}] * 2)
    async with Events(store) as events:
        keys = await store.tasks.create_tasks("finished", [{"xs": {}, "ys": {}}] * 3)
        assert await events.next() == "F 2 " + " ".join(keys)
        failed = await store.tasks.create_tasks("failed", [{"xs": {}, "condition": BOOM.to_dict()}])
        assert await events.next() == f"X 0 {failed[0]}"  # index in the failed log
        await queued(store)
        assert await events.none()


async def test_create_queued_on_another_list_with_common_fields(store: Store) -> None:
    keys = await store.tasks.create_tasks(
        "queued", [{"xs": {"i": 1}}], queue=store.keys.priority_queue(W), common={"max_retries": 3}
    )
    assert await lst(store, store.keys.priority_queue(W)) == keys
    assert await field(store, keys[0], "max_retries") == 3
    assert await field(store, keys[0], "created_at") is not None


async def test_running_creates_tasks_running_on_the_worker_first_writer_wins(store: Store) -> None:
    call = sc.running(store.keys, W, [("k1", encode({"x": 1}), b""), ("k2", encode({}), encode({"e": 1}))])
    assert await call.run(store.client) == 2
    assert await call.run(store.client) == 0
    assert await members(store, store.keys.running) == {"k1", "k2"}
    assert await members(store, store.keys.worker_running(W)) == {"k1", "k2"}
    assert await lst(store, store.keys.all_tasks) == ["k1", "k2"]
    assert await field(store, "k1", "attempts") == 1
    assert await field(store, "k1", "worker_id") == W
    assert await field(store, "k1", "xs_extra") is None
    assert await field(store, "k2", "xs_extra") == {"e": 1}


# -- pop, release -------------------------------------------------------------------------------


async def test_pop_takes_pending_then_priority_then_shared_up_to_n(store: Store) -> None:
    shared = await queued(store, 3)
    prio = await store.tasks.create_tasks("queued", [{"xs": {}}] * 2, queue=store.keys.priority_queue(W))
    await store.client.rpush(store.keys.pending(W), "p")
    assert await store.tasks.pop_keys(W, 2) == ["p", prio[0]]
    assert await store.tasks.pop_keys(W, 4) == ["p", prio[0], prio[1], shared[0]]
    assert await lst(store, store.keys.queued) == shared[1:]
    assert await store.tasks.pop_keys("idle", 3) == shared[1:]
    assert await store.tasks.pop_keys("nobody", 3) == []


async def test_release_puts_pending_keys_back_at_the_head_in_order(store: Store) -> None:
    keys = await queued(store, 3)
    assert await store.tasks.pop_keys(W, 2) == keys[:2]
    assert await store.tasks.release_pending(W) == 2
    assert await lst(store, store.keys.queued) == keys
    assert await store.tasks.release_pending(W) == 0


# -- claim --------------------------------------------------------------------------------------


async def test_claim_moves_pending_to_running_and_counts_an_attempt(store: Store) -> None:
    await register(store)
    [key] = await queued(store, seed=7, timeout=2.5)
    await store.tasks.pop_keys(W, 1)
    [task] = await store.tasks.claim(W, [key, "not-pending"])
    assert isinstance(task, PoppedTask)
    assert (task.key, task.xs, task.attempt, task.seed, task.timeout) == (key, {"i": 0}, 1, 7, 2.5)
    assert await members(store, store.keys.running) == {key}
    assert await members(store, store.keys.worker_running(W)) == {key}
    assert await lst(store, store.keys.pending(W)) == []
    assert await field(store, key, "worker_id") == W
    # A retry: the next claim is the second attempt.
    await store.tasks.complete(W, "failed", [(key, 1, {"condition": BOOM.to_dict()})])
    assert await field(store, key, "attempts") == 1


async def test_claim_by_a_worker_that_is_not_running_claims_nothing(store: Store) -> None:
    await register(store)
    [key] = await queued(store)
    await store.tasks.pop_keys(W, 1)
    assert await store.workers.set_worker_state(W, WorkerState.LOST)
    with pytest.raises(WorkerNotRunningError, match=W):
        await store.tasks.claim(W, [key])
    assert await lst(store, store.keys.pending(W)) == [key]
    assert await members(store, store.keys.running) == set()
    assert await field(store, key, "attempts") is None


async def test_claim_repeated_with_its_token_returns_the_same_tasks_once_counted(store: Store) -> None:
    await register(store)
    keys = await queued(store, 2)
    await store.tasks.pop_keys(W, 2)
    first = await sc.claim(store.keys, W, keys, token="t1").run(store.client)
    again = await sc.claim(store.keys, W, keys, token="t1").run(store.client)  # the reply was lost
    assert first is not None and again == first
    assert [t.attempt for t in again if t] == [1, 1]
    assert [await field(store, k, "attempts") for k in keys] == [1, 1]
    # Another call (another token) gets nothing: the keys are no longer pending.
    assert await sc.claim(store.keys, W, keys, token="t2").run(store.client) == [None, None]


async def test_claim_token_does_not_return_a_task_the_worker_no_longer_runs(store: Store) -> None:
    await register(store)
    [key] = await queued(store)
    await store.tasks.pop_keys(W, 1)
    assert await sc.claim(store.keys, W, [key], token="t1").run(store.client) is not None
    await store.tasks.cancel([key], Condition("Cancelled", "by test"))
    assert await sc.claim(store.keys, W, [key], token="t1").run(store.client) == [None]


# -- complete -----------------------------------------------------------------------------------


async def test_complete_finishes_and_announces_the_index(store: Store) -> None:
    await store.tasks.create_tasks("finished", [{"xs": {}, "ys": {}}])
    keys = await running(store, 2)
    async with Events(store) as events:
        flags = await store.tasks.complete(
            W,
            "finished",
            [(keys[0], 1, {"ys": {"y": 1}}), (keys[1], None, {"ys": {"y": 2}, "ys_extra": {"e": 1}})],
        )
        assert flags == [1, 1]
        message = parse_announcement(await events.next_raw())
    assert message is not None and (message.failed, message.first) == (False, 1)
    assert message.keys == [k.encode() for k in keys]
    # The rows travel with the announcement: each task's fields as stored now (in its row).
    stored = [await stored_fields(store.client, store.keys, k) for k in keys]
    assert message.rows is not None
    assert [dict(zip(r[::2], r[1::2], strict=True)) for r in message.rows] == [
        {n.encode(): v for n, v in h.items()} for h in stored
    ]
    assert (await lst(store, store.keys.finished))[1:] == keys
    assert await members(store, store.keys.running) == set()
    assert await members(store, store.keys.worker_running(W)) == set()
    assert await field(store, keys[1], "ys_extra") == {"e": 1}
    assert await field(store, keys[0], "ys_extra") is None
    assert await field(store, keys[0], "finished_at") is not None


async def test_complete_failure_without_attempts_left_fails_with_history(store: Store) -> None:
    [key] = await running(store)
    async with Events(store) as events:
        assert await store.tasks.complete(W, "failed", [(key, 1, {"condition": BOOM.to_dict()})]) == [1]
        assert await events.next() == f"X 0 {key}"
    assert await lst(store, store.keys.failed_log) == [key]
    assert await members(store, store.keys.failed) == {key}
    assert await field(store, key, "condition") == BOOM.to_dict()
    assert await field(store, key, "conditions") == [BOOM.to_dict()]
    assert await field(store, key, "finished_at") is not None


async def test_complete_failure_with_attempts_left_goes_to_the_queue_tail(store: Store) -> None:
    [key] = await running(store, max_retries=1)
    [other] = await queued(store)
    async with Events(store) as events:
        assert await store.tasks.complete(W, "failed", [(key, 1, {"condition": BOOM.to_dict()})]) == [2]
        assert await events.none()
    assert await lst(store, store.keys.queued) == [other, key]
    assert await field(store, key, "condition") is None
    assert await field(store, key, "conditions") == [BOOM.to_dict()]
    assert await field(store, key, "finished_at") is None
    # Second attempt fails too: attempts (2) > max_retries (1).
    assert await store.tasks.pop_keys(W, 2) == [other, key]
    await store.tasks.claim(W, [key])
    assert await store.tasks.complete(W, "failed", [(key, 2, {"condition": BOOM.to_dict()})]) == [1]
    assert await field(store, key, "conditions") == [BOOM.to_dict()] * 2


async def test_complete_of_a_stale_attempt_is_discarded(store: Store) -> None:
    [key] = await running(store)
    # The task was claimed again since (attempt 2): reports on attempt 1 are stale.
    await store.client.hset(store.keys.task(key), "attempts", encode(2))
    assert await store.tasks.complete(W, "finished", [(key, 1, {"ys": {}})]) == [0]
    assert await store.tasks.complete(W, "failed", [(key, 0, {"condition": BOOM.to_dict()})]) == [0]
    assert await members(store, store.keys.running) == {key}
    assert await members(store, store.keys.worker_running(W)) == {key}


@pytest.mark.parametrize("state", ["finished", "failed"])
async def test_complete_repeated_with_its_token_reports_the_first_run_and_records_once(
    store: Store, state: Any
) -> None:
    keys = await running(store, 2)
    fields = {"ys": {"y": 1}} if state == "finished" else {"condition": BOOM.to_dict()}
    names = ["ys"] if state == "finished" else ["condition"]
    value = encode(fields[names[0]])
    call = sc.complete(store.keys, W, state, [(k, 1, [value]) for k in keys], names=names, token="t1")
    async with Events(store) as events:
        assert await call.run(store.client) == [1, 1]
        await events.next()
        assert await call.run(store.client) == [1, 1]  # the reply was lost: same answer
        assert await events.none()  # and no second announcement
    assert await field(store, keys[0], "conditions") == (None if state == "finished" else [BOOM.to_dict()])
    if state == "finished":
        assert await lst(store, store.keys.finished) == keys
    # Another call that reports on the same tasks is discarded.
    other = sc.complete(store.keys, W, state, [(k, 1, [value]) for k in keys], names=names, token="t2")
    assert await other.run(store.client) == [0, 0]


async def test_complete_repeated_after_a_retry_reports_recorded(store: Store) -> None:
    [key] = await running(store, max_retries=1)
    call = sc.complete(
        store.keys, W, "failed", [(key, 1, [encode(BOOM.to_dict())])], names=["condition"], token="t"
    )
    assert await call.run(store.client) == [2]
    assert await call.run(store.client) == [1]
    assert await lst(store, store.keys.queued) == [key]
    assert await field(store, key, "conditions") == [BOOM.to_dict()]


async def test_two_completes_of_one_task_first_writer_wins(store: Store) -> None:
    [key] = await running(store)
    assert await store.tasks.complete(W, "finished", [(key, 1, {"ys": {"y": 1}})]) == [1]
    assert await store.tasks.complete(W, "failed", [(key, 1, {"condition": BOOM.to_dict()})]) == [0]
    assert await store.tasks.complete(W, "finished", [(key, None, {"ys": {"y": 2}})]) == [0]
    assert await lst(store, store.keys.finished) == [key]
    assert await field(store, key, "ys") == {"y": 1}
    assert await members(store, store.keys.failed) == set()


async def test_complete_by_another_worker_is_discarded(store: Store) -> None:
    [key] = await running(store)
    assert await store.tasks.complete("other", "finished", [(key, 1, {"ys": {}})]) == [0]
    assert await members(store, store.keys.running) == {key}


async def test_complete_with_a_bad_condition_writes_nothing(store: Store) -> None:
    keys = await running(store, 2)
    items = [(keys[0], 1, [encode(BOOM.to_dict())]), (keys[1], 1, [b"\xc1"])]
    with pytest.raises(ServerError):
        await store.tasks.run(sc.complete(store.keys, W, "failed", items, names=["condition"], token="t"))
    assert await members(store, store.keys.running) == set(keys)
    assert await members(store, store.keys.worker_running(W)) == set(keys)


async def test_complete_in_many_chunks_in_one_pipeline(store: Store) -> None:
    n = CHUNK + 5
    keys = await running(store, n)
    flags = await store.tasks.complete(W, "finished", [(k, 1, {"ys": {"i": i}}) for i, k in enumerate(keys)])
    assert flags == [1] * n
    assert await lst(store, store.keys.finished) == keys


# -- requeue ------------------------------------------------------------------------------------


async def test_requeue_settles_pending_priority_and_running_tasks(store: Store) -> None:
    retried, failing = await running(store, 2)
    await store.client.hset(store.keys.task(retried), "max_retries", encode(1))
    shared = await queued(store, 3)
    assert await store.tasks.pop_keys(W, 2) == shared[:2]
    prio = await store.tasks.create_tasks("queued", [{"xs": {}}], queue=store.keys.priority_queue(W))
    lost = Condition("WorkerLost", f"worker {W} is gone")
    async with Events(store) as events:
        settled = await store.tasks.requeue_worker_tasks(W, lost)
        assert await events.next() == f"X 0 {failing}"
    assert await lst(store, store.keys.failed_log) == [failing]
    assert settled == sc.Requeued([retried], [failing], 3)
    assert await lst(store, store.keys.queued) == [retried, *shared, *prio]
    assert await members(store, store.keys.failed) == {failing}
    assert await field(store, failing, "condition") == lost.to_dict()
    assert await field(store, failing, "finished_at") is not None
    assert await field(store, retried, "conditions") == [lost.to_dict()]
    assert await field(store, retried, "condition") is None
    for name in (store.keys.running, store.keys.worker_running(W)):
        assert await members(store, name) == set()


async def test_requeue_after_complete_and_complete_after_requeue_first_writer_wins(store: Store) -> None:
    done, settled = await running(store, 2, max_retries=1)
    assert await store.tasks.complete(W, "finished", [(done, 1, {"ys": {}})]) == [1]
    # The worker's set was read before the complete: the key is passed anyway.
    call = sc.requeue(store.keys, W, [done, settled], Condition("WorkerLost", "gone"))
    assert await call.run(store.client) == sc.Requeued([settled], [], 0)
    assert await lst(store, store.keys.finished) == [done]
    assert await field(store, done, "conditions") is None
    assert await store.tasks.complete(W, "finished", [(settled, 1, {"ys": {}})]) == [0]
    assert await lst(store, store.keys.queued) == [settled]


# -- attempts default -----------------------------------------------------------------------------


async def test_attempts_default_to_zero_in_every_script(store: Store) -> None:
    """A hash without ``attempts`` was never claimed: 0 attempts, so one run is left at max_retries=0."""
    a, b = await running(store, 2)
    await store.client.hdel(store.keys.task(a), "attempts")
    await store.client.hdel(store.keys.task(b), "attempts")
    assert await store.tasks.complete(W, "failed", [(a, None, {"condition": BOOM.to_dict()})]) == [2]
    settled = await store.tasks.requeue_worker_tasks(W, Condition("WorkerLost", "gone"))
    assert settled.requeued == [b]
    [c] = await queued(store)
    await store.tasks.cancel([c], Condition("Cancelled", "before it started"))
    assert await store.tasks.retry([c], ignore_max_retries=False) == [c]


# -- cancel, dequeue ------------------------------------------------------------------------------


async def test_cancel_fails_queued_pending_and_running_tasks_and_leaves_finished(store: Store) -> None:
    run, done = await running(store, 2)
    await store.tasks.complete(W, "finished", [(done, 1, {"ys": {}})])
    shared = await queued(store, 3)
    assert await store.tasks.pop_keys(W, 1) == shared[:1]
    prio = await store.tasks.create_tasks("queued", [{"xs": {}}], queue=store.keys.priority_queue(W))
    cancelled = Condition("Cancelled", "by test")
    targets = [run, done, shared[0], shared[2], *prio, "unknown"]
    async with Events(store) as events:
        q, r = await store.tasks.cancel(targets, cancelled)
        assert await events.next() == f"C {run}"
    assert (sorted(q), r) == (sorted([shared[0], shared[2], *prio]), [run])
    assert await lst(store, store.keys.queued) == [shared[1]]
    assert await lst(store, store.keys.pending(W)) == []
    assert await lst(store, store.keys.priority_queue(W)) == []
    assert await members(store, store.keys.failed) == {run, shared[0], shared[2], *prio}
    assert await field(store, run, "conditions") == [cancelled.to_dict()]
    assert await lst(store, store.keys.finished) == [done]
    # cancel vs complete: the late result is discarded; a second cancel does nothing.
    assert await store.tasks.complete(W, "finished", [(run, 1, {"ys": {}})]) == [0]
    assert await store.tasks.cancel([run], cancelled) == ([], [])
    assert await field(store, run, "conditions") == [cancelled.to_dict()]


async def test_cancel_of_queued_tasks_only_publishes_x(store: Store) -> None:
    [key] = await queued(store)
    async with Events(store) as events:
        assert await store.tasks.cancel([key], Condition("Cancelled", "x")) == ([key], [])
        assert await events.next() == f"X 0 {key}"


async def test_dequeue_fails_queued_tasks_and_skips_popped_ones(store: Store) -> None:
    keys = await queued(store, 4)
    await store.tasks.pop_keys(W, 1)
    gone = Condition("Dequeued", "queue emptied")
    async with Events(store) as events:
        assert await store.tasks.dequeue(store.keys.queued, gone, keys[:3]) == 2
        assert await events.next() == f"X 0 {keys[1]} {keys[2]}"
    assert await lst(store, store.keys.failed_log) == keys[1:3]
    assert await lst(store, store.keys.queued) == [keys[3]]
    assert await members(store, store.keys.failed) == set(keys[1:3])
    assert await field(store, keys[1], "conditions") == [gone.to_dict()]
    assert await store.tasks.dequeue(store.keys.queued, gone) == 1
    assert await store.tasks.dequeue(store.keys.queued, gone) == 0


# -- retry ----------------------------------------------------------------------------------------


async def test_retry_requeues_failed_tasks_with_attempts_left_or_when_ignoring(store: Store) -> None:
    left, used = await running(store, 2)
    await store.client.hset(store.keys.task(left), "max_retries", encode(2))
    await store.client.hset(store.keys.task(left), "seed", encode(1))
    await store.tasks.cancel([left, used], Condition("Cancelled", "x"))
    [other] = await queued(store)
    assert await store.tasks.retry([left, used], ignore_max_retries=False, seeds=[5, 6]) == [left]
    assert await lst(store, store.keys.queued) == [other, left]
    assert await field(store, left, "seed") == 5
    assert await field(store, left, "condition") is None
    assert await field(store, left, "finished_at") is None
    assert await field(store, left, "conditions") is not None
    assert await field(store, left, "attempts") == 1
    assert await store.tasks.retry([used], ignore_max_retries=True, seeds=[None]) == [used]
    assert await field(store, used, "seed") is None
    assert await members(store, store.keys.failed) == set()


async def test_retry_of_a_task_that_is_not_failed_does_nothing(store: Store) -> None:
    run, done = await running(store, 2)
    await store.tasks.complete(W, "finished", [(done, 1, {"ys": {}})])
    [waiting] = await queued(store)
    assert await store.tasks.retry([run, done, waiting, "unknown"], ignore_max_retries=True) == []
    assert await lst(store, store.keys.queued) == [waiting]
    assert await members(store, store.keys.running) == {run}


# -- workers --------------------------------------------------------------------------------------


async def test_worker_state_moves_only_a_running_worker(store: Store) -> None:
    await register(store)
    assert await store.workers.set_worker_state(W, WorkerState.LOST)
    assert await members(store, store.keys.lost_workers) == {W}
    assert await members(store, store.keys.running_workers) == set()
    assert not await store.workers.set_worker_state(W, WorkerState.TERMINATED)
    assert await members(store, store.keys.terminated_workers) == set()
    [info] = await store.workers.worker_infos([W])
    assert info.state == WorkerState.LOST
    assert not await store.workers.set_worker_state("never-registered", WorkerState.KILLED)
    assert not await store.client.exists(store.keys.worker("never-registered"))


async def test_heartbeat_refreshes_a_running_worker_and_never_resurrects_a_lost_one(store: Store) -> None:
    await register(store)
    assert await store.workers.beat(W, 30)
    assert 0 < await store.client.pttl(store.keys.heartbeat(W)) <= 30_000
    await store.workers.set_worker_state(W, WorkerState.LOST)
    await store.client.delete(store.keys.heartbeat(W))  # it expired
    assert not await store.workers.beat(W, 30)
    assert not await store.client.exists(store.keys.heartbeat(W))


# -- read -----------------------------------------------------------------------------------------


async def test_read_returns_decoded_hashes_in_order_and_none_for_missing(store: Store) -> None:
    keys = await queued(store, CHUNK + 2)
    rows = await store.reads.read_tasks([keys[-1], "missing", *keys[:-1]])
    assert rows[1] is None
    assert rows[0] is not None and rows[0]["xs"] == {"i": CHUNK + 1}
    assert [r["xs"]["i"] for r in rows[2:] if r] == list(range(CHUNK + 1))


async def test_a_finished_task_keeps_one_token_field(store: Store) -> None:
    """Memory per finished task: the result's token replaces the claim's, and no 'done' field is written."""
    [key] = await running(store)
    call = sc.complete(
        store.keys, W, "finished", [(key, 1, [encode({"y": 1})])], names=["ys"], token="t-done"
    )
    assert await call.run(store.client) == [1]
    stored = await stored_fields(store.client, store.keys, key)
    assert decode(stored["claim"]) == "t-done"
    assert "done" not in stored
    assert await call.run(store.client) == [1]  # a repeat (lost reply) still finds it


async def test_complete_repeated_after_a_retry_and_a_new_claim_reports_recorded(store: Store) -> None:
    """A failure's token outlives the claim of the retry, which overwrites the 'claim' field."""
    [key] = await running(store, max_retries=1)
    call = sc.complete(
        store.keys, W, "failed", [(key, 1, [encode(BOOM.to_dict())])], names=["condition"], token="t-fail"
    )
    assert await call.run(store.client) == [2]
    assert await store.tasks.pop_keys(W, 1) == [key]
    assert [t.attempt for t in await store.tasks.claim(W, [key], token="t-claim-2")] == [2]
    assert await call.run(store.client) == [1]  # the reply of the failure was lost: recorded


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_the_cluster_variant_of_each_script_publishes_on_sharded_channels(name: str) -> None:
    """Every publish goes through the prelude's PUBLISH, which the cluster variant makes SPUBLISH."""
    plain, sharded = script(name), script(name, sharded=True)
    assert (plain.sharded, sharded.sharded) == (False, True)
    assert plain.variant(True) is sharded and sharded.variant(False) is plain
    assert sharded.sha != plain.sha
    back = sharded.source.replace('local PUBLISH = "SPUBLISH"', 'local PUBLISH = "PUBLISH"', 1)
    assert back == plain.source
    # No script publishes around the switch.
    assert plain.source.count('"PUBLISH"') == 1 and '"SPUBLISH"' not in plain.source
