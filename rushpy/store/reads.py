"""Reads of task data: hashes, keys per state, counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rushpy.models import TaskState
from rushpy.scripts import calls as sc
from rushpy.store.base import CHUNK, Plumbing, text

__all__ = ["NetworkStatus", "ReadStore"]


@dataclass(frozen=True, slots=True)
class NetworkStatus:
    """Counts of tasks per state and of workers, read in one round trip.

    Attributes:
        n_queued_tasks: Tasks in the shared queue and in priority queues.
        n_queued_priority_tasks: Of those, tasks in workers' priority queues.
        n_running_tasks: Tasks being run.
        n_finished_tasks: Tasks with a result.
        n_failed_tasks: Tasks that failed.
        n_tasks: All tasks ever created.
        n_workers: Workers that ever registered.
        n_running_workers: Workers that are up.
        n_terminated_workers: Workers that exited when asked to.
        n_killed_workers: Workers that were killed.
        n_lost_workers: Workers found lost.

    """

    n_queued_tasks: int
    n_queued_priority_tasks: int
    n_running_tasks: int
    n_finished_tasks: int
    n_failed_tasks: int
    n_tasks: int
    n_workers: int
    n_running_workers: int
    n_terminated_workers: int
    n_killed_workers: int
    n_lost_workers: int


class ReadStore(Plumbing):
    """Read-only queries of one network (see :class:`~rushpy.store.base.Plumbing`)."""

    async def read_tasks(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """Decoded hashes of ``keys`` in order (``None`` for a key that does not exist).

        A read script returns a chunk of hashes per reply, which the C parser
        decodes far faster than one ``HGETALL`` reply per task.
        """
        if not keys:
            return []
        calls = [sc.read(self.keys, keys[start : start + CHUNK]) for start in range(0, len(keys), CHUNK)]
        replies = await self.run_batched(calls)
        return [row for reply in replies for row in reply]

    async def finished_keys(self, start: int = 0, stop: int = -1) -> list[str]:
        """Keys of the finished list from index ``start`` to ``stop`` (inclusive), in finish order."""
        return text(await self.client.lrange(self.keys.finished, start, stop))

    async def all_keys(self) -> list[str]:
        """Every task key in creation order."""
        return text(await self.client.lrange(self.keys.all_tasks, 0, -1))

    async def snapshot(self) -> dict[TaskState, list[str]]:
        """Keys per state, read atomically (``MULTI``).

        Queued covers the shared queue, every priority queue and every pending
        list (popped, not yet marked running).
        """
        worker_ids = await self.worker_ids()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lrange(self.keys.queued, 0, -1)
            for wid in worker_ids:
                pipe.lrange(self.keys.priority_queue(wid), 0, -1)
                pipe.lrange(self.keys.pending(wid), 0, -1)
            pipe.smembers(self.keys.running)
            pipe.lrange(self.keys.finished, 0, -1)
            pipe.smembers(self.keys.failed)
            raw = await pipe.execute()
        queued: list[str] = []
        for part in raw[: 1 + 2 * len(worker_ids)]:
            queued += text(part)
        return {
            TaskState.QUEUED: queued,
            TaskState.RUNNING: sorted(text(raw[-3])),
            TaskState.FINISHED: text(raw[-2]),
            TaskState.FAILED: sorted(text(raw[-1])),
        }

    async def priority_keys(self) -> dict[str, list[str]]:
        """Keys in every worker's priority queue, by worker id."""
        worker_ids = await self.worker_ids()
        if not worker_ids:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.lrange(self.keys.priority_queue(wid), 0, -1)
            raw = await pipe.execute()
        return {wid: text(part) for wid, part in zip(worker_ids, raw, strict=True) if part}

    async def members(self, state: Literal["running", "failed"]) -> list[str]:
        """Keys in the running or failed set, sorted (one ``SMEMBERS``)."""
        name = self.keys.running if state == "running" else self.keys.failed
        return sorted(text(await self.client.smembers(name)))

    async def in_set(self, state: Literal["running", "failed"], keys: Sequence[str]) -> list[bool]:
        """Whether each key is in the running or failed set (one ``SMISMEMBER``)."""
        if not keys:
            return []
        name = self.keys.running if state == "running" else self.keys.failed
        return [bool(x) for x in await self.client.smismember(name, list(keys))]

    async def status(self) -> NetworkStatus:
        """All counts in one pipelined round trip (plus one to list workers)."""
        worker_ids = await self.worker_ids()
        k = self.keys
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.llen(k.queued)
            for wid in worker_ids:
                pipe.llen(k.priority_queue(wid))
                pipe.llen(k.pending(wid))
            pipe.scard(k.running)
            pipe.llen(k.finished)
            pipe.scard(k.failed)
            pipe.llen(k.all_tasks)
            pipe.scard(k.workers)
            pipe.scard(k.running_workers)
            pipe.scard(k.terminated_workers)
            pipe.scard(k.killed_workers)
            pipe.scard(k.lost_workers)
            raw = [int(x) for x in await pipe.execute()]
        n_worker_parts = 2 * len(worker_ids)
        per_worker = raw[1 : 1 + n_worker_parts]
        rest = raw[1 + n_worker_parts :]
        return NetworkStatus(
            n_queued_tasks=raw[0] + sum(per_worker),
            n_queued_priority_tasks=sum(per_worker[0::2]),
            n_running_tasks=rest[0],
            n_finished_tasks=rest[1],
            n_failed_tasks=rest[2],
            n_tasks=rest[3],
            n_workers=rest[4],
            n_running_workers=rest[5],
            n_terminated_workers=rest[6],
            n_killed_workers=rest[7],
            n_lost_workers=rest[8],
        )

    async def n_finished(self) -> int:
        """Length of the finished list."""
        return int(await self.client.llen(self.keys.finished))
