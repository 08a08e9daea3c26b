"""Raw reads and writes behind a network's export and import (:mod:`rushpy.archive`).

Task hashes, worker hashes, constants and large objects travel as the bytes
Redis holds (msgpack values, field by field), so an archive restores exactly
what was stored. :func:`restore_tasks` writes each chunk of tasks with their
indexes (the creation list and the state collection) in one transaction: an
import that stops half-way leaves whole tasks, each in exactly one state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rushpy.codec import encode
from rushpy.models import TaskState, WorkerState
from rushpy.scripts.worker_calls import WORKER_SETS
from rushpy.store.base import CHUNK, Plumbing, text
from rushpy.stored_rows import pack_row, unpack_row

__all__ = [
    "RawTask",
    "RawWorker",
    "network_is_empty",
    "read_extras",
    "read_task_hashes",
    "read_workers",
    "restore_extras",
    "restore_tasks",
    "restore_workers",
]

RawTask = tuple[str, str, dict[str, bytes]]
"""``(key, state, fields)``: a task hash as stored."""
RawWorker = tuple[str, str, dict[str, bytes]]
"""``(worker_id, state, fields)``: a worker hash as stored."""


def _fields(raw: Mapping[bytes, bytes]) -> dict[str, bytes]:
    return {k.decode(): bytes(v) for k, v in raw.items()}


async def read_task_hashes(store: Plumbing, keys: Sequence[str]) -> list[dict[str, bytes] | None]:
    """The stored fields of ``keys`` (``None`` for a missing one), one round trip.

    A finished task's fields come from its row (:mod:`rushpy.stored_rows`); an
    unreadable row comes back as its one :data:`~rushpy.stored_rows.UNREADABLE`
    field, as reads show it.
    """
    async with store.client.pipeline(transaction=False) as pipe:
        if keys:
            pipe.hmget(store.keys.rows, list(keys))
        for name in store.keys.tasks(keys):
            pipe.hgetall(name)
        replies = await pipe.execute(raise_on_error=False)
    if not keys:
        return []
    rows = replies[0] if isinstance(replies[0], list) else [None] * len(keys)
    out: list[dict[str, bytes] | None] = []
    for row, reply in zip(rows, replies[1:], strict=True):
        if isinstance(row, bytes):
            flat = unpack_row(row)
            pairs = zip(flat[::2], flat[1::2], strict=True)
            out.append({bytes(n).decode(errors="replace"): bytes(v) for n, v in pairs})
        else:
            out.append(_fields(reply) if isinstance(reply, dict) and reply else None)
    return out


async def read_workers(store: Plumbing) -> list[RawWorker]:
    """Every recorded worker's hash and state."""
    ids = await store.worker_ids()
    if not ids:
        return []
    async with store.client.pipeline(transaction=False) as pipe:
        for wid in ids:
            pipe.hgetall(store.keys.worker(wid))
        for state in (WorkerState.TERMINATED, WorkerState.KILLED, WorkerState.LOST):
            pipe.smembers(getattr(store.keys, WORKER_SETS[state]))
        replies = await pipe.execute(raise_on_error=False)
    states: dict[str, str] = {}
    for state, members in zip(
        (WorkerState.TERMINATED, WorkerState.KILLED, WorkerState.LOST), replies[len(ids) :], strict=True
    ):
        if not isinstance(members, Exception):
            states.update(dict.fromkeys(text(members), state.value))
    return [
        (wid, states.get(wid, WorkerState.RUNNING.value), _fields(h))
        for wid, h in zip(ids, replies[: len(ids)], strict=True)
        if isinstance(h, dict) and h
    ]


async def read_extras(store: Plumbing) -> tuple[dict[str, bytes], list[tuple[str, bytes]], bytes | None]:
    """The network's constants (raw hash), large objects ``(digest, bytes)`` and stored start arguments."""
    k = store.keys
    async with store.client.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.constants)
        pipe.smembers(k.objects)
        pipe.get(k.start_args)
        constants, digests, start_args = await pipe.execute(raise_on_error=False)
    digests = [] if isinstance(digests, Exception) else sorted(text(digests))
    objects: list[tuple[str, bytes]] = []
    for start in range(0, len(digests), CHUNK):
        part = digests[start : start + CHUNK]
        async with store.client.pipeline(transaction=False) as pipe:
            for digest in part:
                pipe.get(k.object(digest))
            values = await pipe.execute(raise_on_error=False)
        objects += [(d, bytes(v)) for d, v in zip(part, values, strict=True) if isinstance(v, bytes)]
    return (
        _fields(constants) if isinstance(constants, dict) else {},
        objects,
        start_args if isinstance(start_args, bytes) else None,
    )


async def network_is_empty(store: Plumbing) -> bool:
    """Whether the network has no task and no recorded worker."""
    k = store.keys
    async with store.client.pipeline(transaction=False) as pipe:
        pipe.llen(k.all_tasks)
        pipe.scard(k.workers)
        n_tasks, n_workers = await pipe.execute(raise_on_error=False)
    return bool(n_tasks == 0 and n_workers == 0)


async def restore_tasks(store: Plumbing, tasks: Sequence[RawTask], *, merge: bool) -> int:
    """Write tasks with their indexes, one transaction; returns how many were written.

    Queued and running tasks go to the tail of the shared queue (no worker runs
    them here), finished ones to the finished list (in the order given),
    failed ones to the failed set and the failed log. With ``merge`` a task
    whose key exists already is skipped.
    """
    k = store.keys
    if merge and tasks:
        async with store.client.pipeline(transaction=False) as pipe:
            for key, _, _ in tasks:
                pipe.exists(k.task(key))
            pipe.hmget(k.rows, [key for key, _, _ in tasks])
            *exists, rows = await pipe.execute()
        tasks = [t for t, e, r in zip(tasks, exists, rows, strict=True) if not e and r is None]
    if not tasks:
        return 0
    async with store.client.pipeline(transaction=True) as pipe:
        for key, state, fields in tasks:
            pipe.delete(k.task(key))  # a stray hash of the same name would mix fields
            pipe.hdel(k.rows, key)
            if state == TaskState.FINISHED:
                pipe.hset(k.rows, key, pack_row(fields))  # finished tasks are stored as rows
            else:
                mapping: dict[Any, Any] = dict(fields)
                pipe.hset(k.task(key), mapping=mapping)
            pipe.rpush(k.all_tasks, key)
            if state == TaskState.FINISHED:
                pipe.rpush(k.finished, key)
            elif state == TaskState.FAILED:
                pipe.sadd(k.failed, key)
                pipe.rpush(k.failed_log, key)
            else:
                pipe.rpush(k.queued, key)
        await pipe.execute()
    return len(tasks)


async def restore_workers(store: Plumbing, workers: Sequence[RawWorker], *, merge: bool) -> int:
    """Record workers as they were (a running one as lost: nothing runs it here); returns how many."""
    k = store.keys
    if merge and workers:
        flags = await store.client.smismember(k.workers, [w for w, _, _ in workers])
        workers = [w for w, flag in zip(workers, flags, strict=True) if not flag]
    if not workers:
        return 0
    async with store.client.pipeline(transaction=True) as pipe:
        for wid, state, fields in workers:
            final = WorkerState.LOST if state == WorkerState.RUNNING else WorkerState(state)
            pipe.delete(k.worker(wid))
            mapping: dict[Any, Any] = {**fields, "state": encode(final.value)}
            pipe.hset(k.worker(wid), mapping=mapping)
            pipe.sadd(k.workers, wid)
            pipe.sadd(getattr(k, WORKER_SETS[final]), wid)
        await pipe.execute()
    return len(workers)


async def restore_extras(
    store: Plumbing, constants: Mapping[str, bytes], objects: Sequence[tuple[str, bytes]]
) -> None:
    """Write constants (fields not set already) and large objects."""
    k = store.keys
    async with store.client.pipeline(transaction=True) as pipe:
        for name, value in constants.items():
            pipe.hsetnx(k.constants, name, value)
        if constants:
            pipe.incr(k.constants_version)
        for digest, value in objects:
            pipe.set(k.object(digest), value)
            pipe.sadd(k.objects, digest)
        await pipe.execute()
