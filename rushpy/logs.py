"""Loggers of rushpy: structlog on top of the standard library's logging.

rushpy never configures logging for an application that imports it: records
go to ``logging.getLogger("rushpy....")``, so the application's logging setup
decides what is shown (by default, warnings and errors on stderr). The worker
command line configures logging itself (``--log-level``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_cli_logging", "get_logger"]

_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.stdlib.add_log_level,
    structlog.processors.format_exc_info,
    structlog.dev.ConsoleRenderer(colors=False),
]


def get_logger(name: str) -> Any:
    """A structlog logger that writes through ``logging.getLogger(name)``."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def configure_cli_logging(level: str) -> None:
    """Send rushpy's records at ``level`` and above to stderr (for command lines)."""
    logger = logging.getLogger("rushpy")
    logger.setLevel(getattr(logging, level.upper()))
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
