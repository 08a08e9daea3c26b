"""Worker logs and counters in Redis: one capped stream per worker.

A worker's log records go to the stream ``<prefix>:{N}:worker:<id>:log``
(``XADD ... MAXLEN ~ n``: Redis trims whole nodes, so a stream holds about
``n`` records, never many more). Each entry has one field ``r``, the record
as msgpack (``ts``, ``level``, ``logger``, ``event`` and the event's fields).
Stream ids give readers a cursor: :func:`read_logs` returns the entries after
the last id a reader saw.

A flush writes records and the worker's counters (``n_finished``,
``n_failed``, ``log_dropped``: the worker's running totals, set rather than
incremented, so writing a flush twice changes nothing) and ``last_error`` in
one transaction, and only while the worker is still registered: ``WATCH`` on its
hash makes a flush that races a ``reset()`` write nothing, so no log key
outlives the network's reset (which deletes by the worker ids it recorded).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import WatchError

from rushpy.codec import decode, encode
from rushpy.store.base import Plumbing

__all__ = ["LogEntry", "LogWrite", "append_log", "read_logs", "set_fields_if_registered", "utc"]

FIELD = b"r"
"""The field of a stream entry holding the record."""


@dataclass(frozen=True, slots=True)
class LogWrite:
    """What one flush of a worker writes.

    Attributes:
        records: Log records (plain mappings of msgpack-able values).
        max_records: About how many records the worker's stream keeps.
        fields: Fields to set in the worker hash (values are encoded as msgpack).

    """

    records: Sequence[Mapping[str, Any]] = ()
    max_records: int = 10_000
    fields: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One stored record.

    Attributes:
        worker_id: The worker that wrote it.
        entry_id: Its stream id (``<ms>-<seq>``), a cursor for the next read.
        record: The record (``None`` if the entry is not a rushpy record).

    """

    worker_id: str
    entry_id: str
    record: dict[str, Any] | None


async def append_log(store: Plumbing, worker_id: str, write: LogWrite) -> bool | None:
    """Write a flush in one transaction, only if the worker is still registered.

    Returns:
        ``True`` when written, ``None`` when the worker's records are gone
        (the network was reset: nothing written, nothing to retry), ``False``
        when the worker's hash changed meanwhile (try again).

    Raises:
        ConnectionFailedError: the server is unreachable.
        ServerFullError: the server is out of memory (nothing was written).

    """
    k = store.keys
    async with store.client.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(k.worker(worker_id))
            if not await pipe.exists(k.worker(worker_id)):
                return None
            pipe.multi()  # type: ignore[no-untyped-call]
            for record in write.records:
                pipe.xadd(
                    k.log(worker_id),
                    {FIELD: encode(dict(record))},
                    maxlen=write.max_records,
                    approximate=True,
                )
            if write.fields:
                pipe.hset(k.worker(worker_id), mapping={n: encode(v) for n, v in write.fields.items()})
            await pipe.execute()
        except WatchError:
            return False
    return True


async def set_fields_if_registered(store: Plumbing, worker_id: str, fields: Mapping[str, Any]) -> bool:
    """Set fields of a worker's hash if it exists (never recreate one that ``reset()`` deleted)."""
    for _ in range(3):  # a concurrent change of the hash is rare: try a few times
        written = await append_log(store, worker_id, LogWrite(fields=fields))
        if written is not False:
            return bool(written)
    return False


async def read_logs(
    store: Plumbing, worker_ids: Sequence[str], after: Mapping[str, str] | None = None
) -> list[LogEntry]:
    """The stored records of the given workers (one round trip), per worker in write order.

    Args:
        store: Client and keys of the network.
        worker_ids: Workers to read.
        after: Per worker the last entry id already seen; only later entries are read.

    """
    if not worker_ids:
        return []
    after = after or {}
    async with store.client.pipeline(transaction=False) as pipe:
        for wid in worker_ids:
            pipe.xrange(store.keys.log(wid), min=_next_id(after.get(wid)), max="+")
        # A log key of another type (written by something else) reads as empty.
        replies = await pipe.execute(raise_on_error=False)
    out: list[LogEntry] = []
    for wid, reply in zip(worker_ids, replies, strict=True):
        if isinstance(reply, Exception):
            continue
        for entry_id, values in reply:
            out.append(LogEntry(wid, _text(entry_id), _record(values)))
    return out


def _next_id(last: str | None) -> str:
    """The smallest stream id after ``last`` (``XRANGE`` bounds are inclusive on every server)."""
    if not last:
        return "-"
    ms, _, seq = last.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(values: Mapping[bytes, bytes]) -> dict[str, Any] | None:
    raw = values.get(FIELD)
    if raw is None:
        return None
    try:
        record = decode(raw)
    except Exception:  # a damaged entry reads as missing, the rest of the log stays readable
        return None
    return dict(record) if isinstance(record, dict) else None


def utc(seconds: float) -> dt.datetime:
    """Unix seconds as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
