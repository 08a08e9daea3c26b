"""One typed wrapper per Lua script: the only code that knows a script's layout.

Each function takes named, typed parameters, builds the script's ``KEYS`` and
``ARGV`` (in the order its ``.lua`` header documents) and returns a
:class:`~rushpy.scripts.Call` whose ``parse`` turns the raw reply into Python
values. Task field values arrive already msgpack-encoded (the store encodes
and size-checks them before anything is written); conditions, times, worker
ids and seeds are encoded here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rushpy.codec import encode
from rushpy.fields import CorruptTask, decode_task, popped_task
from rushpy.keys import Keys
from rushpy.models import Condition, PoppedTask
from rushpy.scripts import Call, script
from rushpy.stored_rows import flat_of

__all__ = [
    "Buffer",
    "ClaimReply",
    "Requeued",
    "cancel",
    "claim",
    "complete",
    "create",
    "dequeue",
    "lookup",
    "lookup_rows",
    "now",
    "pop",
    "read",
    "read_raw",
    "release",
    "requeue",
    "retry",
    "running",
    "states",
    "text",
]

Buffer = bytes | memoryview
"""An encoded field value (large values may be passed without a copy)."""


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


def now() -> bytes:
    """The current time (UTC), msgpack-encoded as task timestamps are stored."""
    return encode(dt.datetime.now(dt.UTC))


def text(values: Any) -> list[str]:
    """Keys of a reply (bytes or str, ``None`` for none) as strings."""
    return [v.decode() if isinstance(v, bytes) else v for v in values or ()]


def _preamble(common: Sequence[tuple[str, Buffer]], names: Sequence[str]) -> list[Any]:
    # The field preamble that parse_fields (prelude.lua) reads.
    out: list[Any] = [len(common)]
    for name, value in common:
        out += (name, value)
    return [*out, len(names), *names]


def create(
    keys: Keys,
    state: Literal["queued", "finished", "failed"],
    tasks: Sequence[tuple[str, Sequence[Buffer]]],
    *,
    names: Sequence[str],
    common: Sequence[tuple[str, Buffer]] = (),
    queue: str | None = None,
) -> Call[int]:
    """``create.lua``: nothing -> ``state``; the call returns how many were created.

    Args:
        keys: Key names of the network.
        state: Target state.
        tasks: Per task its key and one encoded value per name (``b""``: unset).
        names: Field names of the per-task values.
        common: Encoded fields with the same value for every task.
        queue: For ``queued``: the list to push to (default the shared queue).

    """
    if state == "queued":
        dest, kind, channel = queue or keys.queued, "list", ""
    elif state == "finished":
        dest, kind, channel = keys.finished, "finished", keys.results
    else:
        dest, kind, channel = keys.failed, "set", keys.results
    args: list[Any] = [kind, channel, *_preamble(common, names)]
    for key, values in tasks:
        args.append(key)
        args += values
    hashes = keys.tasks(key for key, _ in tasks)
    return Call(script("create"), [dest, keys.all_tasks, keys.failed_log, keys.rows, *hashes], args, int)


def running(
    keys: Keys, worker_id: str, tasks: Sequence[tuple[str, Buffer, Buffer]], *, at: bytes | None = None
) -> Call[int]:
    """``running.lua``: nothing -> running on ``worker_id`` (first attempt).

    Args:
        keys: Key names of the network.
        worker_id: The worker that runs the tasks.
        tasks: Per task its key, encoded ``xs`` and encoded ``xs_extra`` (``b""``: none).
        at: Creation and start time (encoded); default now.

    """
    stamp = at or now()
    common = [
        ("worker_id", encode(worker_id)),
        ("created_at", stamp),
        ("started_at", stamp),
        ("attempts", encode(1)),
    ]
    args = _preamble(common, ("xs", "xs_extra"))
    for key, xs, extra in tasks:
        args += (key, xs, extra)
    hashes = keys.tasks(key for key, _, _ in tasks)
    sets = [keys.running, keys.worker_running(worker_id), keys.all_tasks]
    return Call(script("running"), [*sets, *hashes], args, int)


def pop(keys: Keys, worker_id: str, n: int) -> Call[list[str]]:
    """``pop.lua``: up to ``n`` keys into the worker's pending list; returns the pending keys.

    Queue entries of keys already pending are dropped; :func:`claim` drops
    those of keys that run or failed already (a key queued twice).
    """
    lists = [keys.pending(worker_id), keys.priority_queue(worker_id), keys.queued]
    return Call(script("pop"), lists, [n], text)


class ClaimReply(list[PoppedTask | CorruptTask | None]):
    """What a claim returned, per key, and the constants' version it read.

    Attributes:
        constants_version: The network's constants version at the claim
            (``None``: the network has no constants), compared, never parsed.

    """

    __slots__ = ("constants_version",)

    def __init__(
        self, items: Iterable[PoppedTask | CorruptTask | None], constants_version: bytes | None
    ) -> None:
        """Wrap the per-key items and the version read with them."""
        super().__init__(items)
        self.constants_version = constants_version


def _claimed(task_keys: Sequence[str]) -> Any:
    def parse(raw: Any) -> ClaimReply | None:
        if raw == -1:
            return None
        *items, version = raw
        out: list[PoppedTask | CorruptTask | None] = []
        for key, item in zip(task_keys, items, strict=True):
            if not item:
                out.append(None)
                continue
            # Never raises for bad data: an unusable input makes a CorruptTask.
            out.append(popped_task(key, int(item[4]), item[:4]))
        return ClaimReply(out, version)

    return parse


def claim(
    keys: Keys, worker_id: str, task_keys: Sequence[str], *, token: str
) -> Call[ClaimReply | None]:
    """``claim.lua``: pending -> running, attempts + 1.

    A key that already runs, failed or finished is never claimed again (its
    duplicate pending entry is dropped), and a task whose bookkeeping data is
    corrupt fails alone with a ``CorruptTask`` condition instead of being
    claimed. The reply is ``None`` when the worker no longer counts as running
    (it claimed nothing), else per key the claimed task, a
    :class:`~rushpy.fields.CorruptTask` (claimed, but its inputs cannot be
    used: the caller must fail it), or ``None`` (not claimed).
    A repeat with the same ``token`` returns the tasks the first run claimed.
    The reply also carries the constants' version read in the same step.
    """
    sets = [
        keys.pending(worker_id),
        keys.running,
        keys.worker_running(worker_id),
        keys.running_workers,
        keys.failed,
        keys.finished,
        keys.failed_log,
        keys.constants_version,
        keys.rows,
    ]
    args = [worker_id, encode(worker_id), now(), encode(token), keys.results, *task_keys]
    return Call(script("claim"), [*sets, *keys.tasks(task_keys)], args, _claimed(list(task_keys)))


def complete(
    keys: Keys,
    worker_id: str,
    state: Literal["finished", "failed"],
    items: Sequence[tuple[str, int | None, Sequence[Buffer]]],
    *,
    names: Sequence[str],
    token: str,
) -> Call[list[int]]:
    """``complete.lua``: running -> finished | failed (or the queue's tail: a retry).

    Args:
        keys: Key names of the network.
        worker_id: The worker that ran the tasks.
        state: Target state.
        items: Per task its key, the attempt reported on (``None``: any) and one
            encoded value per name (``b""``: unset). For ``failed`` the one name
            is ``condition``.
        names: Field names of the values.
        token: Unique per logical call; a repeat with it reports the first run.

    The reply has per item 1 (recorded), 2 (re-queued for a retry) or 0 (discarded).

    """
    dest, kind = (keys.finished, "list") if state == "finished" else (keys.failed, "set")
    args: list[Any] = [kind, keys.results, encode(token), *_preamble([("finished_at", now())], names)]
    for key, attempt, values in items:
        args += (key, b"" if attempt is None else attempt)
        args += values
    sets = [keys.running, dest, keys.worker_running(worker_id), keys.queued]
    sets += [keys.failed, keys.failed_log, keys.rows]
    hashes = keys.tasks(key for key, _, _ in items)
    return Call(script("complete"), [*sets, *hashes], args, lambda raw: [int(x) for x in raw])


def requeue(keys: Keys, worker_id: str, task_keys: Sequence[str], condition: Condition) -> Call[Requeued]:
    """``requeue.lua``: settle a gone worker's pending, priority and running tasks.

    Args:
        keys: Key names of the network.
        worker_id: The worker that is gone.
        task_keys: The keys of its running set (read just before).
        condition: Recorded in the history of each interrupted task.

    """
    lists = [
        keys.running,
        keys.failed,
        keys.worker_running(worker_id),
        keys.queued,
        keys.pending(worker_id),
        keys.priority_queue(worker_id),
        keys.failed_log,
    ]
    args = [encode(condition.to_dict()), now(), keys.results, *task_keys]

    def parse(raw: Any) -> Requeued:
        requeued, failed, released = raw
        return Requeued(text(requeued), text(failed), int(released))

    return Call(script("requeue"), [*lists, *keys.tasks(task_keys)], args, parse)


def release(keys: Keys, worker_id: str) -> Call[int]:
    """``release.lua``: the worker's pending list -> head of the shared queue; returns how many."""
    return Call(script("release"), [keys.pending(worker_id), keys.queued], [], int)


def cancel(
    keys: Keys, task_keys: Sequence[str], condition: Condition, worker_ids: Sequence[str]
) -> Call[tuple[list[str], list[str]]]:
    """``cancel.lua``: queued | pending | running -> failed.

    Args:
        keys: Key names of the network.
        task_keys: Tasks to cancel.
        condition: Their final condition.
        worker_ids: Workers whose priority queues and pending lists are searched.

    The reply is ``(cancelled queued keys, cancelled running keys)``.

    """
    lists = [keys.queued]
    for wid in worker_ids:
        lists += [keys.priority_queue(wid), keys.pending(wid)]
    args = [len(lists), encode(condition.to_dict()), now(), keys.events, keys.results, *task_keys]
    return Call(
        script("cancel"),
        [keys.running, keys.failed, keys.failed_log, *lists, *keys.tasks(task_keys)],
        args,
        lambda raw: (text(raw[0]), text(raw[1])),
    )


def dequeue(keys: Keys, queue: str, task_keys: Sequence[str], condition: Condition) -> Call[int]:
    """``dequeue.lua``: keys of ``queue`` -> failed with ``condition``; returns how many moved."""
    args = [encode(condition.to_dict()), now(), keys.results, *task_keys]
    return Call(script("dequeue"), [queue, keys.failed, keys.failed_log, *keys.tasks(task_keys)], args, int)


def retry(
    keys: Keys, task_keys: Sequence[str], *, ignore_max_retries: bool, seeds: Sequence[Any] | None = None
) -> Call[list[str]]:
    """``retry.lua``: failed -> tail of the shared queue; returns the keys re-queued.

    Args:
        keys: Key names of the network.
        task_keys: Failed tasks.
        ignore_max_retries: Re-queue even tasks whose attempts are used up.
        seeds: A new seed per key (``None`` keeps a task's seed), or ``None``.

    """
    args: list[Any] = [
        b"1" if ignore_max_retries else b"0",
        0 if seeds is None else len(task_keys),
        *task_keys,
    ]
    if seeds is not None:
        args += [b"" if seed is None else encode(seed) for seed in seeds]
    return Call(script("retry"), [keys.failed, keys.queued, *keys.tasks(task_keys)], args, text)


def _hashes(raw: Any) -> list[dict[str, Any] | None]:
    # decode_task never raises for bad data: a bad field makes a DamagedTask.
    return [decode_task(flat_of(flat)) if flat else None for flat in raw]


def read(keys: Keys, task_keys: Sequence[str]) -> Call[list[dict[str, Any] | None]]:
    """``read.lua``: decoded hashes of ``task_keys`` in order (``None``: no such task).

    A hash with fields that cannot be decoded or have the wrong type, or a
    task key of another Redis type, comes back as a
    :class:`~rushpy.fields.DamagedTask` (see :func:`rushpy.fields.decode_task`).
    """
    return Call(script("read"), [keys.rows, *keys.tasks(task_keys)], list(task_keys), _hashes)


def read_raw(keys: Keys, task_keys: Sequence[str]) -> Call[list[Any]]:
    """``read.lua`` undecoded: per key the flat fields (a row made flat), ``[]`` (gone) or a type name.

    For :class:`~rushpy.columns.RowColumns`, which decodes only what it keeps.
    """
    return Call(
        script("read"),
        [keys.rows, *keys.tasks(task_keys)],
        list(task_keys),
        lambda raw: [flat_of(item) for item in raw],
    )


def states(
    keys: Keys, mode: Literal["keys", "counts", "priority"], worker_ids: Sequence[str]
) -> Call[tuple[list[str] | None, list[Any]]]:
    """``states.lua``: keys per state (or their counts, or the priority queues), atomically.

    ``worker_ids`` are the workers whose priority queues and pending lists are
    read. The parsed reply is ``(None, parts)`` when they are exactly the
    network's workers, else ``(members, [])``: call again with those ids.
    """
    per_worker = [key for wid in worker_ids for key in (keys.priority_queue(wid), keys.pending(wid))]
    script_keys = [
        keys.workers,
        keys.queued,
        keys.running,
        keys.finished,
        keys.failed,
        keys.all_tasks,
        keys.running_workers,
        keys.terminated_workers,
        keys.killed_workers,
        keys.lost_workers,
        *per_worker,
    ]

    def parse(raw: Any) -> tuple[list[str] | None, list[Any]]:
        if raw[0] == -1:
            return sorted(text(raw[1])), []
        return None, raw

    return Call(script("states"), script_keys, [mode, *worker_ids], parse)


_STATE_CODES = {b"q": "queued", b"r": "running", b"f": "finished", b"x": "failed", b"": None}


def lookup(keys: Keys, task_keys: Sequence[str]) -> Call[list[str | None]]:
    """``lookup.lua``: each task's state in O(1) (``None``: not a task), whatever the network's size."""
    return Call(
        script("lookup"),
        [keys.running, keys.failed, keys.finished, keys.rows, *keys.tasks(task_keys)],
        ["states", *task_keys],
        lambda raw: [_STATE_CODES.get(code) for code in raw],
    )


def lookup_rows(keys: Keys, task_keys: Sequence[str]) -> Call[list[tuple[str, dict[str, Any]] | None]]:
    """``lookup.lua``: each task's state and decoded hash (``None``: not a task), in O(1) per task."""

    def parse(raw: Any) -> list[tuple[str, dict[str, Any]] | None]:
        out: list[tuple[str, dict[str, Any]] | None] = []
        for code, flat in raw:
            state = _STATE_CODES.get(code)
            out.append(None if state is None or not flat else (state, decode_task(flat_of(flat))))
        return out

    return Call(
        script("lookup"),
        [keys.running, keys.failed, keys.finished, keys.rows, *keys.tasks(task_keys)],
        ["rows", *task_keys],
        parse,
    )
