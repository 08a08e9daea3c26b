"""Reads of task data: hashes, keys per state, counts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError, WatchError

from rushpy.connection import TRANSLATED_ERRORS, connection_failed
from rushpy.errors import ServerError
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
    """Read-only queries of one network (see :class:`~rushpy.store.base.Plumbing`).

    Attributes:
        watch_retries: How often a snapshot or count was read again because a
            worker registered while it was read (diagnostics; see :meth:`snapshot`).

    """

    watch_retries: int = 0

    async def _read_with_workers(
        self, queue: Callable[[Pipeline, list[str]], None]
    ) -> tuple[list[str], list[Any]]:
        """Read the worker ids, then run ``queue``'s commands in one transaction, atomically.

        The reads depend on the worker ids (one priority queue and one pending
        list per worker), so the ids come first. ``WATCH`` on the workers set
        makes the ``MULTI``/``EXEC`` fail if a worker registered in between
        (its pending keys would be missed); the read then starts again. Each
        retry means a registration, which is rare and finite, so the loop ends.

        Args:
            queue: Queues the reads on the pipeline, given the sorted worker ids.

        Returns:
            The worker ids and the replies of the queued reads.

        Raises:
            ConnectionFailedError: the server could not be reached.
            ServerError: the server answered a read with an error (a wrong key type).

        """
        while True:
            async with self.client.pipeline(transaction=True) as pipe:
                try:
                    worker_ids = await self._watch_workers(pipe)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    queue(pipe, worker_ids)
                    return worker_ids, await pipe.execute()
                except WatchError:
                    # Also raised for a connection lost while watching: the next
                    # WATCH reconnects within the budget or raises ConnectionFailedError.
                    self.watch_retries += 1

    async def _watch_workers(self, pipe: Pipeline) -> list[str]:
        """``WATCH`` the workers set and read it, on ``pipe`` in immediate mode.

        Immediate-mode commands bypass the client's error translation (only
        ``execute`` translates), so it is done here: no raw redis error escapes.
        """
        started = time.monotonic()
        try:
            await pipe.watch(self.keys.workers)
            return sorted(text(await pipe.smembers(self.keys.workers)))
        except TRANSLATED_ERRORS as exc:
            raise connection_failed(self.client.config, exc, time.monotonic() - started) from exc  # type: ignore[attr-defined]
        except ResponseError as exc:
            raise ServerError(
                f"reading the workers of network {self.keys.network_id!r} failed: {exc}; the network's "
                "data may have been changed by something other than rushpy (reset() the network)"
            ) from exc

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
        """Keys per state, read atomically (``WATCH`` on the workers, then ``MULTI``).

        Queued covers the shared queue, every priority queue and every pending
        list (popped, not yet marked running).
        """

        def queue(pipe: Pipeline, worker_ids: list[str]) -> None:
            pipe.lrange(self.keys.queued, 0, -1)
            for wid in worker_ids:
                pipe.lrange(self.keys.priority_queue(wid), 0, -1)
                pipe.lrange(self.keys.pending(wid), 0, -1)
            pipe.smembers(self.keys.running)
            pipe.lrange(self.keys.finished, 0, -1)
            pipe.smembers(self.keys.failed)

        worker_ids, raw = await self._read_with_workers(queue)
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
        """Keys in every worker's priority queue, by worker id, read atomically (see :meth:`snapshot`)."""

        def queue(pipe: Pipeline, worker_ids: list[str]) -> None:
            for wid in worker_ids:
                pipe.lrange(self.keys.priority_queue(wid), 0, -1)

        worker_ids, raw = await self._read_with_workers(queue)
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
        """All counts, read atomically: one transaction, after one read of the workers.

        A worker that registers meanwhile makes the read start again (see
        :meth:`snapshot`), so its pending keys are always counted.
        """
        k = self.keys

        def queue(pipe: Pipeline, worker_ids: list[str]) -> None:
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

        worker_ids, replies = await self._read_with_workers(queue)
        raw = [int(x) for x in replies]
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

    async def server_uptime(self) -> float:
        """Seconds since the server started (``INFO server``), to tell a restart from a bad key."""
        info = await self.client.info("server")
        return float(info.get("uptime_in_seconds", 0))

    async def n_finished(self) -> int:
        """Length of the finished list."""
        return int(await self.client.llen(self.keys.finished))
