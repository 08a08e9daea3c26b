"""Failures of remote calls re-raised locally, with the worker's traceback attached.

Used by :class:`rushpy.Executor` and the joblib backend: a task that failed on
a worker comes back as an exception of the same builtin type when there is
one (else :class:`~rushpy.errors.RemoteError`), whose ``__cause__`` is a
:class:`RemoteTraceback` holding the worker's formatted traceback, as
``concurrent.futures.ProcessPoolExecutor`` does.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from rushpy.errors import RemoteError

__all__ = ["RemoteTraceback", "remote_exception"]


class RemoteTraceback(Exception):  # as concurrent.futures.process._RemoteTraceback
    """The worker's traceback, attached as ``__cause__`` of an exception re-raised by the Executor."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def remote_exception(key: str, condition: Mapping[str, Any]) -> BaseException:
    """The exception to raise for a failed task: its builtin type re-created, else a RemoteError."""
    kind, message = str(condition.get("type", "Error")), str(condition.get("message", ""))
    cls = getattr(builtins, kind, None)
    exc: BaseException | None = None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            exc = cls(message)
        except Exception:  # a builtin with another constructor: fall back below
            exc = None
    if exc is None:
        error = RemoteError(f"task {key} failed on its worker with {kind}: {message}")
        error.condition = dict(condition)  # type: ignore[attr-defined]
        exc = error
    exc.__cause__ = RemoteTraceback(str(condition.get("traceback") or f"{kind}: {message}\n"))
    return exc
