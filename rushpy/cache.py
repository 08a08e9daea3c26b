"""The local cache of finished tasks and the result stream, safe to share between coroutines.

The finished list in Redis is append-only and in finish order, so a client
caches the rows it has read and afterwards reads only the entries past its
*offset*. Two counters are kept apart on purpose:

- ``offset``: entries of the finished list already read. It moves by the
  number of keys read, also for keys whose hash is gone (deleted by hand, or
  by a concurrent reset), which yield no row; using the number of cached rows
  instead would re-read, and return again, the entries after a missing one.
- ``consumed``: cached rows already handed out by :meth:`ResultCache.take_new`
  (rush calls it ``n_consumed``).

Tasks that failed for good are streamed the same way from the append-only
*failed log* (``Keys.failed_log``), with an offset of its own. Failed rows are
not kept once handed out (``fetch_failed_tasks`` reads the failed set), and
the log is read only by callers that ask for failures, so a client that
streams only results pays nothing for it. A log entry whose task is no longer
failed when it is read (re-queued by ``retry_tasks`` meanwhile) is skipped:
the task's next outcome gets an entry of its own. A task that fails for good,
is retried and fails again therefore appears once per final failure, except
that entries read in the same batch count once.

Every update runs under one lock, so coroutines that fetch at the same time
never read the same range twice, and every row comes out of
:meth:`ResultCache.take_new` exactly once across all callers.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from typing import Any, cast

import anyio

from rushpy.columns import RawHash, RowColumns
from rushpy.models import TaskState
from rushpy.store import Store
from rushpy.table import Table, flatten_task

__all__ = ["READ_WINDOW", "ResultCache"]

READ_WINDOW = 20_000
"""Most finished-list entries one update reads (one pipeline); a backlog takes several."""


class ResultCache:
    """Finished tasks read so far, failures not yet handed out, and which rows are new.

    Args:
        store: Store of the network.

    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = anyio.Lock()
        # Columnar: about 80 bytes per small row instead of a dict of ~550 (rushpy.columns).
        self._rows = RowColumns(TaskState.FINISHED.value)
        self._offset = 0
        self._consumed = 0
        self._failed_offset = 0
        self._failed_new: list[dict[str, Any]] = []
        # Keys announced on the events channel, by index in the finished list (F)
        # or the failed log (X): a waiter reads exactly those hashes, skipping the
        # LRANGE round trip. Kept only while someone waits (``listening``): a
        # worker that never waits for results would otherwise decode and keep
        # every announcement for ever.
        self._announced: dict[int, str] = {}
        self._failed_announced: dict[int, str] = {}
        # Rows that came with announced finished keys (small batches), by index.
        self._announced_rows: dict[int, list[bytes]] = {}
        self.listening = 0
        """Coroutines waiting for new results; announcements are kept only while > 0."""
        self.rows_read = 0
        """Finished-list entries read from Redis so far (for tests and diagnostics)."""
        self.failed_read = 0
        """Failed-log entries read from Redis so far (for tests and diagnostics)."""
        # Another client reset the network (its "R" message): check at the next update.
        self._reset_suspected = False

    @property
    def offset(self) -> int:
        """Entries of the finished list read so far."""
        return self._offset

    @property
    def failed_offset(self) -> int:
        """Entries of the failed log read so far."""
        return self._failed_offset

    def suspect_reset(self) -> None:
        """A client reset the network: before the next read, check whether the lists shrank.

        The cache is dropped only if the finished list or the failed log is now
        shorter than what was read of it, so a reset this client made itself
        (its cache already dropped) hands no row out twice.
        """
        self._reset_suspected = True

    async def _check_reset(self) -> None:
        """Under the lock: drop the cache if a suspected reset shortened the lists it read."""
        if not self._reset_suspected:
            return
        self._reset_suspected = False
        finished, failed = await self._store.reads.stream_lengths()
        if finished < self._offset or failed < self._failed_offset:
            self.reset()

    def has_new(self, states: Collection[TaskState] = (TaskState.FINISHED,)) -> bool:
        """Whether rows in ``states`` exist that :meth:`take_new` has not returned."""
        return (TaskState.FINISHED in states and len(self._rows) > self._consumed) or (
            TaskState.FAILED in states and bool(self._failed_new)
        )

    def announce(
        self,
        first: int,
        keys: Sequence[bytes],
        *,
        failed: bool = False,
        rows: Sequence[list[bytes]] | None = None,
    ) -> None:
        """Remember keys announced at indexes ``first, first + 1, ...`` (while someone listens).

        Args:
            first: Index of the first key in the finished list (or the failed log).
            keys: The keys, in list order.
            failed: The keys are entries of the failed log, not the finished list.
            rows: The finished keys' hashes (flat ``HGETALL`` replies) when the
                announcement carried them: an update then reads nothing.

        """
        offset = self._failed_offset if failed else self._offset
        if not self.listening or first + len(keys) <= offset:
            return  # nobody waits, or already read
        announced = self._failed_announced if failed else self._announced
        for i, key in enumerate(keys):
            if first + i >= offset:
                announced[first + i] = key.decode()
                if rows is not None and not failed:
                    self._announced_rows[first + i] = rows[i]

    @staticmethod
    def _continuing(announced: dict[int, str], start: int) -> list[str]:
        keys: list[str] = []
        while (start + len(keys)) in announced:
            keys.append(announced[start + len(keys)])
        return keys

    async def update(self, *, announced_only: bool = False) -> int:
        """Read finished tasks past the offset; returns how many list entries were read.

        Args:
            announced_only: Use the announced keys when they continue the cache
                (one round trip instead of two); read the list otherwise.

        """
        async with self._lock:
            await self._check_reset()
            start = self._offset
            keys = self._continuing(self._announced, start) if announced_only else []
            if keys:
                hashes = await self._announced_hashes(start, keys)
                self._rows.append(keys, hashes)
            else:
                # One window at a time: each is one pipeline, answered well within
                # a deadline's grace however long the backlog (rushpy.deadline).
                keys = await self._store.reads.finished_keys(start, start + READ_WINDOW - 1)
                if not keys:
                    return 0
                await self._append_read(keys)
            self._offset = start + len(keys)
            self.rows_read += len(keys)
            self._announced = {i: k for i, k in self._announced.items() if i >= self._offset}
            self._announced_rows = {i: r for i, r in self._announced_rows.items() if i >= self._offset}
            return len(keys)

    async def _append_read(self, keys: list[str]) -> None:
        """Read finished tasks ``keys`` and append them: packed rows as they are, the rest as hashes.

        Everything is read before anything is appended, so a read that fails
        leaves the cache as it was (the next update reads the same window again).
        """
        rows = await self._store.reads.read_packed(keys)
        parts: list[tuple[list[str], list[bytes] | None]] = []
        at = 0
        # Consecutive rows go in one bulk append; tasks without a row (stored as
        # hashes by an earlier version, or moved since) are read by read.lua.
        for is_row, group in itertools.groupby(rows, key=lambda row: row is not None):
            size = sum(1 for _ in group)
            found = cast("list[bytes]", rows[at : at + size]) if is_row else None
            parts.append((keys[at : at + size], found))
            at += size
        missing = [k for part, packed in parts if packed is None for k in part]
        hashes = iter(await self._store.reads.read_raw(missing) if missing else ())
        for part, packed in parts:
            if packed is None:
                self._rows.append(part, [next(hashes) for _ in part])
            else:
                self._rows.append_rows(part, packed)

    async def _announced_hashes(self, start: int, keys: list[str]) -> list[RawHash]:
        """The raw hashes of announced keys: from their announcements where carried, else read."""
        carried = [self._announced_rows.get(start + i) for i in range(len(keys))]
        missing = [k for k, row in zip(keys, carried, strict=True) if row is None]
        read = iter(await self._store.reads.read_raw(missing) if missing else ())
        return [next(read) if row is None else row for row in carried]

    async def update_failed(self, *, announced_only: bool = False) -> int:
        """Read the failed log past its offset; returns how many log entries were read.

        Args:
            announced_only: Use the announced keys when they continue the log
                (one round trip fewer); read the log otherwise.

        """
        async with self._lock:
            await self._check_reset()
            start = self._failed_offset
            keys = self._continuing(self._failed_announced, start) if announced_only else []
            if not keys:
                keys = await self._store.reads.failed_log_keys(start)
            if not keys:
                return 0
            # A key listed twice in one batch (failed, retried, failed again)
            # counts once; a key no longer failed was retried since and is skipped.
            unique = list(dict.fromkeys(keys))
            still = await self._store.reads.in_set("failed", unique)
            current = [k for k, failed in zip(unique, still, strict=True) if failed]
            hashes = await self._store.reads.read_tasks(current)
            self._failed_new.extend(
                flatten_task(k, TaskState.FAILED.value, t)
                for k, t in zip(current, hashes, strict=True)
                if t is not None
            )
            self._failed_offset = start + len(keys)
            self.failed_read += len(keys)
            self._failed_announced = {
                i: k for i, k in self._failed_announced.items() if i >= self._failed_offset
            }
            return len(keys)

    async def update_all(self) -> int:
        """Read every finished task past the offset, window by window; returns how many entries."""
        total = 0
        while n := await self.update():
            total += n
        return total

    async def table(self) -> Table:
        """Every finished task in finish order (reads the new ones first), as a lazy table.

        Rows are built only when they are used; rows cached later are not in it.
        """
        await self.update_all()
        return Table.over(self._rows)

    def take_new(self, states: Collection[TaskState] = (TaskState.FINISHED,)) -> Table:
        """Rows in ``states`` not handed out before; each row is returned once, to one caller.

        Finished rows come first (in finish order), then failed ones (in failure
        order). Finished rows alone come as a lazy table over the cache (rows are
        built when used, a column decodes only its field).
        """
        finished = TaskState.FINISHED in states
        start, stop = self._consumed, len(self._rows)
        if finished:
            self._consumed = stop
        if TaskState.FAILED not in states:  # finished alone (the stream asks for one at least)
            return Table.over(self._rows, start, stop)
        new = self._rows.rows(start, stop) if finished else []
        new += self._failed_new
        self._failed_new = []
        return Table(new)

    def reset(self) -> None:
        """Forget every cached row; the next read starts at the head of the list and the log.

        An update in flight meanwhile stays consistent: it appends the rows it
        read from the head of the list and moves the offset past them.
        """
        self._rows = RowColumns(TaskState.FINISHED.value)
        self._offset = 0
        self._consumed = 0
        self._announced = {}
        self._announced_rows = {}
        self._failed_offset = 0
        self._failed_new = []
        self._failed_announced = {}
