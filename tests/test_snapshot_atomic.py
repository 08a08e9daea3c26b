"""Snapshots and counts are one atomic read, even while workers register (issue 8, point 4).

``snapshot()`` and ``status()`` must read the worker list and every worker's
queues in one consistent view: a worker that registers and takes a queued key
into its pending list between the two reads must not hide that key.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from rushpy import RedisConfig
from rushpy.connection import create_client
from rushpy.errors import ConnectionFailedError, ServerError
from rushpy.keys import Keys
from rushpy.models import TaskState
from rushpy.store import Store

pytestmark = pytest.mark.anyio

N_KEYS = 300


def _register_and_take(config: RedisConfig, keys: Keys, n: int) -> None:
    """Register ``n`` workers one after another; each moves one queued key into its pending list.

    Runs in its own thread with its own event loop and connection, so registrations truly
    interleave with the reader's round trips, as a pool of worker processes would.
    """

    async def run() -> None:
        client = create_client(config)
        other = Store(client, keys)
        try:
            for i in range(n):
                wid = f"joiner-{i}"
                await other.workers.register_worker(wid, {"pid": i, "hostname": "h"})
                assert await other.tasks.pop_keys(wid, 1)
        finally:
            await client.aclose()

    asyncio.run(run())


def _start_joiners(config: RedisConfig, store: Store) -> threading.Thread:
    thread = threading.Thread(target=_register_and_take, args=(config, store.keys, N_KEYS - 1))
    thread.start()
    return thread


async def test_snapshot_sees_every_queued_key_while_workers_register(
    config: RedisConfig, store: Store
) -> None:
    keys = await store.tasks.create_tasks("queued", [{"xs": {"i": i}} for i in range(N_KEYS)])
    joiners = _start_joiners(config, store)
    hidden = 0
    try:
        while joiners.is_alive():
            snap = await store.reads.snapshot()
            hidden += sorted(snap[TaskState.QUEUED]) != sorted(keys)
    finally:
        joiners.join()
    assert hidden == 0
    snap = await store.reads.snapshot()
    assert sorted(snap[TaskState.QUEUED]) == sorted(keys)
    assert len(await store.reads.worker_ids()) == N_KEYS - 1
    # A registration changed the worker list mid-read at least once: the retry path ran, and
    # every retry still saw every key.
    assert store.reads.watch_retries > 0


async def test_status_counts_every_queued_key_while_workers_register(
    config: RedisConfig, store: Store
) -> None:
    await store.tasks.create_tasks("queued", [{"xs": {"i": i}} for i in range(N_KEYS)])
    joiners = _start_joiners(config, store)
    wrong = 0
    try:
        while joiners.is_alive():
            wrong += (await store.reads.status()).n_queued_tasks != N_KEYS
    finally:
        joiners.join()
    assert wrong == 0
    status = await store.reads.status()
    assert (status.n_queued_tasks, status.n_queued_priority_tasks, status.n_workers) == (
        N_KEYS,
        0,
        N_KEYS - 1,
    )
    assert store.reads.watch_retries > 0


async def test_snapshot_without_workers_and_with_every_state(store: Store) -> None:
    queued = await store.tasks.create_tasks("queued", [{"xs": {"i": i}} for i in range(3)])
    finished = await store.tasks.create_tasks("finished", [{"xs": {}, "ys": {}}])
    failed = await store.tasks.create_tasks("failed", [{"xs": {}, "condition": {"type": "E", "message": ""}}])
    snap = await store.reads.snapshot()
    assert snap == {
        TaskState.QUEUED: queued,
        TaskState.RUNNING: [],
        TaskState.FINISHED: finished,
        TaskState.FAILED: failed,
    }
    status = await store.reads.status()
    assert (status.n_queued_tasks, status.n_finished_tasks, status.n_failed_tasks, status.n_tasks) == (
        3,
        1,
        1,
        5,
    )
    assert store.reads.watch_retries == 0


async def test_snapshot_and_status_translate_connection_errors_of_the_watch() -> None:
    # Nothing listens on this port: the WATCH itself fails, and must not leak a raw redis error.
    config = RedisConfig.from_url("redis://127.0.0.1:1", reconnect_budget=0)
    client = create_client(config, retries=0)
    reads = Store(client, Keys("nowhere")).reads
    try:
        with pytest.raises(ConnectionFailedError, match=r"127\.0\.0\.1:1"):
            await reads.snapshot()
        with pytest.raises(ConnectionFailedError, match=r"127\.0\.0\.1:1"):
            await reads.status()
    finally:
        await client.aclose()


async def test_snapshot_and_status_translate_error_replies_of_the_watched_read(store: Store) -> None:
    # The worker list read under WATCH answers WRONGTYPE: a ServerError, never a raw ResponseError.
    await store.client.set(store.keys.workers, b"not a set")
    try:
        with pytest.raises(ServerError, match="WRONGTYPE"):
            await store.reads.snapshot()
        with pytest.raises(ServerError, match="WRONGTYPE"):
            await store.reads.status()
    finally:
        await store.client.delete(store.keys.workers)  # so the fixture's reset can index the network
