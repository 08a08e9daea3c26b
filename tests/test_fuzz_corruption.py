"""A seeded fuzz run: 1,000+ random corruptions of a live network (issue 8, point 1).

While two worker processes and two in-process workers run tasks, the test
corrupts random task hashes and state collections through a raw client:
garbage bytes, values of the wrong msgpack type, empty and missing fields,
unknown fields, large fields, a key queued twice, a key queued while it
runs, finished or failed (two states), task keys of the wrong Redis type,
and finished tasks' rows (garbage, or rows of bad fields). Afterwards it
checks:

- 0 worker crashes: every worker is still registered running, every worker
  process lives, every in-process worker loop still runs;
- 0 tasks in no state: every key of the network's creation list is in
  exactly one state;
- 0 tasks recorded twice: the finished list has no duplicates, no key is both
  finished and failed;
- every good (never corrupted) task finished with the right result;
- every read of the network works and returns a row per task hash.

The generator is ``random.Random(SEED)``; the timing of workers makes each
run differ in which state a corrupted task was in. Run with ``-s`` to see the
counts per kind.
"""

from __future__ import annotations

import collections
import math
import random
from typing import Any

import anyio
import msgpack  # type: ignore[import-untyped]
import pytest
import redis.asyncio
import redis.exceptions

from rushpy import Controller, RedisConfig, Worker, run_function
from rushpy.codec import encode
from rushpy.keys import Keys
from rushpy.models import TaskState
from rushpy.store import Store
from tests import funcs

pytestmark = pytest.mark.usefixtures("anyio_backend")

SEED = 20261201
WAVES = 8
TASKS_PER_WAVE = 60
CORRUPTIONS_PER_WAVE = 130
DURATION = 0.004
"""Seconds each task sleeps, so the queue holds tasks while they are corrupted."""
LARGE = 1_500_000
"""Bytes of a large field."""

FIELDS = (
    "xs",
    "xs_extra",
    "ys",
    "ys_extra",
    "condition",
    "conditions",
    "attempts",
    "max_retries",
    "timeout",
    "seed",
    "worker_id",
    "created_at",
    "started_at",
    "finished_at",
    "claim",
    "done",
)
INT_FIELDS = frozenset({"attempts", "max_retries", "seed"})

KINDS = (
    "garbage",
    "wrong_type",
    "empty",
    "missing",
    "unknown",
    "large",
    "queued_twice",
    "two_states",
    "wrong_redis_type",
    "row",
)
WEIGHTS = (20, 25, 8, 10, 8, 2, 10, 10, 4, 8)


def wrong_value(rng: random.Random, field: str) -> bytes:
    """A valid msgpack value of a type the field never holds.

    Integer fields never get a non-negative integer: a different attempt
    count is a stale attempt to the fence of ``complete.lua``, not bad data
    (see the report: such a task stays running until its worker exits).
    """
    choices: list[Any] = [
        "text",
        [1, 2],
        {"nested": [1]},
        None,
        True,
        2.5,
        -7,
        b"\x00bytes",
        math.nan,
        msgpack.ExtType(42, b"ext"),
        {7: "int key"},
    ]
    if field not in INT_FIELDS:
        choices.append(2**40)
    value = rng.choice(choices)
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def garbage(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


class Fuzzer:
    """Applies random corruptions and counts them per kind."""

    def __init__(self, raw: redis.asyncio.Redis, keys: Keys, worker_ids: list[str]) -> None:
        self.raw = raw
        self.keys = keys
        self.worker_ids = worker_ids
        self.rng = random.Random(SEED)
        self.counts: collections.Counter[str] = collections.Counter()
        self.touched: set[str] = set()

    async def corrupt(self, task_keys: list[str]) -> None:
        rng = self.rng
        kind = rng.choices(KINDS, WEIGHTS)[0]
        key = rng.choice(task_keys)
        hash_key = self.keys.task(key)
        field = rng.choice(FIELDS)
        self.counts[kind] += 1
        if kind not in ("queued_twice", "two_states"):
            # Duplicated queue entries do not change the task's data: it stays good.
            self.touched.add(key)
        try:
            await self._apply(kind, key, hash_key, field)
        except redis.exceptions.ResponseError:
            # The task key holds another Redis type already (an earlier corruption).
            self.counts["on_wrong_type"] += 1

    async def _apply(self, kind: str, key: str, hash_key: str, field: str) -> None:
        rng, raw = self.rng, self.raw
        if kind == "garbage":
            await raw.hset(hash_key, field, garbage(rng, rng.randint(1, 24)))
        elif kind == "wrong_type":
            await raw.hset(hash_key, field, wrong_value(rng, field))
        elif kind == "empty":
            await raw.hset(hash_key, field, b"")
        elif kind == "missing":
            await raw.hdel(hash_key, field)
        elif kind == "unknown":
            name = rng.choice([b"extra_field", b"\xff\xfe", b"", b"error"])
            value = rng.choice([encode({"a": 1}), garbage(rng, 8)])
            await raw.hset(hash_key, name, value)
        elif kind == "large":
            value = rng.choice([garbage(rng, 64) * (LARGE // 64), encode({"x": "a" * LARGE})])
            await raw.hset(hash_key, rng.choice(("xs", "ys", "xs_extra", "extra")), value)
        elif kind == "queued_twice":
            await raw.rpush(self.keys.queued, key)
        elif kind == "two_states":
            # The key goes to a queue whatever state it is in (running, finished, failed).
            queue = rng.choice([self.keys.queued, *(self.keys.priority_queue(w) for w in self.worker_ids)])
            await (raw.lpush if rng.random() < 0.5 else raw.rpush)(queue, key)
        elif kind == "row":
            # A finished task's row (stored_rows): bytes that are not a row, or a row of bad fields.
            if not await raw.hexists(self.keys.rows, key):
                self.counts["row_of_unfinished"] += 1  # counted, nothing written
                return
            bad = rng.choice(
                [
                    garbage(rng, rng.randint(1, 24)),
                    msgpack.packb({"xs": 1}),
                    msgpack.packb([wrong_value(rng, "ys")], use_bin_type=False),
                    msgpack.packb([garbage(rng, 8), garbage(rng, 8)], use_bin_type=False),
                ]
            )
            await raw.hset(self.keys.rows, key, bad)
        else:  # wrong_redis_type
            await raw.delete(hash_key)
            choice = rng.randrange(3)
            if choice == 0:
                await raw.set(hash_key, b"garbage")
            elif choice == 1:
                await raw.rpush(hash_key, b"a", b"b")
            else:
                await raw.sadd(hash_key, b"a")


async def run_worker(worker: Worker, crashes: list[BaseException]) -> None:
    try:
        await run_function(worker, funcs.sleepy)
    except Exception as exc:  # a crash is what this test counts
        crashes.append(exc)


async def settled(store: Store, keys: list[str]) -> bool:
    snap = await store.reads.snapshot()
    done = set(snap[TaskState.FINISHED]) | set(snap[TaskState.FAILED])
    return all(k in done for k in keys) and not snap[TaskState.QUEUED] and not snap[TaskState.RUNNING]


async def test_fuzz_corruption(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    raw: redis.asyncio.Redis,
    store: Store,
) -> None:
    keys = Keys(network_id)
    process_ids = await controller.start_local_workers(2, fun=funcs.sleepy)
    crashes: list[BaseException] = []
    pushed: list[str] = []
    async with Worker(network_id, config=config) as w1, Worker(network_id, config=config) as w2:
        fuzzer = Fuzzer(raw, keys, [*process_ids, w1.worker_id, w2.worker_id])
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_worker, w1, crashes)
            tg.start_soon(run_worker, w2, crashes)
            await controller.wait_for_workers(4, timeout=30)
            with anyio.fail_after(60):
                for wave in range(WAVES):
                    base = wave * TASKS_PER_WAVE
                    xss = [{"x": base + i, "duration": DURATION} for i in range(TASKS_PER_WAVE)]
                    pushed += await controller.push_tasks(xss, seeds=list(range(base, base + TASKS_PER_WAVE)))
                    for i in range(CORRUPTIONS_PER_WAVE):
                        await fuzzer.corrupt(pushed[-TASKS_PER_WAVE:] if i % 2 else pushed)
                        if i % 10 == 0:
                            await anyio.sleep(0.005)
            # Every task comes to rest; a crashed pool would leave tasks open here.
            with anyio.move_on_after(20):
                while not await settled(store, pushed):
                    await anyio.sleep(0.1)
            snap = await store.reads.snapshot()
            all_keys = await store.reads.all_keys()
            registered = set(await store.workers.worker_ids())
            from rushpy.models import WorkerState

            running_workers = set(await store.workers.worker_ids(WorkerState.RUNNING))
            alive = [wid for wid, w in controller.local_workers.items() if w.process.poll() is None]
            in_process_up = not (w1.terminated or w2.terminated)
            # Reads of the whole network: none raises; each existing hash gives a row.
            tables: dict[str, Any] = {}
            read_errors: list[str] = []
            for name in ("fetch_tasks", "fetch_failed_tasks", "fetch_finished_tasks", "fetch_queued_tasks"):
                try:
                    tables[name] = await getattr(controller, name)()
                except Exception as exc:  # counted: no read may raise
                    tables[name] = []
                    read_errors.append(f"{name}: {exc!r:.100}")
            existing = 0
            for k in all_keys:  # a task hash, or a finished task's row
                existing += await raw.exists(keys.task(k)) or await raw.hexists(keys.rows, k)
            await controller.stop_workers("terminate", [w1.worker_id, w2.worker_id])

    finished = snap[TaskState.FINISHED]
    failed = set(snap[TaskState.FAILED])
    states: collections.Counter[str] = collections.Counter()
    for state_keys in snap.values():
        states.update(set(state_keys))
    in_no_state = [k for k in all_keys if states[k] == 0]
    in_two_states = [k for k in all_keys if states[k] > 1]
    duplicates = [k for k, n in collections.Counter(finished).items() if n > 1]
    both = sorted(set(finished) & failed)
    good = [k for k in pushed if k not in fuzzer.touched]
    rows = {r["key"]: r for r in tables["fetch_tasks"]}
    good_not_finished = [k for k in good if k not in set(finished) or rows.get(k, {}).get("y") is None]
    failed_rows = tables["fetch_failed_tasks"]
    corrupt_failed = sum(1 for r in failed_rows if (r.get("condition") or {}).get("type") == "CorruptTask")
    worker_crashes = (
        len(crashes)
        + len(set(process_ids) - set(alive))
        + len((registered - running_workers) & set(process_ids))
        + (0 if in_process_up else 1)
    )
    n_errors = sum(1 for r in rows.values() if r.get("error"))
    print(
        f"\nfuzz: {sum(fuzzer.counts.values())} corruptions {dict(sorted(fuzzer.counts.items()))}; "
        f"{len(pushed)} tasks, {len(good)} never corrupted; finished {len(finished)}, failed {len(failed)} "
        f"({corrupt_failed} CorruptTask); rows with an error {n_errors}; "
        f"worker crashes {worker_crashes} {[repr(c)[:120] for c in crashes]}; "
        f"in no state {len(in_no_state)}; "
        f"in two states {len(in_two_states)}; recorded twice {len(duplicates) + len(both)}; "
        f"good tasks not finished {len(good_not_finished)}; reads that raised {read_errors}"
    )
    assert sum(n for kind, n in fuzzer.counts.items() if kind in KINDS) >= 1000
    assert worker_crashes == 0, crashes
    assert in_no_state == []
    assert in_two_states == [], [(k, [s for s, ks in snap.items() if k in ks]) for k in in_two_states]
    assert duplicates == [] and both == []
    assert good_not_finished == []
    for k in good:
        assert rows[k]["y"] == rows[k]["x"]
    assert read_errors == []
    assert len(rows) == existing
