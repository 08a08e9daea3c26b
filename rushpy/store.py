"""The task store: the only module that issues task and worker Redis commands.

Every state transition is a Lua script from :mod:`rushpy.scripts`, run by SHA,
first-writer-wins, with every key it touches declared. Batches are split into
chunks of :data:`CHUNK` tasks, and all chunks of one call travel in one
pipeline, so pushing 10,000 tasks is one round trip.

Task hash fields hold msgpack values (see :mod:`rushpy.codec`). Queues and state
collections hold bare task keys (uuid hex); the hash of key ``k`` is
``<prefix>:{<network>}:task:k``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from rushpy.codec import decode, encode
from rushpy.errors import WorkerNotRunningError
from rushpy.keys import Keys
from rushpy.models import (
    Condition,
    PoppedTask,
    TaskState,
    WorkerInfo,
    WorkerState,
)
from rushpy.scripts import Script, load_all, script

__all__ = ["CHUNK", "NetworkStatus", "Requeued", "Store", "new_task_key", "new_worker_id"]

CHUNK = 1000
"""Tasks per script call inside one pipelined batch (keeps each call short)."""

_CREATE_FIELDS = (
    "xs",
    "xs_extra",
    "ys",
    "ys_extra",
    "condition",
    "worker_id",
    "started_at",
    "finished_at",
    "max_retries",
    "timeout",
    "seed",
)
_WORKER_SETS = {
    WorkerState.RUNNING: "running_workers",
    WorkerState.TERMINATED: "terminated_workers",
    WorkerState.KILLED: "killed_workers",
    WorkerState.LOST: "lost_workers",
}


def new_worker_id() -> str:
    """A readable, unique worker id: ``<host>-<random hex>``."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())[:40]
    return f"{host.strip('-._') or 'host'}-{secrets.token_hex(4)}"


def new_task_key() -> str:
    """A fresh, globally unique task key (128 random bits as hex, like a UUID4)."""
    return secrets.token_hex(16)


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


@dataclass(frozen=True, slots=True)
class Requeued:
    """How the tasks of a worker that is gone were settled.

    Attributes:
        requeued: Interrupted tasks put back in the queue (attempts left).
        failed: Interrupted tasks failed (no attempts left).
        released: Popped-but-unclaimed tasks and tasks of the worker's priority
            queue put back in the shared queue.

    """

    requeued: list[str]
    failed: list[str]
    released: int


def _now() -> bytes:
    return encode(dt.datetime.now(dt.UTC))


def _decode_hash(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    return {k.decode(): decode(v) for k, v in raw.items()}


def _text(values: Iterable[bytes | str]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


class Store:
    """Task and worker operations of one network on one Redis client.

    Args:
        client: An asyncio client with ``decode_responses=False``.
        keys: Key names of the network.

    """

    def __init__(self, client: Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    # -- plumbing ---------------------------------------------------------------
    async def load_scripts(self) -> None:
        """Register every script on the server (needed before pipelined calls)."""
        await load_all(self.client)

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await script(name)(self.client, keys, args)

    async def _run_batched(self, calls: Sequence[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        """Run many script calls in one pipeline (one round trip)."""
        if len(calls) == 1:
            s, k, a = calls[0]
            return [await s(self.client, k, a)]
        for attempt in (1, 2):
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for s, k, a in calls:
                        pipe.evalsha(s.sha, len(k), *k, *a)
                    return list(await pipe.execute())
            except NoScriptError:
                # The server lost its script cache (restart, SCRIPT FLUSH): reload
                # once. Every script is first-writer-wins, so running a chunk again is safe.
                if attempt == 2:
                    raise
                await self.load_scripts()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- creating tasks -----------------------------------------------------------
    async def create_tasks(
        self,
        state: Literal["queued", "finished", "failed"],
        tasks: Sequence[Mapping[str, Any]],
        *,
        queue: str | None = None,
        common: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Create tasks directly in ``state``; returns their new keys.

        Args:
            state: Target state.
            tasks: Per task a mapping of hash fields (``xs``, ``ys``, ...) to values;
                ``None`` values are left out.
            queue: For ``queued``: the list to push to (default the shared queue).
            common: Fields with the same value for every task (sent once).

        """
        if not tasks:
            return []
        calls, keys = self._create_calls(state, tasks, queue, common)
        await self._run_batched(calls)
        return keys

    async def create_queued_groups(
        self, groups: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
    ) -> list[list[str]]:
        """Queue several groups of tasks, each on its own queue, in one round trip.

        Every value is encoded before anything is written, so an unencodable value
        creates no task at all.
        """
        calls: list[tuple[Script, list[str], list[Any]]] = []
        out = []
        for queue, tasks in groups:
            group_calls, keys = self._create_calls("queued", tasks, queue, None)
            calls += group_calls
            out.append(keys)
        if calls:
            await self._run_batched(calls)
        return out

    def _create_calls(
        self,
        state: Literal["queued", "finished", "failed"],
        tasks: Sequence[Mapping[str, Any]],
        queue: str | None,
        common: Mapping[str, Any] | None,
    ) -> tuple[list[tuple[Script, list[str], list[Any]]], list[str]]:
        if state == "queued":
            dest, kind, channel = queue or self.keys.queued, "list", ""
        elif state == "finished":
            dest, kind, channel = self.keys.finished, "list", self.keys.events
        else:
            dest, kind, channel = self.keys.failed, "set", self.keys.events
        shared: list[Any] = ["created_at", _now()]
        for name, value in (common or {}).items():
            shared += [name, encode(value)]
        keys = [new_task_key() for _ in tasks]
        create = script("create")
        calls: list[tuple[Script, list[str], list[Any]]] = []
        for start in range(0, len(tasks), CHUNK):
            chunk_keys = keys[start : start + CHUNK]
            chunk = tasks[start : start + CHUNK]
            # Send only the fields some task of the chunk has: fewer arguments to pack.
            names = [f for f in _CREATE_FIELDS if any(t.get(f) is not None for t in chunk)]
            args: list[Any] = [kind, channel, len(shared) // 2, *shared, len(names), *names]
            if names == ["xs"]:
                for key, task in zip(chunk_keys, chunk, strict=True):
                    args += (key, encode(task["xs"]))
            else:
                for key, task in zip(chunk_keys, chunk, strict=True):
                    args.append(key)
                    for name in names:
                        value = task.get(name)
                        args.append(b"" if value is None else encode(value))
            calls.append((create, [dest, self.keys.all_tasks, *self.keys.tasks(chunk_keys)], args))
        return calls, keys

    async def create_running(self, worker_id: str, tasks: Sequence[Mapping[str, Any]]) -> list[str]:
        """Create tasks that ``worker_id`` already runs (decentralized mode)."""
        if not tasks:
            return []
        now = _now()
        wid = encode(worker_id)
        first = encode(1)
        fields = ("xs", "xs_extra", "worker_id", "created_at", "started_at", "attempts")
        keys = [new_task_key() for _ in tasks]
        running = script("running")
        calls: list[tuple[Script, list[str], list[Any]]] = []
        for start in range(0, len(tasks), CHUNK):
            chunk_keys = keys[start : start + CHUNK]
            args: list[Any] = [len(fields), *fields]
            for key, task in zip(chunk_keys, tasks[start : start + CHUNK], strict=True):
                extra = task.get("xs_extra")
                args += [key, encode(task["xs"]), encode(extra) if extra else b"", wid, now, now, first]
            calls.append(
                (
                    running,
                    [
                        self.keys.running,
                        self.keys.worker_running(worker_id),
                        self.keys.all_tasks,
                        *self.keys.tasks(chunk_keys),
                    ],
                    args,
                )
            )
        await self._run_batched(calls)
        return keys

    # -- worker side: pop, claim, complete ----------------------------------------
    async def pop_keys(self, worker_id: str, n: int) -> list[str]:
        """Move up to ``n`` queued keys to the worker's pending list; return them.

        Keys already pending come first, then the worker's priority queue, then
        the shared queue. Claim them with :meth:`claim`.
        """
        raw = await self._run(
            "pop",
            [
                self.keys.pending(worker_id),
                self.keys.priority_queue(worker_id),
                self.keys.queued,
            ],
            [n],
        )
        return _text(raw) if raw else []

    async def worker_running_keys(self, worker_id: str) -> tuple[list[str], list[str]]:
        """Keys in the worker's running set: ``(still running, no longer running)``.

        Keys of the second kind were settled by someone else (cancelled, say) and
        are removed from the worker's set here.
        """
        members = _text(await self.client.smembers(self.keys.worker_running(worker_id)))
        if not members:
            return [], []
        flags = await self.in_set("running", members)
        stale = [k for k, f in zip(members, flags, strict=True) if not f]
        if stale:
            await self.client.srem(self.keys.worker_running(worker_id), *stale)
        return [k for k, f in zip(members, flags, strict=True) if f], stale

    async def block_move(self, source: str, worker_id: str, timeout: float) -> str | None:
        """Block until a key arrives in ``source`` and move it to the worker's pending list.

        The key is never in no state: ``BLMOVE`` puts it in the pending list in the
        same step that removes it from the queue.
        """
        raw = await self.client.blmove(
            source,
            self.keys.pending(worker_id),
            timeout,  # type: ignore[arg-type]  # the server takes fractional seconds
            src="LEFT",
            dest="RIGHT",
        )
        return None if raw is None else _text([raw])[0]

    async def claim(self, worker_id: str, keys: Sequence[str]) -> list[PoppedTask]:
        """Move keys from the worker's pending list to running; return their inputs.

        Each claim starts a new attempt of the task. Repeating a claim whose reply
        was lost returns the same tasks again.

        Raises:
            WorkerNotRunningError: the worker no longer counts as running (it was
                declared lost or stopped); it claims nothing and must stop.

        """
        if not keys:
            return []
        raw = await self._run(
            "claim",
            [
                self.keys.pending(worker_id),
                self.keys.running,
                self.keys.worker_running(worker_id),
                self.keys.running_workers,
                *self.keys.tasks(keys),
            ],
            [worker_id, encode(worker_id), _now(), encode(secrets.token_hex(8)), *keys],
        )
        if raw == -1:
            raise WorkerNotRunningError(
                f"worker {worker_id} no longer counts as running in network "
                f"{self.keys.network_id!r} (declared lost or stopped); its tasks may run elsewhere"
            )
        out: list[PoppedTask] = []
        for key, item in zip(keys, raw, strict=True):
            if not item:
                continue
            xs_raw, extra_raw, timeout_raw, seed_raw, attempt = item
            out.append(
                PoppedTask(
                    key=key,
                    xs=decode(xs_raw) if xs_raw else {},
                    xs_extra=decode(extra_raw) if extra_raw else None,
                    attempt=int(attempt),
                    timeout=decode(timeout_raw) if timeout_raw else None,
                    seed=decode(seed_raw) if seed_raw else None,
                )
            )
        return out

    async def complete(
        self,
        worker_id: str,
        state: Literal["finished", "failed"],
        items: Sequence[tuple[str, int | None, Mapping[str, Any]]],
    ) -> list[int]:
        """Record results (``finished``) or failures (``failed``) of running tasks.

        Args:
            worker_id: The worker that ran them.
            state: Target state.
            items: ``(key, attempt, fields)`` triples; fields are ``ys``/``ys_extra``
                or ``condition``. ``attempt`` is the attempt the outcome belongs to
                (``None``: whichever attempt this worker runs).

        Returns:
            Per item 1 if recorded, 2 if the failure sent the task back to the queue
            (attempts left), 0 if discarded (this worker no longer runs that
            attempt: it was cancelled, re-queued, or recorded already).

        """
        if not items:
            return []
        dest, kind = (self.keys.finished, "list") if state == "finished" else (self.keys.failed, "set")
        shared = ["finished_at", _now()]
        token = encode(secrets.token_hex(8))  # stored in the hash: msgpack like every field
        complete = script("complete")
        calls: list[tuple[Script, list[str], list[Any]]] = []
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            candidates = ("ys", "ys_extra") if state == "finished" else ("condition",)
            names = [f for f in candidates if any(v.get(f) is not None for _, _, v in chunk)]
            args: list[Any] = [kind, self.keys.events, token, 1, *shared, len(names), *names]
            for key, attempt, values in chunk:
                args += (key, b"" if attempt is None else attempt)
                for name in names:
                    value = values.get(name)
                    args.append(b"" if value is None else encode(value))
            hashes = self.keys.tasks(key for key, _, _ in chunk)
            calls.append(
                (
                    complete,
                    [
                        self.keys.running,
                        dest,
                        self.keys.worker_running(worker_id),
                        self.keys.queued,
                        *hashes,
                    ],
                    args,
                )
            )
        results = await self._run_batched(calls)
        return [int(flag) for chunk_result in results for flag in chunk_result]

    async def release_pending(self, worker_id: str) -> int:
        """Return a worker's popped-but-unclaimed tasks to the head of the shared queue."""
        moved = await self._run("release", [self.keys.pending(worker_id), self.keys.queued], [])
        return int(moved)

    async def pending_lengths(self, worker_ids: Sequence[str]) -> list[int]:
        """Length of each worker's pending list (one pipelined round trip)."""
        if not worker_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.llen(self.keys.pending(wid))
            raw = await pipe.execute()
        return [int(x) for x in raw]

    async def requeue_worker_tasks(self, worker_id: str, condition: Condition) -> Requeued:
        """Settle the tasks of a worker that is gone (lost, killed, exited mid-task).

        Popped-but-unclaimed tasks and the worker's priority queue go back to the
        shared queue. Interrupted tasks go back
        to the queue while attempts remain, else fail with ``condition``; either
        way the condition joins the task's history. First writer wins: a result
        that arrived meanwhile stays.
        """
        keys = _text(await self.client.smembers(self.keys.worker_running(worker_id)))
        raw = await self._run(
            "requeue",
            [
                self.keys.running,
                self.keys.failed,
                self.keys.worker_running(worker_id),
                self.keys.queued,
                self.keys.pending(worker_id),
                self.keys.priority_queue(worker_id),
                *self.keys.tasks(keys),
            ],
            [encode(condition.to_dict()), _now(), self.keys.events, *keys],
        )
        requeued, failed, released = raw
        return Requeued(_text(requeued), _text(failed), int(released))

    async def cancel(self, keys: Sequence[str], condition: Condition) -> tuple[list[str], list[str]]:
        """Fail queued, popped and running tasks with ``condition``, in one script.

        Running tasks are announced (``C <keys>``) so their workers interrupt them.

        Returns:
            ``(cancelled queued keys, cancelled running keys)``.

        """
        if not keys:
            return [], []
        worker_ids = await self.worker_ids()
        lists = [self.keys.queued]
        for wid in worker_ids:
            lists += [self.keys.priority_queue(wid), self.keys.pending(wid)]
        raw = await self._run(
            "cancel",
            [self.keys.running, self.keys.failed, *lists, *self.keys.tasks(keys)],
            [len(lists), encode(condition.to_dict()), _now(), self.keys.events, *keys],
        )
        return _text(raw[0]), _text(raw[1])

    async def retry(
        self, keys: Sequence[str], *, ignore_max_retries: bool, seeds: Sequence[Any] | None = None
    ) -> list[str]:
        """Re-queue failed tasks (only those with attempts left, unless ignoring).

        Args:
            keys: Task keys.
            ignore_max_retries: Re-queue even tasks whose attempts are used up.
            seeds: A new seed per key (``None`` keeps a task's seed), or ``None``.

        Returns:
            The keys re-queued.

        """
        if not keys:
            return []
        args: list[Any] = [b"1" if ignore_max_retries else b"0", 0 if seeds is None else len(keys), *keys]
        if seeds is not None:
            args += [b"" if seed is None else encode(seed) for seed in seeds]
        raw = await self._run("retry", [self.keys.failed, self.keys.queued, *self.keys.tasks(keys)], args)
        return _text(raw)

    # -- controller side: queue removal ------------------------------------------------
    async def dequeue(self, queue: str, condition: Condition, keys: Sequence[str] | None = None) -> int:
        """Move queued keys (all of ``queue`` by default) to failed with ``condition``."""
        if keys is None:
            keys = _text(await self.client.lrange(queue, 0, -1))
        if not keys:
            return 0
        moved = await self._run(
            "dequeue",
            [queue, self.keys.failed, *self.keys.tasks(keys)],
            [encode(condition.to_dict()), _now(), self.keys.events, *keys],
        )
        return int(moved)

    # -- reads ----------------------------------------------------------------------------
    async def read_tasks(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """Decoded hashes of ``keys`` in order (``None`` for a key that does not exist).

        A read script returns a chunk of hashes per reply, which the C parser
        decodes far faster than one ``HGETALL`` reply per task.
        """
        if not keys:
            return []
        read = script("read")
        calls: list[tuple[Script, list[str], list[Any]]] = [
            (read, self.keys.tasks(keys[start : start + CHUNK]), []) for start in range(0, len(keys), CHUNK)
        ]
        out: list[dict[str, Any] | None] = []
        for chunk in await self._run_batched(calls):
            for flat in chunk:
                if not flat:
                    out.append(None)
                    continue
                it = iter(flat)
                out.append({name.decode(): decode(value) for name, value in zip(it, it, strict=True)})
        return out

    async def finished_keys(self, start: int = 0, stop: int = -1) -> list[str]:
        """Keys of the finished list from index ``start`` on, in finish order."""
        return _text(await self.client.lrange(self.keys.finished, start, stop))

    async def all_keys(self) -> list[str]:
        """Every task key in creation order."""
        return _text(await self.client.lrange(self.keys.all_tasks, 0, -1))

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
            queued += _text(part)
        return {
            TaskState.QUEUED: queued,
            TaskState.RUNNING: sorted(_text(raw[-3])),
            TaskState.FINISHED: _text(raw[-2]),
            TaskState.FAILED: sorted(_text(raw[-1])),
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
        return {wid: _text(part) for wid, part in zip(worker_ids, raw, strict=True) if part}

    async def members(self, state: Literal["running", "failed"]) -> list[str]:
        """Keys in the running or failed set, sorted (one ``SMEMBERS``)."""
        name = self.keys.running if state == "running" else self.keys.failed
        return sorted(_text(await self.client.smembers(name)))

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
        priority = sum(per_worker[0::2])
        rest = raw[1 + n_worker_parts :]
        return NetworkStatus(
            n_queued_tasks=raw[0] + sum(per_worker),
            n_queued_priority_tasks=priority,
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

    # -- workers ----------------------------------------------------------------------------
    async def register_worker(
        self, worker_id: str, info: Mapping[str, Any], heartbeat_expire: float | None = None
    ) -> None:
        """Record a worker as running with its registration data.

        With ``heartbeat_expire`` the first heartbeat is set in the same
        transaction, so no observer ever sees a running worker with a heartbeat
        flag but no heartbeat key.
        """
        k = self.keys
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(
                k.worker(worker_id),
                mapping={name: encode(value) for name, value in {**info, "state": "running"}.items()},
            )
            pipe.sadd(k.workers, worker_id)
            pipe.sadd(k.running_workers, worker_id)
            for state in (WorkerState.TERMINATED, WorkerState.KILLED, WorkerState.LOST):
                pipe.srem(getattr(k, _WORKER_SETS[state]), worker_id)
            pipe.delete(k.terminate_signal(worker_id), k.kill_signal(worker_id))
            if heartbeat_expire is not None:
                pipe.set(k.heartbeat(worker_id), b"1", px=max(1, int(heartbeat_expire * 1000)))
            await pipe.execute()

    async def beat(self, worker_id: str, expire: float) -> bool:
        """Refresh the worker's heartbeat key; ``False`` if the worker is not running."""
        beat = await self._run(
            "heartbeat",
            [self.keys.running_workers, self.keys.heartbeat(worker_id)],
            [worker_id, max(1, int(expire * 1000))],
        )
        return bool(beat)

    async def set_worker_state(self, worker_id: str, state: WorkerState) -> bool:
        """Move a running worker to ``state``; ``False`` (nothing written) if it was not running."""
        k = self.keys
        moved = await self._run(
            "worker_state",
            [k.running_workers, getattr(k, _WORKER_SETS[state]), k.worker(worker_id)],
            [worker_id, encode(state.value)],
        )
        return bool(moved)

    async def worker_ids(self, state: WorkerState | None = None) -> list[str]:
        """Ids of every worker, or of the workers in ``state``, sorted."""
        name = self.keys.workers if state is None else getattr(self.keys, _WORKER_SETS[state])
        return sorted(_text(await self.client.smembers(name)))

    async def running_worker_flags(self, worker_ids: Sequence[str]) -> list[bool]:
        """Whether each worker id is in the running set."""
        if not worker_ids:
            return []
        return [bool(x) for x in await self.client.smismember(self.keys.running_workers, list(worker_ids))]

    async def worker_infos(self, worker_ids: Sequence[str] | None = None) -> list[WorkerInfo]:
        """Registration data of the given (default: all) workers that exist."""
        ids = list(worker_ids) if worker_ids is not None else await self.worker_ids()
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hgetall(self.keys.worker(wid))
            raw = await pipe.execute()
        out = []
        for wid, h in zip(ids, raw, strict=True):
            if not h:
                continue
            data = _decode_hash(h)
            out.append(
                WorkerInfo(
                    worker_id=wid,
                    state=WorkerState(data.pop("state", "running")),
                    pid=data.pop("pid", None),
                    hostname=data.pop("hostname", None),
                    started_at=data.pop("started_at", None),
                    heartbeat=bool(data.pop("heartbeat", False)),
                    extra=data,
                )
            )
        return out

    async def publish_event(self, kind: bytes = b"W") -> None:
        """Wake listeners of the events channel (e.g. after a worker registered)."""
        await self.client.publish(self.keys.events, kind)

    async def request_terminate(self, worker_ids: Sequence[str]) -> None:
        """Set each worker's terminate key and wake it through the events channel."""
        if not worker_ids:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.set(self.keys.terminate_signal(wid), b"1")
                pipe.publish(self.keys.terminate_signal(wid), b"terminate")
            await pipe.execute()

    async def stop_requests(self, worker_id: str) -> tuple[bool, bool, bool]:
        """Which stop requests exist: ``(terminate this worker, drain and terminate all, kill)``."""
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.exists(k.terminate_signal(worker_id))
            pipe.exists(k.terminate_all)
            pipe.exists(k.kill_signal(worker_id))
            raw = await pipe.execute()
        own, drain, kill = (int(x) > 0 for x in raw)
        return own, drain, kill

    async def request_kill(self, worker_ids: Sequence[str]) -> None:
        """Set each worker's kill key and publish on it: the worker stops at once."""
        if not worker_ids:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.set(self.keys.kill_signal(wid), b"1")
                pipe.publish(self.keys.kill_signal(wid), b"kill")
            await pipe.execute()

    async def kill_requested(self, worker_id: str) -> bool:
        """Whether the worker was asked to stop at once."""
        return int(await self.client.exists(self.keys.kill_signal(worker_id))) > 0

    async def heartbeats_alive(self, worker_ids: Sequence[str]) -> list[bool]:
        """Whether each worker's heartbeat key exists (one pipelined round trip)."""
        if not worker_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.exists(self.keys.heartbeat(wid))
            raw = await pipe.execute()
        return [int(x) > 0 for x in raw]

    async def request_terminate_all(self) -> None:
        """Ask every worker of the network, present and future, to exit once the queue is empty."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.terminate_all, b"1")
            pipe.publish(self.keys.terminate_all, b"terminate")
            await pipe.execute()

    # -- start arguments --------------------------------------------------------------------
    async def set_start_args(self, args: Mapping[str, Any]) -> None:
        """Store the arguments that ``python -m rushpy.worker`` uses without ``--fun``."""
        await self.client.set(self.keys.start_args, encode(dict(args)))

    async def get_start_args(self) -> dict[str, Any] | None:
        """The stored start arguments, or ``None``."""
        raw = await self.client.get(self.keys.start_args)
        return None if raw is None else dict(decode(raw if isinstance(raw, bytes) else raw.encode()))

    # -- reset --------------------------------------------------------------------------------
    async def delete_all(self, *, keep_workers: bool = False) -> int:
        """Delete every key of the network (``keep_workers``: keep worker registrations).

        Returns the number of keys deleted.
        """
        keep: set[str] = set()
        if keep_workers:
            ids = await self.worker_ids()
            k = self.keys
            keep = {
                k.workers,
                k.running_workers,
                k.terminated_workers,
                k.killed_workers,
                k.lost_workers,
                k.start_args,
            }
            keep |= {k.worker(w) for w in ids} | {k.log(w) for w in ids}
        deleted = 0
        batch: list[bytes] = []
        async for name in self.client.scan_iter(match=self.keys.pattern, count=1000):
            if name.decode() in keep:
                continue
            batch.append(name)
            if len(batch) >= 1000:
                deleted += int(await self.client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await self.client.unlink(*batch))
        return deleted
