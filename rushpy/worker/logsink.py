"""A worker's log in Redis: records buffered in memory, flushed in batches.

:class:`LogSink` takes the worker's own records (rushpy's structlog loggers)
and the standard-library ``logging`` records of the function it runs, keeps
them in a bounded buffer and writes them every :data:`FLUSH_INTERVAL`
seconds, together with the worker's counts (:class:`~rushpy.worker.results.TaskCounts`),
in one transaction (:func:`rushpy.store.logs.append_log`). Nothing about it
can stall or fail the worker:

- a record costs an append to a deque; the round trip happens in the
  background, once per interval, however many records came;
- while Redis is slow, unreachable or full, records wait in the buffer, and
  once it holds :data:`BUFFER_RECORDS` the newest are dropped and counted
  (``log_dropped`` in the worker's hash, and a record saying how many);
- the stream in Redis keeps about :data:`MAX_RECORDS` records per worker.

**Which records.** One ``logging.Handler`` per process, on the ``rushpy``
logger and the root logger, hands each record to the sink of the worker it
belongs to: the worker whose ``async with`` block (or background task, or
function thread: anyio copies context variables into threads) made it, told
by a context variable; a record made outside any worker's context (another
thread of the application) goes to the process's only sink, if there is
exactly one (the worker command line), and nowhere otherwise. What is
recorded follows the loggers' levels: the command line sets them with
``--log-level``; in an application, its own logging setup decides. Functions
run in a child process (plain functions with a task timeout) log to the
worker's output, not to Redis.

**Status lines.** Every :data:`STATUS_EVERY` seconds, when something changed,
the sink writes a status line with the counts so far.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import threading
import time
from typing import Any

import anyio
import anyio.abc

from rushpy.logs import FIELDS_ATTR, LOG_WORKER, get_logger, status_logger
from rushpy.store import Store
from rushpy.store.logs import LogWrite, append_log
from rushpy.worker.results import TaskCounts

__all__ = [
    "BUFFER_RECORDS",
    "CLOSE_FLUSH_TIMEOUT",
    "COUNTS_EVERY",
    "FLUSH_INTERVAL",
    "MAX_EVENT_CHARS",
    "MAX_RECORDS",
    "STATUS_EVERY",
    "LogSink",
]

log = get_logger("rushpy.worker")
status = status_logger()

FLUSH_INTERVAL = 0.5
COUNTS_EVERY = 2.0
"""Seconds between writes of the counts alone (no new records): a worker that finishes
a task a second would otherwise write its hash twice a second, which for a thousand
workers is most of the server's work (``benchmarks/thousand.py``)."""
"""Seconds between writes of the buffered records (and counts) to Redis."""
BUFFER_RECORDS = 10_000
"""Records a worker holds while they cannot be written; later ones are dropped and counted."""
MAX_RECORDS = 10_000
"""About how many records the stream of one worker keeps (``XADD MAXLEN ~``)."""
MAX_EVENT_CHARS = 8_192
"""Characters of a record's message (and of each field) kept; longer ones are cut."""
STATUS_EVERY = 60.0
"""Seconds between the status lines with the worker's counts."""
CLOSE_FLUSH_TIMEOUT = 2.0
"""Seconds the last flush of an exiting worker may take."""

_SKIP = {"event", "level", "timestamp", "logger", "worker_id"}


class _Dispatch(logging.Handler):
    """The one handler of a process: routes records to the sink of their worker."""

    def __init__(self) -> None:
        super().__init__()
        self.sinks: dict[str, LogSink] = {}

    def emit(self, record: logging.LogRecord) -> None:
        # The same record reaches the rushpy logger's handler and, propagating, the root's.
        if getattr(record, "_rushpy_sunk", False):
            return
        record._rushpy_sunk = True
        # A worker's own records name it; others belong to the context they run in.
        fields = getattr(record, FIELDS_ATTR, None)
        worker_id = fields.get("worker_id") if isinstance(fields, dict) else None
        if not isinstance(worker_id, str) or worker_id not in self.sinks:
            worker_id = LOG_WORKER.get()
        sinks = self.sinks
        sink = sinks.get(worker_id) if worker_id is not None else None
        if sink is None and worker_id is None and len(sinks) == 1:
            sink = next(iter(sinks.values()), None)
        if sink is not None:
            sink.add(record)


_LOCK = threading.Lock()
_DISPATCH = _Dispatch()


def _attach(sink: LogSink) -> None:
    with _LOCK:
        if not _DISPATCH.sinks:
            logging.getLogger("rushpy").addHandler(_DISPATCH)
            logging.getLogger().addHandler(_DISPATCH)
        _DISPATCH.sinks = {**_DISPATCH.sinks, sink.worker_id: sink}  # copy: emit reads without the lock


def _detach(sink: LogSink) -> None:
    with _LOCK:
        if _DISPATCH.sinks.get(sink.worker_id) is sink:
            _DISPATCH.sinks = {w: s for w, s in _DISPATCH.sinks.items() if w != sink.worker_id}
        if not _DISPATCH.sinks:
            logging.getLogger("rushpy").removeHandler(_DISPATCH)
            logging.getLogger().removeHandler(_DISPATCH)


def _plain(value: Any) -> Any:
    """A field value as something msgpack keeps (scalars as they are, the rest as text)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return (value if isinstance(value, str) else str(value))[:MAX_EVENT_CHARS]


def to_record(record: logging.LogRecord) -> dict[str, Any]:
    """A ``logging`` record as a stored one: ``ts``, ``level``, ``logger``, ``event``, fields."""
    fields = getattr(record, FIELDS_ATTR, None)
    out: dict[str, Any] = {
        "ts": record.created,
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    if isinstance(fields, dict):
        out["event"] = _plain(fields.get("event", ""))
        for name, value in fields.items():
            if name not in _SKIP:
                out[str(name)] = _plain(value)
    else:
        try:
            out["event"] = _plain(record.getMessage())
        except Exception as exc:  # a bad format string in the application's own call
            out["event"] = _plain(f"{record.msg!r} (unformattable: {exc})")
        if record.exc_info:
            out["exception"] = _plain(logging.Formatter().formatException(record.exc_info))
    return out


class LogSink:
    """Buffers a worker's log records and writes them, with its counts, to Redis.

    Args:
        store: Store of the network.
        worker_id: Id of the worker.
        counts: The worker's totals (written with each flush).
        flush_interval: Seconds between flushes.
        buffer_records: Records held while they cannot be written.
        max_records: About how many records the worker's stream keeps.
        status_every: Seconds between status lines with the counts.
        counts_every: Seconds between writes of changed counts when there are no
            new records (records go out every ``flush_interval``, counts with them).

    """

    def __init__(
        self,
        store: Store,
        worker_id: str,
        counts: TaskCounts,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        buffer_records: int = BUFFER_RECORDS,
        max_records: int = MAX_RECORDS,
        status_every: float = STATUS_EVERY,
        counts_every: float = COUNTS_EVERY,
    ) -> None:
        self.worker_id = worker_id
        self._store = store
        self._counts = counts
        self.flush_interval = flush_interval
        self.buffer_records = buffer_records
        self.max_records = max_records
        self.status_every = status_every
        self.counts_every = counts_every
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._lock = threading.Lock()  # records come from function threads too
        self.dropped = 0
        """Records dropped because the buffer was full."""
        self._reported_dropped = 0
        self._written: tuple[int, int, int, object] | None = None
        self._token: contextvars.Token[str | None] | None = None
        self._gone = False
        self._flush_lock = anyio.Lock()

    # -- records ------------------------------------------------------------------------
    def add(self, record: logging.LogRecord) -> None:
        """Buffer one record (any thread); a full buffer drops it and counts the drop."""
        stored = to_record(record)
        with self._lock:
            if len(self._buffer) >= self.buffer_records:
                self.dropped += 1
            else:
                self._buffer.append(stored)

    @property
    def buffered(self) -> int:
        """Records waiting to be written."""
        return len(self._buffer)

    # -- life cycle ---------------------------------------------------------------------
    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Take the records of the calling context (and of tasks it starts) and flush in the background."""
        self._token = LOG_WORKER.set(self.worker_id)
        _attach(self)
        task_group.start_soon(self._run, name=f"rushpy-log-{self.worker_id}")

    async def _run(self) -> None:
        since_status = 0.0
        since_counts = 0.0
        last_status = (0, 0)
        while True:
            await anyio.sleep(self.flush_interval)
            since_status += self.flush_interval
            since_counts += self.flush_interval
            if since_status >= self.status_every:
                since_status = 0.0
                now = (self._counts.finished, self._counts.failed)
                if now != last_status:
                    last_status = now
                    status.info("tasks so far", finished=now[0], failed=now[1])
            try:
                if await self.flush(counts_due=since_counts >= self.counts_every) is not None:
                    since_counts = 0.0
            except Exception as exc:  # Redis slow, unreachable or full: the buffer waits
                log.debug("could not write the log; retrying", error=f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        """Stop taking records and write what is left (within :data:`CLOSE_FLUSH_TIMEOUT`)."""
        _detach(self)
        if self._token is not None:
            try:
                LOG_WORKER.reset(self._token)
            except ValueError:  # closed from another context than the one that started it
                LOG_WORKER.set(None)
            self._token = None
        with anyio.move_on_after(CLOSE_FLUSH_TIMEOUT):
            for _ in range(3):  # the exit record changes the worker's hash: a flush may have to repeat
                try:
                    if await self.flush() is not False:
                        return
                except Exception as exc:  # the exit goes on; the records are lost
                    log.debug("could not write the last log records", error=f"{type(exc).__name__}: {exc}")
                    return

    async def flush(self, *, counts_due: bool = True) -> bool | None:
        """Write the buffered records and the counts (one transaction), if anything changed.

        Args:
            counts_due: Write changed counts even without new records.

        Returns:
            ``None`` when there was nothing to write, ``False`` when the worker's
            hash changed during the write (nothing was written; the next flush
            tries again), else ``True``.

        Raises:
            ConnectionFailedError: Redis is unreachable (the records stay buffered).
            ServerFullError: Redis is out of memory (the records stay buffered).

        """
        async with self._flush_lock:
            if self._gone:
                return True
            with self._lock:
                records = list(self._buffer)
                dropped = self.dropped
            if dropped > self._reported_dropped:
                records.append(
                    {
                        "ts": time.time(),
                        "level": "warning",
                        "logger": "rushpy.worker",
                        "event": "log records dropped: the buffer was full while Redis could not take them",
                        "n": dropped - self._reported_dropped,
                    }
                )
            counts = self._counts
            totals = (counts.finished, counts.failed, dropped, counts.last_error)
            if not records and (totals == self._written or not counts_due):
                return None
            fields: dict[str, Any] = {"n_finished": totals[0], "n_failed": totals[1], "log_dropped": dropped}
            if counts.last_error is not None:
                fields["last_error"] = counts.last_error
            write = LogWrite(records=records, max_records=self.max_records, fields=fields)
            written = await append_log(self._store.workers, self.worker_id, write)
            if written is False:
                return False  # the hash changed meanwhile: the next flush tries again
            n = len(records) - (1 if dropped > self._reported_dropped else 0)
            with self._lock:
                for _ in range(min(n, len(self._buffer))):
                    self._buffer.popleft()
            self._reported_dropped = dropped
            self._written = totals
            if written is None:
                self._gone = True  # the network was reset: nothing more to write
            return True
