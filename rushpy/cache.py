"""The local cache of finished tasks, safe to share between coroutines.

The finished list in Redis is append-only and in finish order, so a client
caches the rows it has read and afterwards reads only the entries past its
*offset*. Two counters are kept apart on purpose:

- ``offset``: entries of the finished list already read. It moves by the
  number of keys read, also for keys whose hash is gone (deleted by hand, or
  by a concurrent reset), which yield no row; using the number of cached rows
  instead would re-read, and return again, the entries after a missing one.
- ``consumed``: cached rows already handed out by :meth:`ResultCache.take_new`
  (rush calls it ``n_consumed``).

Every update runs under one lock, so coroutines that fetch at the same time
never read the same range twice, and every row comes out of
:meth:`ResultCache.take_new` exactly once across all callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from rushpy.models import TaskState
from rushpy.store import Store
from rushpy.table import flatten_task

__all__ = ["ResultCache"]


class ResultCache:
    """Finished tasks read so far, and which of them were handed out as new.

    Args:
        store: Store of the network.

    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = anyio.Lock()
        self._rows: list[dict[str, Any]] = []
        self._offset = 0
        self._consumed = 0
        # Finished keys announced on the events channel, by index in the finished
        # list: a waiter reads exactly those hashes, skipping the LRANGE round trip.
        # Kept only while someone waits (``listening``): a worker that never waits
        # for results would otherwise decode and keep every announcement for ever.
        self._announced: dict[int, str] = {}
        self.listening = 0
        """Coroutines waiting for new results; announcements are kept only while > 0."""
        self.rows_read = 0
        """Finished-list entries read from Redis so far (for tests and diagnostics)."""

    @property
    def offset(self) -> int:
        """Entries of the finished list read so far."""
        return self._offset

    @property
    def has_new(self) -> bool:
        """Whether cached rows exist that :meth:`take_new` has not returned."""
        return len(self._rows) > self._consumed

    def announce(self, first: int, keys: Sequence[bytes]) -> None:
        """Remember keys announced at list indexes ``first, first + 1, ...`` (while someone listens)."""
        if not self.listening or first + len(keys) <= self._offset:
            return  # nobody waits, or already read
        for i, key in enumerate(keys):
            if first + i >= self._offset:
                self._announced[first + i] = key.decode()

    async def update(self, *, announced_only: bool = False) -> int:
        """Read finished tasks past the offset; returns how many list entries were read.

        Args:
            announced_only: Use the announced keys when they continue the cache
                (one round trip instead of two); read the list otherwise.

        """
        async with self._lock:
            start = self._offset
            keys: list[str] = []
            if announced_only:
                while (start + len(keys)) in self._announced:
                    keys.append(self._announced[start + len(keys)])
            if not keys:
                keys = await self._store.reads.finished_keys(start)
            if not keys:
                return 0
            hashes = await self._store.reads.read_tasks(keys)
            self._rows.extend(
                flatten_task(k, TaskState.FINISHED.value, t)
                for k, t in zip(keys, hashes, strict=True)
                if t is not None
            )
            self._offset = start + len(keys)
            self.rows_read += len(keys)
            self._announced = {i: k for i, k in self._announced.items() if i >= self._offset}
            return len(keys)

    async def rows(self) -> list[dict[str, Any]]:
        """Every finished task in finish order (reads the new ones first)."""
        await self.update()
        return list(self._rows)

    def take_new(self) -> list[dict[str, Any]]:
        """Cached rows not handed out before; each row is returned once, to one caller."""
        new = self._rows[self._consumed :]
        self._consumed = len(self._rows)
        return new

    def reset(self) -> None:
        """Forget every cached row; the next read starts at the head of the list.

        An update in flight meanwhile stays consistent: it appends the rows it
        read from the head of the list and moves the offset past them.
        """
        self._rows = []
        self._offset = 0
        self._consumed = 0
        self._announced = {}
