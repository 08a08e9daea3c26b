"""The log reads that Controller and Worker share: ``read_log()`` and ``print_log()``.

Workers write their records to one capped stream each (see
:mod:`rushpy.worker.logsink` and :mod:`rushpy.store.logs`); these methods
read them back from any client of the network. :meth:`LogMethods.print_log`
keeps, per owner, the last entry it printed of each worker, so every record
is printed once however often it is called.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from typing import IO, Any

import anyio

from rushpy.errors import ConfigError
from rushpy.session import Session
from rushpy.store.logs import LogEntry, read_logs
from rushpy.table import Table

__all__ = ["LOG_COLUMNS", "LogMethods", "format_record"]

LOG_COLUMNS = ("worker_id", "timestamp", "level", "logger", "event")
"""Columns every row of :meth:`LogMethods.read_log` starts with."""


class _Cursor:
    """What :meth:`LogMethods.print_log` printed already: the last entry id per worker."""

    def __init__(self) -> None:
        self.after: dict[str, str] = {}
        self.lock = anyio.Lock()


class LogMethods:
    """Log reads of a network client; the owner sets ``_session``."""

    _session: Session

    async def read_log(
        self,
        worker_ids: str | Sequence[str] | None = None,
        since: dt.datetime | float | None = None,
    ) -> Table:
        """The log records of workers, oldest first.

        Each worker keeps about its last 10,000 records
        (:data:`rushpy.worker.logsink.MAX_RECORDS`); a worker writes them
        every 0.5 s, so the latest half second may be missing.

        Args:
            worker_ids: A worker id or ids (default: every worker that registered).
            since: Only records made at or after this time (an aware datetime,
                a naive one taken as UTC, or Unix seconds).

        Returns:
            One row per record: ``worker_id``, ``timestamp`` (UTC datetime),
            ``level``, ``logger``, ``event``, then the record's own fields
            (``exception`` for a logged exception, ``key``, ``n``, ...).

        Raises:
            ConfigError: ``since`` is not a datetime or a number.

        """
        cutoff = _cutoff(since)
        ids = await self._log_worker_ids(worker_ids)
        entries = await read_logs(self._session.store.workers, ids)
        rows = [_row(e) for e in entries if e.record is not None]
        if cutoff is not None:
            rows = [r for r in rows if r["_ts"] >= cutoff]
        return _table(rows)

    async def read_new_log(self, worker_ids: str | Sequence[str] | None = None) -> Table:
        """The log records that no earlier call on this object returned or printed, oldest first.

        The log's stream: it keeps the last entry read of each worker (shared
        with :meth:`print_log`), so a record written late (workers write every
        0.5 s, each on its own schedule) is never skipped, and none comes twice,
        also with concurrent calls. Rows as in :meth:`read_log`.

        Args:
            worker_ids: A worker id or ids (default: every worker that registered).

        """
        cursor: _Cursor | None = self.__dict__.get("_log_cursor")
        if cursor is None:
            cursor = self.__dict__.setdefault("_log_cursor", _Cursor())
        async with cursor.lock:
            ids = await self._log_worker_ids(worker_ids)
            entries = await read_logs(self._session.store.workers, ids, cursor.after)
            for entry in entries:
                cursor.after[entry.worker_id] = entry.entry_id
            return _table([_row(e) for e in entries if e.record is not None])

    async def print_log(self, file: IO[str] | None = None) -> int:
        """Print the records that this object has not printed before; returns how many it printed.

        One line per record: time (UTC), worker, level, logger, message and
        fields. Concurrent calls never print a record twice (see :meth:`read_new_log`).

        Args:
            file: Where to print (default ``sys.stdout``).

        """
        rows = await self.read_new_log()
        out = file if file is not None else sys.stdout
        for row in rows:
            print(format_record(row), file=out)
        return len(rows)

    async def _log_worker_ids(self, worker_ids: str | Sequence[str] | None) -> list[str]:
        if worker_ids is None:
            return await self._session.store.workers.worker_ids()
        return [worker_ids] if isinstance(worker_ids, str) else list(worker_ids)


def _cutoff(since: dt.datetime | float | None) -> float | None:
    if since is None:
        return None
    if isinstance(since, dt.datetime):
        return (since if since.tzinfo else since.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(since, (int, float)) and not isinstance(since, bool):
        return float(since)
    raise ConfigError(f"invalid since={since!r}: pass a datetime or Unix seconds")


def _row(entry: LogEntry) -> dict[str, Any]:
    record = dict(entry.record or {})
    ts = record.pop("ts", 0.0)
    ts = float(ts) if isinstance(ts, (int, float)) else 0.0
    row: dict[str, Any] = {
        "worker_id": entry.worker_id,
        "timestamp": dt.datetime.fromtimestamp(ts, dt.UTC),
        "level": record.pop("level", None),
        "logger": record.pop("logger", None),
        "event": record.pop("event", None),
    }
    for name, value in record.items():
        row[name if name not in row else f"field.{name}"] = value
    row["_ts"] = ts
    return row


def _table(rows: list[dict[str, Any]]) -> Table:
    rows.sort(key=lambda r: r["_ts"])  # stable: one worker's records keep their order
    for row in rows:
        del row["_ts"]
    return Table(rows)


def format_record(row: dict[str, Any]) -> str:
    """One printed line of a log row (as :meth:`LogMethods.print_log` prints it)."""
    ts = row.get("timestamp")
    when = ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if isinstance(ts, dt.datetime) else "?"
    fields = " ".join(
        f"{name}={value}" for name, value in row.items() if name not in LOG_COLUMNS and name != "_ts"
    )
    level = row.get("level") or "?"
    line = f"{when} [{row.get('worker_id')}] {level!s:<7} {row.get('logger')}: {row.get('event')}"
    return f"{line} {fields}" if fields else line
