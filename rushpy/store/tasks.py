"""Task transitions: create, pop, claim, complete, settle, cancel, retry, dequeue.

Every transition is one script call through its wrapper in
:mod:`rushpy.scripts.calls`; batches travel in one pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from rushpy.errors import WorkerNotRunningError
from rushpy.keys import new_task_keys
from rushpy.models import Condition
from rushpy.scripts import Call
from rushpy.scripts import calls as sc
from rushpy.store.base import Plumbing, chunks, new_token, text
from rushpy.store.encoding import check_task_size, encode_field

__all__ = ["BLOCK_SHARE", "CREATE_FIELDS", "Encoded", "TaskStore"]

BLOCK_SHARE = 2 / 3
"""Share of the client's socket timeout that one blocking move may block."""

CREATE_FIELDS = (
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
"""Fields a created task may carry, in the order they are sent."""

_CREATE_NAMES = frozenset(CREATE_FIELDS)


class Encoded(bytes):
    """A field value already encoded by :func:`~rushpy.store.encoding.encode_field`.

    The worker encodes each result once to find out whether it can be stored
    at all (a value that cannot fails its task alone); the store then sends
    those bytes as they are instead of encoding the value a second time.
    """


_RUNNING_NAMES = frozenset({"xs", "xs_extra"})


class TaskStore(Plumbing):
    """Task state transitions of one network (see :class:`~rushpy.store.base.Plumbing`)."""

    def _encode(
        self, tasks: Sequence[Mapping[str, Any]], names: frozenset[str]
    ) -> tuple[list[dict[str, bytes]], list[int]]:
        """Encode the fields in ``names`` of every task and check their sizes, before anything is written.

        Returns the encoded fields of each task and each task's encoded size.
        """
        encoded: list[dict[str, bytes]] = []
        sizes: list[int] = []
        limit = self.max_task_bytes
        for task in tasks:
            # A task's own items (usually one or two), not every possible field.
            fields = {}
            size = 0
            for name, value in task.items():
                if value is not None and name in names:
                    fields[name] = raw = value if type(value) is Encoded else encode_field(value)
                    size += len(raw)
            if size > limit:
                check_task_size(len(encoded), fields, limit)
            encoded.append(fields)
            sizes.append(size)
        return encoded, sizes

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

        All or nothing: the chunks of a large batch run as one transaction, so
        a full server (``maxmemory``) refuses the whole batch, never a part.

        Raises:
            TaskError: a value cannot be encoded, or a task exceeds ``max_task_bytes``
                (nothing is written).
            ServerFullError: the server is out of memory (nothing is written).

        """
        if not tasks:
            return []
        calls, keys = self._create_calls(state, tasks, queue, common)
        await self.run_batched(calls, atomic=True)
        return keys

    async def create_queued_groups(
        self, groups: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
    ) -> list[list[str]]:
        """Queue several groups of tasks, each on its own queue, in one round trip.

        Every value is encoded before anything is written, so an unencodable value
        creates no task at all; the groups are created in one transaction, so a
        full server refuses all of them (``ServerFullError``) or none.
        """
        calls: list[Call[int]] = []
        out = []
        for queue, tasks in groups:
            group_calls, keys = self._create_calls("queued", tasks, queue, None)
            calls += group_calls
            out.append(keys)
        if calls:
            await self.run_batched(calls, atomic=True)
        return out

    def _create_calls(
        self,
        state: Literal["queued", "finished", "failed"],
        tasks: Sequence[Mapping[str, Any]],
        queue: str | None,
        common: Mapping[str, Any] | None,
    ) -> tuple[list[Call[int]], list[str]]:
        shared = [("created_at", sc.now())] + [(name, encode_field(v)) for name, v in (common or {}).items()]
        encoded, sizes = self._encode(tasks, _CREATE_NAMES)
        keys = new_task_keys(len(tasks))
        calls = []
        for start, stop in chunks(sizes):
            # Send only the fields some task of the chunk has: fewer arguments to pack.
            present = set().union(*encoded[start:stop])
            names = [f for f in CREATE_FIELDS if f in present]
            if names == ["xs"]:  # the common case, without a lookup per field
                rows = [
                    (key, [fields["xs"]])
                    for key, fields in zip(keys[start:stop], encoded[start:stop], strict=True)
                ]
            else:
                rows = [
                    (key, [fields.get(name, b"") for name in names])
                    for key, fields in zip(keys[start:stop], encoded[start:stop], strict=True)
                ]
            calls.append(sc.create(self.keys, state, rows, names=names, common=shared, queue=queue))
        return calls, keys

    async def create_running(self, worker_id: str, tasks: Sequence[Mapping[str, Any]]) -> list[str]:
        """Create tasks that ``worker_id`` already runs (decentralized mode), all or none.

        Raises:
            TaskError: a value cannot be encoded, or a task exceeds ``max_task_bytes``.
            ServerFullError: the server is out of memory (nothing is written).

        """
        if not tasks:
            return []
        encoded, sizes = self._encode(tasks, _RUNNING_NAMES)
        keys = new_task_keys(len(tasks))
        at = sc.now()
        calls = [
            sc.running(
                self.keys,
                worker_id,
                [
                    (key, fields.get("xs", b""), fields.get("xs_extra", b""))
                    for key, fields in zip(keys[start:stop], encoded[start:stop], strict=True)
                ],
                at=at,
            )
            for start, stop in chunks(sizes)
        ]
        await self.run_batched(calls, atomic=True)
        return keys

    # -- worker side: pop, claim, complete ----------------------------------------
    async def pop_keys(self, worker_id: str, n: int) -> list[str]:
        """Move up to ``n`` queued keys to the worker's pending list; return them.

        Keys already pending come first, then the worker's priority queue, then
        the shared queue. Claim them with :meth:`claim`.
        """
        return await self.run(sc.pop(self.keys, worker_id, n))

    async def block_move(self, source: str, worker_id: str, timeout: float) -> str | None:
        """Block until a key arrives in ``source`` and move it to the worker's pending list.

        The key is never in no state: ``BLMOVE`` puts it in the pending list in the
        same step that removes it from the queue.

        The server answers a blocking command only when it ends, and the client
        waits ``socket_timeout`` for any answer, so the move blocks at most
        :data:`BLOCK_SHARE` of the socket timeout (fewer than ``timeout`` seconds
        if need be): its answer always comes in time, and a hung server is still
        noticed. Returns ``None`` when nothing arrived.
        """
        limit = self.client.connection_pool.connection_kwargs.get("socket_timeout")
        if limit is not None:
            timeout = min(timeout, limit * BLOCK_SHARE)
        raw = await self.client.blmove(
            source,
            self.keys.pending(worker_id),
            timeout,  # type: ignore[arg-type]  # the server takes fractional seconds
            src="LEFT",
            dest="RIGHT",
        )
        return None if raw is None else text([raw])[0]

    async def claim(
        self, worker_id: str, keys: Sequence[str], *, token: str | None = None
    ) -> sc.ClaimReply:
        """Move keys from the worker's pending list to running; return their inputs.

        Each claim starts a new attempt of the task. Repeating a claim whose reply
        was lost returns the same tasks again (the client repeats a command with
        the same arguments, so the same token). A claimed task whose stored
        inputs cannot be used comes back as a :class:`~rushpy.fields.CorruptTask`:
        the caller fails it (``complete(..., "failed", ...)``, never retried).

        Args:
            worker_id: The claiming worker.
            keys: Keys in its pending list.
            token: Identifies this claim (default a fresh one).

        Raises:
            WorkerNotRunningError: the worker no longer counts as running (it was
                declared lost or stopped); it claims nothing and must stop.

        """
        if not keys:
            return sc.ClaimReply([], None)
        claimed = await self.run(sc.claim(self.keys, worker_id, keys, token=token or new_token()))
        if claimed is None:
            raise WorkerNotRunningError(
                f"worker {worker_id} no longer counts as running in network "
                f"{self.keys.network_id!r} (declared lost or stopped); its tasks may run elsewhere"
            )
        return sc.ClaimReply([task for task in claimed if task is not None], claimed.constants_version)

    async def complete(
        self,
        worker_id: str,
        state: Literal["finished", "failed"],
        items: Sequence[tuple[str, int | None, Mapping[str, Any]]],
        *,
        token: str | None = None,
    ) -> list[int]:
        """Record results (``finished``) or failures (``failed``) of running tasks.

        Args:
            worker_id: The worker that ran them.
            state: Target state.
            items: ``(key, attempt, fields)`` triples; fields are ``ys``/``ys_extra``
                or ``condition``. ``attempt`` is the attempt the outcome belongs to
                (``None``: whichever attempt this worker runs).
            token: Identifies this call (default a fresh one); a repeat with the
                same token reports what the first run did.

        Returns:
            Per item 1 if recorded, 2 if the failure sent the task back to the queue
            (attempts left), 0 if discarded (this worker no longer runs that
            attempt: it was cancelled, re-queued, or recorded already).

        Raises:
            TaskError: a value cannot be encoded, or a result exceeds ``max_task_bytes``
                (nothing is written).

        """
        if not items:
            return []
        candidates = ("ys", "ys_extra") if state == "finished" else ("condition",)
        encoded, sizes = self._encode([values for _, _, values in items], frozenset(candidates))
        token = token or new_token()
        calls = []
        for start, stop in chunks(sizes):
            present = set().union(*encoded[start:stop])
            names = [f for f in candidates if f in present]
            values = [
                (key, attempt, [fields.get(n, b"") for n in names])
                for (key, attempt, _), fields in zip(items[start:stop], encoded[start:stop], strict=True)
            ]
            calls.append(sc.complete(self.keys, worker_id, state, values, names=names, token=token))
        return [flag for result in await self.run_batched(calls) for flag in result]

    async def release_pending(self, worker_id: str) -> int:
        """Return a worker's popped-but-unclaimed tasks to the head of the shared queue."""
        return await self.run(sc.release(self.keys, worker_id))

    async def pending_lengths(self, worker_ids: Sequence[str]) -> list[int]:
        """Length of each worker's pending list (one pipelined round trip)."""
        if not worker_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.llen(self.keys.pending(wid))
            raw = await pipe.execute()
        return [int(x) for x in raw]

    async def worker_running_keys(self, worker_id: str) -> tuple[list[str], list[str]]:
        """Keys in the worker's running set: ``(still running, no longer running)``.

        Keys of the second kind were settled by someone else (cancelled, say) and
        are removed from the worker's set here.
        """
        members = text(await self.client.smembers(self.keys.worker_running(worker_id)))
        if not members:
            return [], []
        flags = [bool(x) for x in await self.client.smismember(self.keys.running, members)]
        stale = [k for k, f in zip(members, flags, strict=True) if not f]
        if stale:
            await self.client.srem(self.keys.worker_running(worker_id), *stale)
        return [k for k, f in zip(members, flags, strict=True) if f], stale

    async def requeue_worker_tasks(self, worker_id: str, condition: Condition) -> sc.Requeued:
        """Settle the tasks of a worker that is gone (lost, killed, exited mid-task).

        Popped-but-unclaimed tasks and the worker's priority queue go back to the
        shared queue. Interrupted tasks go back to the queue while attempts
        remain, else fail with ``condition``; either way the condition joins the
        task's history. First writer wins: a result that arrived meanwhile stays.
        """
        keys = text(await self.client.smembers(self.keys.worker_running(worker_id)))
        return await self.run(sc.requeue(self.keys, worker_id, keys, condition))

    # -- controller side ------------------------------------------------------------------
    async def cancel(self, keys: Sequence[str], condition: Condition) -> tuple[list[str], list[str]]:
        """Fail queued, popped and running tasks with ``condition``, in one script.

        Running tasks are announced (``C <keys>``) so their workers interrupt them.

        Returns:
            ``(cancelled queued keys, cancelled running keys)``.

        """
        if not keys:
            return [], []
        return await self.run(sc.cancel(self.keys, keys, condition, await self.worker_ids()))

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
        return await self.run(sc.retry(self.keys, keys, ignore_max_retries=ignore_max_retries, seeds=seeds))

    async def dequeue(self, queue: str, condition: Condition, keys: Sequence[str] | None = None) -> int:
        """Move queued keys (all of ``queue`` by default) to failed with ``condition``."""
        if keys is None:
            keys = text(await self.client.lrange(queue, 0, -1))
        if not keys:
            return 0
        return await self.run(sc.dequeue(self.keys, queue, keys, condition))
