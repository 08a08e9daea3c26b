"""Announcements of finished and failed tasks, and the outcomes waiters learn from them.

Every script that finishes tasks or fails them for good publishes on the
network's events channel:

- ``F <first> <key> ...``: keys appended to the finished list, ``<first>``
  being the index of the first one. A small batch goes on with a newline and
  the msgpack array of each task's hash (``HGETALL``, flat): the rows travel
  with the event, so a waiter needs no read.
- ``X <first> <key> ...``: keys appended to the failed log (failed for good).

:func:`parse` turns such a message into an :class:`Announcement` (``None`` for
every other message, or for one that does not parse: a damaged payload costs
the rows, never the wake-up). :class:`Outcomes` keeps what the announcements
said about the keys someone waits for, so that a waiter woken only by
announcements knows which of its keys closed without asking Redis.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgpack  # type: ignore[import-untyped]

from rushpy.models import TaskState

__all__ = ["Announcement", "Outcomes", "parse"]

_FINISHED = TaskState.FINISHED.value
_FAILED = TaskState.FAILED.value


@dataclass(frozen=True, slots=True)
class Announcement:
    """One ``F`` or ``X`` message.

    Attributes:
        failed: ``X`` (entries of the failed log), not ``F`` (of the finished list).
        first: Index of the first key in its list.
        keys: The keys, in list order.
        rows: Each key's hash as a flat ``HGETALL`` reply, when the message carried them.

    """

    failed: bool
    first: int
    keys: list[bytes]
    rows: list[list[bytes]] | None

    @property
    def state(self) -> str:
        """The state the keys entered: ``finished`` or ``failed``."""
        return _FAILED if self.failed else _FINISHED


def parse(data: bytes) -> Announcement | None:
    """The announcement in a message of the events channel, or ``None`` for any other message."""
    if not data.startswith((b"F ", b"X ")):
        return None
    head, newline, body = data.partition(b"\n")
    parts = head.split(b" ")
    try:
        first = int(parts[1])
    except ValueError:
        return None
    keys = parts[2:]
    rows = _rows(body, len(keys)) if newline else None
    return Announcement(data[:1] == b"X", first, keys, rows)


def _rows(body: bytes, n: int) -> list[list[bytes]] | None:
    """The rows of a message body, or ``None`` when they are not ``n`` lists of bytes."""
    try:
        rows = msgpack.unpackb(body, raw=True, use_list=True)
    except Exception:  # any decoder failure: the keys still count, the rows do not
        return None
    if type(rows) is not list or len(rows) != n:
        return None
    for row in rows:
        if type(row) is not list or len(row) % 2 or not all(type(v) is bytes for v in row):
            return None
    return rows

_LOG_SLACK = 1024
"""Entries of unwatched keys the closure log may hold before it is compacted."""


class Outcomes:
    """What announcements said about the keys that waiters wait for.

    A waiter :meth:`watch` es its keys, and :meth:`unwatch` es them when it
    is done; only watched keys are remembered, so memory stays bounded by
    what is being waited for. :attr:`announcements` counts the announcements
    seen: a waiter that sees the events counter move by exactly as many
    announcements knows that nothing else happened (no reconnection, no
    other message) and that its keys closed only if they were announced.
    """

    def __init__(self) -> None:
        self._watched: Counter[str] = Counter()
        # Per key: the number of the announcement, the state, the row (if carried).
        self._closed: dict[str, tuple[int, str, list[bytes] | None]] = {}
        # (announcement number, key) of watched keys, in order: a waiter reads only what
        # was announced since it last looked, never all its keys (a wait stays O(N)).
        self._log: list[tuple[int, str]] = []
        self.announcements = 0
        """``F`` and ``X`` messages seen so far."""

    def watch(self, keys: Iterable[str]) -> None:
        """Remember announcements of ``keys`` from now on."""
        self._watched.update(keys)

    def unwatch(self, keys: Iterable[str]) -> None:
        """Stop remembering ``keys`` (once every waiter of a key stopped, it is forgotten)."""
        for key in keys:
            left = self._watched[key] - 1
            if left > 0:
                self._watched[key] = left
            else:
                del self._watched[key]
                self._closed.pop(key, None)
        if not self._watched:
            self._log.clear()
        elif len(self._log) > 2 * len(self._watched) + _LOG_SLACK:
            # Waiters come and go (a web service): drop the entries of keys nobody watches.
            self._log = [entry for entry in self._log if entry[1] in self._watched]

    def record(self, announcement: Announcement) -> None:
        """Note the watched keys of an announcement, with their rows when it carried them."""
        self.announcements += 1
        if not self._watched:
            return
        rows: Sequence[list[bytes] | None] = announcement.rows or [None] * len(announcement.keys)
        state = announcement.state
        for raw, row in zip(announcement.keys, rows, strict=True):
            key = raw.decode(errors="replace")
            if key in self._watched:
                self._closed[key] = (self.announcements, state, row)
                self._log.append((self.announcements, key))

    def announced_since(self, after: int) -> list[str]:
        """Watched keys announced after announcement number ``after``, oldest first (a key may repeat)."""
        start = bisect.bisect_right(self._log, after, key=lambda entry: entry[0])
        return [key for _, key in self._log[start:]]

    def closed(self, key: str, after: int) -> tuple[str, list[bytes] | None] | None:
        """The state a watched key was announced in, and its row if announced with it.

        Args:
            key: A watched key.
            after: The value of :attr:`announcements` when the caller last
                looked at Redis: older announcements are stale (the task may
                have been retried since, and the caller saw it open).

        """
        found = self._closed.get(key)
        if found is None or found[0] <= after:
            return None
        return found[1], found[2]
