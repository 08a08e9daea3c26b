"""The task-writing methods of the Controller: push, cancel, retry, empty the queue.

:class:`TaskMethods` holds no state and defines no hook; it works on the
owner's store and key names. It lives apart from the controller to keep each
module to one job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from rushpy.errors import TaskError
from rushpy.fields import CAPTURE_OUTPUT
from rushpy.keys import Keys
from rushpy.logs import get_logger
from rushpy.models import Condition, TaskState
from rushpy.store import Store
from rushpy.task_data import TaskData
from rushpy.validation import (
    broadcast,
    check_extras,
    check_keys,
    check_mappings,
    check_max_retries,
    check_same_length,
    check_task_timeouts,
)

__all__ = ["TaskMethods", "next_seed", "next_seed_of"]

log = get_logger("rushpy.controller")

_MASK64 = (1 << 64) - 1


def next_seed(seed: int) -> int:
    """The seed a retried task gets with ``retry_tasks(..., next_seed=True)``.

    One SplitMix64 step: deterministic (the same seed always gives the same next
    seed, on any machine) and well mixed, so consecutive seeds give unrelated
    random streams.
    """
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def next_seed_of(seed: int | None) -> int | None:
    """:func:`next_seed` of ``seed``, or ``None`` for a task without a seed."""
    return None if seed is None else next_seed(int(seed))


def _check_seeds(seeds: Any, n: int) -> list[int | None]:
    if seeds is None:
        return [None] * n
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise TaskError(f"seeds must be a list with one integer (or None) per task, got {seeds!r:.80}")
    if len(seeds) != n:
        raise TaskError(f"seeds has {len(seeds)} entries but there are {n} tasks; pass one per task")
    for i, seed in enumerate(seeds):
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MASK64
        ):
            raise TaskError(f"invalid seeds[{i}]={seed!r}: use an integer in [0, 2**64), or None")
    return list(seeds)


class TaskMethods:
    """Methods that create, cancel and re-queue tasks; the owner sets the attributes annotated below."""

    _store: Store
    _keys: Keys
    _task_data: TaskData

    # -- pushing tasks -------------------------------------------------------------------
    async def push_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        seeds: Sequence[int | None] | None = None,
        timeouts: float | Sequence[float | None] | None = None,
        max_retries: int | Sequence[int | None] | None = None,
        terminate_workers: bool = False,
        constants: Mapping[str, Any] | None = None,
        capture_output: bool = False,
    ) -> list[str]:
        """Queue tasks on the shared FIFO queue; returns their keys in order.

        All tasks travel in one pipelined round trip. Pushing nothing is a no-op.

        All or nothing: the push is one transaction, so when it raises (the
        server is full: ``ServerFullError``; an invalid value: ``TaskError``) no
        task of it exists, and when it returns every task does. A
        ``ConnectionFailedError`` leaves the outcome unknown (the server may have
        run the push before the connection broke): read the state once the
        server is back. With ``terminate_workers=True`` the drain request is
        written after the tasks; if that write fails, the tasks stay queued.

        Args:
            xss: One mapping of inputs per task.
            xss_extra: Optional extra inputs per task (stored, not passed to the function).
            seeds: One integer seed in [0, 2**64) (or ``None``) per task, stored with
                it and handed to the worker (``PoppedTask.seed``; the function's
                ``seed`` and ``rng`` parameters). A task without one gets the seed of
                its index in the network when the controller has a root seed
                (``Controller(seed=...)``, see ``docs/guide.md``, "Seeds").
            timeouts: Seconds each task may run: one value for all or one per task
                (``None``: no limit). A task past its deadline fails (or retries)
                with a ``TaskTimeout`` condition.
            max_retries: How often a task that fails (its function raises, times out,
                or its worker is lost) goes back to the queue before it fails for
                good: one value for all or one per task (default 0: no retry).
            terminate_workers: Ask every worker to exit once it finds the queue empty.
            constants: Values stored once in the network (replacing constants of the
                same names) and passed to every call as keyword arguments next to
                the task's inputs; written before the tasks, so even if the push
                fails they stay set.
            capture_output: Have the worker capture what each task prints to stdout
                and the warnings it raises, bounded in size, and store them with
                its outcome: rows get ``stdout`` and ``warnings`` columns (output
                relay, see ``docs/guide.md``). Stored as the ``capture_output``
                entry of each task's ``xs_extra``.

        Inputs whose encoding exceeds the controller's ``large_object_bytes`` are
        stored once as large objects and the task holds a reference (see
        ``docs/guide.md``, "Constants and large objects").

        Raises:
            TaskError: an input is invalid, has the name of a constant, or is larger
                than ``max_task_bytes`` (no task is written).
            ServerFullError: the server is out of memory (``maxmemory``); nothing
                is written.
            ConnectionFailedError: the server is unreachable or hung past
                ``socket_timeout + reconnect_budget``.

        """
        tasks = self._task_fields(xss, xss_extra, seeds, timeouts, max_retries, capture_output=capture_output)
        tasks = await self._task_data.prepare(tasks, constants)
        keys = await self._store.tasks.create_tasks("queued", tasks)
        if terminate_workers:
            await self._store.workers.request_terminate_all()
        return keys

    @staticmethod
    def _task_fields(
        xss: Sequence[Mapping[str, Any]],
        xss_extra: Sequence[Mapping[str, Any] | None] | None,
        seeds: Sequence[int | None] | None,
        timeouts: float | Sequence[float | None] | None,
        max_retries: int | Sequence[int | None] | None,
        *,
        capture_output: bool = False,
    ) -> list[dict[str, Any]]:
        xss = check_mappings(xss, "xss")
        extras = check_extras(xss, xss_extra, "xss_extra")
        if capture_output:
            # A per-task entry the claim already returns: no new field, no script change.
            extras = [{**(extra or {}), CAPTURE_OUTPUT: True} for extra in extras]
        seed_list = _check_seeds(seeds, len(xss))
        timeout_list = check_task_timeouts(timeouts, len(xss))
        retry_list = check_max_retries(max_retries, len(xss))
        return [
            {"xs": xs, "xs_extra": extra, "seed": seed, "timeout": timeout, "max_retries": retries}
            for xs, extra, seed, timeout, retries in zip(
                xss, extras, seed_list, timeout_list, retry_list, strict=True
            )
        ]

    async def push_priority_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        priority: Sequence[str | None],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        seeds: Sequence[int | None] | None = None,
        timeouts: float | Sequence[float | None] | None = None,
        max_retries: int | Sequence[int | None] | None = None,
        capture_output: bool = False,
    ) -> list[str]:
        """Queue tasks on given workers' own queues; returns keys in input order.

        A task whose worker is unknown, stopped or lost (or whose entry is
        ``None``) goes to the shared queue instead, so nothing waits forever.

        Args:
            xss: One mapping of inputs per task.
            priority: One worker id (or ``None``) per task.
            xss_extra: Optional extra inputs per task.
            seeds: As for :meth:`push_tasks` (with derived seeds and large objects too).
            timeouts: As for :meth:`push_tasks`.
            max_retries: As for :meth:`push_tasks`; a retry goes to the shared queue.
            capture_output: As for :meth:`push_tasks`.

        """
        tasks = self._task_fields(xss, xss_extra, seeds, timeouts, max_retries, capture_output=capture_output)
        priority_list = check_same_length(tasks, priority, "priority")
        for wid in priority_list:
            if wid is not None and not isinstance(wid, str):
                raise TaskError(f"priority entries are worker ids (str) or None, got {wid!r}")
        tasks = await self._task_data.prepare(tasks, None)
        candidates = sorted({w for w in priority_list if w is not None})
        flags = await self._store.workers.running_worker_flags(candidates)
        running = dict(zip(candidates, flags, strict=True))
        rerouted = sorted(w for w, up in running.items() if not up)
        if rerouted:
            log.warning("workers not running; their tasks go to the shared queue", workers=rerouted)
        groups: dict[str | None, list[int]] = {}
        for i, wid in enumerate(priority_list):
            target = wid if wid is not None and running.get(wid) else None
            groups.setdefault(target, []).append(i)
        targets = list(groups)
        created = await self._store.tasks.create_queued_groups(
            [
                (
                    self._keys.queued if t is None else self._keys.priority_queue(t),
                    [tasks[i] for i in groups[t]],
                )
                for t in targets
            ]
        )
        keys: list[str] = [""] * len(tasks)
        for target, new_keys in zip(targets, created, strict=True):
            for i, key in zip(groups[target], new_keys, strict=True):
                keys[i] = key
        return keys

    async def push_finished_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        yss: Sequence[Mapping[str, Any]],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
        yss_extra: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Record tasks that were evaluated elsewhere as finished (e.g. a warm start)."""
        xss = check_mappings(xss, "xss")
        yss = check_mappings(yss, "yss")
        ys_list = broadcast(xss, yss, "yss")
        xe = check_extras(xss, xss_extra, "xss_extra")
        ye = check_extras(xss, yss_extra, "yss_extra")
        now = dt.datetime.now(dt.UTC)
        tasks = [
            {"xs": x, "ys": y, "xs_extra": a, "ys_extra": b}
            for x, y, a, b in zip(xss, ys_list, xe, ye, strict=True)
        ]
        return await self._store.tasks.create_tasks(
            "finished", tasks, common={"started_at": now, "finished_at": now}
        )

    async def push_failed_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        conditions: Sequence[Condition | BaseException | Mapping[str, Any] | str],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Record tasks as failed with a condition each (exception, message or mapping)."""
        xss = check_mappings(xss, "xss")
        condition_list = broadcast(xss, conditions, "conditions")
        if None in condition_list:
            raise TaskError("conditions must not contain None: pass an exception, a message or a mapping")
        extras = check_extras(xss, xss_extra, "xss_extra")
        try:
            conds = [Condition.coerce(c).to_dict() for c in condition_list if c is not None]
        except TypeError as exc:
            raise TaskError(str(exc)) from None
        tasks = [{"xs": x, "xs_extra": e, "condition": c} for x, e, c in zip(xss, extras, conds, strict=True)]
        now = dt.datetime.now(dt.UTC)
        return await self._store.tasks.create_tasks("failed", tasks, common={"finished_at": now})

    async def empty_queue(self) -> int:
        """Remove every queued task (shared and priority queues); they become failed.

        Their condition says they were removed from the queue. Returns how many.
        """
        condition = Condition("Removed", "removed from the queue by empty_queue()")
        moved = await self._store.tasks.dequeue(self._keys.queued, condition)
        for wid in await self._store.workers.worker_ids():
            moved += await self._store.tasks.dequeue(self._keys.priority_queue(wid), condition)
        return moved

    async def cancel_tasks(self, keys: Sequence[str]) -> list[str]:
        """Cancel tasks that are queued or running; returns the keys cancelled.

        Each ends ``failed`` with a ``Cancelled`` condition and is never retried
        automatically. :meth:`retry_tasks` re-queues a task cancelled before it
        started (its attempts are left); one cancelled while running needs
        ``ignore_max_retries=True`` once its attempts are used up.
        A running task is interrupted on its worker: an ``async`` function is
        cancelled, a child process (plain function with a timeout) killed, a
        thread (other plain functions) interrupted at its next Python bytecode.
        A result that still arrives is discarded. Keys already finished or failed
        are left alone and not returned.
        """
        keys = list(dict.fromkeys(check_keys(keys)))
        condition = Condition("Cancelled", "the task was cancelled by cancel_tasks()")
        cancelled: list[str] = []
        todo = keys
        for _ in range(3):
            # A worker that registered after the lists were read may hold a key in
            # its pending list: look again for keys that are still open.
            queued, running = await self._store.tasks.cancel(todo, condition)
            cancelled += queued + running
            done = set(cancelled)
            todo = [k for k in todo if k not in done]
            if not todo:
                break
            snap = await self._store.reads.snapshot()
            waiting = set(snap[TaskState.QUEUED]) | set(snap[TaskState.RUNNING])
            todo = [k for k in todo if k in waiting]
            if not todo:
                break
        return [k for k in keys if k in set(cancelled)]

    async def retry_tasks(
        self,
        keys: Sequence[str],
        ignore_max_retries: bool = False,
        next_seed: bool = False,
    ) -> list[str]:
        """Put failed tasks back in the queue; returns the keys re-queued.

        The attempt count and the ``conditions`` history stay; the final
        ``condition`` is cleared.

        Args:
            keys: Keys of failed tasks. Keys that are not failed are skipped (logged).
            ignore_max_retries: Also re-queue tasks whose attempts are used up
                (attempts > ``max_retries``), e.g. cancelled or finally failed ones.
            next_seed: Give each re-queued task with a seed the next seed
                (:func:`next_seed`), so the retry draws different random numbers.

        """
        keys = list(dict.fromkeys(check_keys(keys)))
        if not keys:
            return []
        seeds: list[int | None] | None = None
        if next_seed:
            rows = await self._store.reads.read_tasks(keys)
            seeds = [next_seed_of(row.get("seed")) if row is not None else None for row in rows]
        retried = await self._store.tasks.retry(keys, ignore_max_retries=ignore_max_retries, seeds=seeds)
        skipped = len(keys) - len(retried)
        if skipped:
            log.warning(
                "retry_tasks: some tasks were not re-queued (not failed, or attempts used up "
                "without ignore_max_retries=True)",
                n=skipped,
            )
        return retried
