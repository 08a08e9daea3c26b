"""Loggers of rushpy: structlog on top of the standard library's logging.

rushpy never configures logging for an application that imports it: records
go to ``logging.getLogger("rushpy....")``, so the application's logging setup
decides what is shown (by default, warnings and errors on stderr). The worker
command line configures logging itself (``--log-level``).

Every record made through :func:`get_logger` carries, next to its rendered
message, the structured event (``event`` and its key-value fields) in the
record attribute :data:`FIELDS_ATTR`, so a handler that ships records
elsewhere (a worker's log in Redis, :mod:`rushpy.worker.logsink`) keeps the
fields apart instead of parsing the message.

A worker's *status lines* (it started, a task failed, periodic counts, why it
stops) go to the logger :data:`STATUS_LOGGER`. The worker command line shows
them at its default level (``warning``): they are what an operator watching a
worker needs, while the rest of ``rushpy.worker`` at info level is detail.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog

__all__ = [
    "FIELDS_ATTR",
    "LOG_WORKER",
    "STATUS_LOGGER",
    "configure_cli_logging",
    "get_logger",
    "log_worker",
    "status_logger",
]

FIELDS_ATTR = "rushpy_fields"
"""Attribute of a ``logging.LogRecord`` holding the structlog event dict (``event`` and fields)."""

STATUS_LOGGER = "rushpy.worker.status"
"""Logger of a worker's status lines, shown by the worker command line at every level but ``error``."""

LOG_WORKER: contextvars.ContextVar[str | None] = contextvars.ContextVar("rushpy_log_worker", default=None)
"""The worker on whose behalf the current code runs: its log in Redis gets the records made here."""

_RENDER = structlog.dev.ConsoleRenderer(colors=False)


@contextlib.contextmanager
def log_worker(worker_id: str) -> Iterator[None]:
    """Attribute the records made inside the block (and in threads anyio starts from it) to ``worker_id``."""
    token = LOG_WORKER.set(worker_id)
    try:
        yield
    finally:
        LOG_WORKER.reset(token)


def _to_stdlib(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Render the message for plain handlers and keep the event dict on the record."""
    fields = dict(event_dict)  # the renderer pops what it prints
    rendered = _RENDER(logger, method_name, event_dict)
    # structlog passes a final (args, kwargs) pair on to the stdlib logger method.
    return (rendered,), {"extra": {FIELDS_ATTR: fields}}


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.stdlib.add_log_level,
    structlog.processors.format_exc_info,
    _to_stdlib,
]


def get_logger(name: str) -> Any:
    """A structlog logger that writes through ``logging.getLogger(name)``."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def status_logger() -> Any:
    """The logger of a worker's status lines (:data:`STATUS_LOGGER`)."""
    return get_logger(STATUS_LOGGER)


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler of a command line (a class of its own, so it is installed once)."""


def configure_cli_logging(level: str) -> None:
    """Show records at ``level`` and above on stderr (for command lines).

    The level applies to rushpy's loggers and to the root logger, so the
    standard-library logging of a worker's function is shown (and shipped to
    Redis) at the same level. A worker's status lines (:data:`STATUS_LOGGER`)
    are shown down to ``info`` whatever the level, except at ``error``.
    """
    threshold = getattr(logging, level.upper())
    root = logging.getLogger()
    root.setLevel(threshold)
    if not any(isinstance(h, _CliHandler) for h in root.handlers):
        handler = _CliHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        root.addHandler(handler)
    rushpy = logging.getLogger("rushpy")
    rushpy.setLevel(threshold)
    # Records travel up to the root's handler; an older setup may have stopped them.
    rushpy.propagate = True
    status = min(threshold, logging.INFO) if threshold < logging.ERROR else threshold
    logging.getLogger(STATUS_LOGGER).setLevel(status)
