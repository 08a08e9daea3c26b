"""Reads of task data: hashes, keys per state, counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rushpy.errors import ServerError
from rushpy.models import TaskState
from rushpy.scripts import calls as sc
from rushpy.store.base import CHUNK, Plumbing, text

__all__ = ["READ_CHUNK", "NetworkStatus", "ReadStore"]

READ_CHUNK = 10_000
"""Keys per ``HMGET`` of packed rows: long enough to amortise a command, short
enough that one command holds the server for about a millisecond only."""


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
        watch_retries: How often a snapshot or count was read again because the
            network's workers were not the ones last seen (diagnostics; see
            :meth:`snapshot`).

    """

    watch_retries: int = 0
    _worker_ids: tuple[str, ...] = ()

    async def _read_states(self, mode: Literal["keys", "counts", "priority"]) -> tuple[list[str], list[Any]]:
        """Run ``states.lua`` with the workers last seen until they are the network's workers.

        The read covers every worker's priority queue and pending list, so it
        needs the worker ids; the script checks them against the workers set in
        the same atomic step and answers with the actual ids when they differ.
        One round trip while the workers stay the same, one more per change
        (a registration or removal: rare and finite, so the loop ends). Being a
        script, not ``MULTI``, it also answers on a server that is out of memory.

        Returns:
            The worker ids and the script's parts.

        Raises:
            ConnectionFailedError: the server could not be reached.
            ServerError: the server answered with an error (a key of the wrong type).

        """
        while True:
            members, parts = await self.run(sc.states(self.keys, mode, self._worker_ids))
            if members is None:
                return list(self._worker_ids), parts
            self.watch_retries += 1
            self._worker_ids = tuple(members)

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

    async def read_raw(self, keys: Sequence[str]) -> list[Any]:
        """Undecoded replies of ``read.lua`` for ``keys``, in order, for :class:`~rushpy.columns.RowColumns`.

        Per key: the flat ``HGETALL`` reply (field names and msgpack values as
        bytes), an empty list for a task that is gone, or the Redis type name
        (bytes) of a key that is not a hash. Chunks of :data:`CHUNK` keys travel
        in one pipeline; nothing is decoded here, so the caller decodes only
        what it keeps.
        """
        if not keys:
            return []
        calls = [
            sc.read_raw(self.keys, keys[start : start + CHUNK])
            for start in range(0, len(keys), CHUNK)
        ]
        replies = await self.run_batched(calls)
        return [flat for reply in replies for flat in reply]

    async def read_packed(self, keys: Sequence[str]) -> list[bytes | None]:
        """The packed rows of finished tasks ``keys`` (:mod:`rushpy.stored_rows`), in order.

        ``None`` for a key without a row (a task not finished, gone, or stored
        as a hash by an earlier version): read those with :meth:`read_raw`. One
        ``HMGET`` of the rows hash per :data:`READ_CHUNK` keys, all in one
        pipeline: no script and one value per task, the cheapest read of a
        large backlog. A rows key that is not a hash reads as no rows at all,
        so that :meth:`read_raw` (``read.lua``) reports it by name.
        """
        if not keys:
            return []
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for start in range(0, len(keys), READ_CHUNK):
                    pipe.hmget(self.keys.rows, keys[start : start + READ_CHUNK])
                replies = await pipe.execute()
        except ServerError:  # WRONGTYPE: read.lua checks the key's type and says what is wrong
            return [None] * len(keys)
        return [row for reply in replies for row in reply]

    async def finished_keys(self, start: int = 0, stop: int = -1) -> list[str]:
        """Keys of the finished list from index ``start`` to ``stop`` (inclusive), in finish order."""
        return text(await self.client.lrange(self.keys.finished, start, stop))

    async def failed_log_keys(self, start: int = 0) -> list[str]:
        """Keys of the failed log from index ``start`` on, in the order they failed for good."""
        return text(await self.client.lrange(self.keys.failed_log, start, -1))

    async def lookup(self, keys: Sequence[str]) -> list[str | None]:
        """Each task's state (``None``: not a task of the network), O(1) per key (``lookup.lua``)."""
        if not keys:
            return []
        calls = [sc.lookup(self.keys, keys[start : start + CHUNK]) for start in range(0, len(keys), CHUNK)]
        return [state for reply in await self.run_batched(calls) for state in reply]

    async def lookup_rows(self, keys: Sequence[str]) -> list[tuple[str, dict[str, Any]] | None]:
        """Each task's state and decoded hash (``None``: not a task), O(1) per key (``lookup.lua``)."""
        if not keys:
            return []
        calls = [sc.lookup_rows(self.keys, keys[i : i + CHUNK]) for i in range(0, len(keys), CHUNK)]
        return [row for reply in await self.run_batched(calls) for row in reply]

    async def all_keys(self) -> list[str]:
        """Every task key in creation order."""
        return text(await self.client.lrange(self.keys.all_tasks, 0, -1))

    async def snapshot(self) -> dict[TaskState, list[str]]:
        """Keys per state, read in one atomic script call (``states.lua``).

        Queued covers the shared queue, every priority queue and every pending
        list (popped, not yet marked running): the script checks that it reads
        the queues of exactly the network's workers, so a worker that joins
        while it is read cannot hide its pending keys.
        """
        worker_ids, raw = await self._read_states("keys")
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
        worker_ids, raw = await self._read_states("priority")
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
        """All counts, read in one atomic script call (see :meth:`snapshot`).

        A worker that registers meanwhile makes the read start again, so its
        pending keys are always counted.
        """
        worker_ids, replies = await self._read_states("counts")
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

    async def stream_lengths(self) -> tuple[int, int]:
        """Lengths of the finished list and of the failed log (one round trip)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.llen(self.keys.finished)
            pipe.llen(self.keys.failed_log)
            finished, failed = await pipe.execute()
        return int(finished), int(failed)
