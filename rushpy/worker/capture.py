"""Output relay: a task's stdout and warnings, captured while it runs and stored with its outcome.

A task pushed with ``push_tasks(..., capture_output=True)`` carries the entry
``capture_output`` in its ``xs_extra`` (:data:`rushpy.fields.CAPTURE_OUTPUT`).
The worker then records what the function prints to ``sys.stdout`` and the
warnings it raises, and stores them with the task's outcome:

- a result: in ``ys_extra`` as ``stdout`` (a string) and ``warnings`` (a
  list of mappings with ``category``, ``message``, ``filename``, ``lineno``),
  so rows get ``stdout`` and ``warnings`` columns;
- a failure: as the entries ``stdout`` and ``warnings`` of its ``condition``
  (rows lift them into the same columns).

Each is bounded: stdout keeps its first :data:`MAX_STDOUT_CHARS` characters
and then a marker saying how many were dropped; warnings keep the first
:data:`MAX_WARNINGS` (each message cut to :data:`MAX_WARNING_CHARS`) and then
one marker entry of category :data:`TRUNCATED`.

Why not ``contextlib.redirect_stdout`` and ``warnings.catch_warnings``: both
swap process-wide state, and a worker runs several tasks at once (threads
for plain functions, tasks on one event loop for ``async`` ones); two
overlapping swaps restore each other's state in the wrong order and lose or
leak output. Instead ``sys.stdout`` and ``warnings.showwarning`` are wrapped
once by relays that look up the current task's buffer in a
:class:`contextvars.ContextVar`. A context variable is per thread and per
asyncio task (and inherited by tasks the function starts), so concurrent
tasks never see each other's output; writes outside a captured task go
through to the stream as before.

Limits: output written below ``sys.stdout`` (``os.write(1, ...)``, C
extensions, subprocesses) and by threads the function starts itself (they do
not inherit the context) is not captured. Warnings follow the warnings
filters as usual; each captured task starts with the "once per location"
registries reset, so it reports each warning the first time it occurs in
that task, as a fresh process would. A plain function whose task has a
timeout runs in a child process, where the same capture runs alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from rushpy.fields import CAPTURE_OUTPUT

__all__ = [
    "MAX_STDOUT_CHARS",
    "MAX_WARNINGS",
    "MAX_WARNING_CHARS",
    "TRUNCATED",
    "Captured",
    "attach_output",
    "capturing",
    "wants_capture",
]

MAX_STDOUT_CHARS = 64 * 1024
"""Characters of a task's stdout that are kept; the rest is replaced by a marker."""
MAX_WARNINGS = 100
"""Warnings of a task that are kept; the rest are counted in one marker entry."""
MAX_WARNING_CHARS = 2000
"""Characters of one warning's message that are kept."""
TRUNCATED = "TruncatedOutput"
"""Category of the marker entry that ends a list of warnings cut at :data:`MAX_WARNINGS`."""

_current: contextvars.ContextVar[Captured | None] = contextvars.ContextVar("rushpy_capture", default=None)
_install_lock = threading.Lock()


@dataclass
class Captured:
    """What one task wrote to stdout and the warnings it raised, bounded in size.

    Attributes:
        parts: The kept pieces of stdout, in order.
        kept: Characters kept so far.
        dropped: Characters of stdout not kept.
        warnings: Kept warnings, as mappings.
        dropped_warnings: Warnings not kept.

    """

    parts: list[str] = field(default_factory=list)
    kept: int = 0
    dropped: int = 0
    warnings: list[dict[str, Any]] = field(default_factory=list)
    dropped_warnings: int = 0

    def write(self, text: str) -> None:
        """Keep ``text`` up to the bound; count the rest."""
        room = MAX_STDOUT_CHARS - self.kept
        if len(text) <= room:
            self.parts.append(text)
            self.kept += len(text)
            return
        if room > 0:
            self.parts.append(text[:room])
            self.kept += room
        self.dropped += len(text) - max(room, 0)

    def warn(self, message: Warning | str, category: type[Warning], filename: str, lineno: int) -> None:
        """Record one warning, up to :data:`MAX_WARNINGS`."""
        if len(self.warnings) >= MAX_WARNINGS:
            self.dropped_warnings += 1
            return
        text = str(message)
        if len(text) > MAX_WARNING_CHARS:
            text = text[:MAX_WARNING_CHARS] + f" [... {len(text) - MAX_WARNING_CHARS} more characters]"
        self.warnings.append(
            {"category": category.__name__, "message": text, "filename": str(filename), "lineno": lineno}
        )

    def fields(self) -> dict[str, Any]:
        """``{"stdout": ..., "warnings": [...]}`` as stored with the task, markers included."""
        stdout = "".join(self.parts)
        if self.dropped:
            stdout += f"\n[... output truncated: {self.dropped} more characters]\n"
        found = list(self.warnings)
        if self.dropped_warnings:
            found.append(
                {
                    "category": TRUNCATED,
                    "message": f"{self.dropped_warnings} more warnings were not kept",
                    "filename": "",
                    "lineno": 0,
                }
            )
        return {"stdout": stdout, "warnings": found}


class _StdoutRelay:
    """Stands in for ``sys.stdout``: writes of a captured task go to its buffer, the rest through."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        captured = _current.get()
        if captured is None:
            return self._stream.write(text)
        captured.write(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _current.get() is None:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        # Everything else (encoding, isatty, fileno, ...) is the wrapped stream's.
        return getattr(self._stream, name)


class _WarningRelay:
    """Stands in for ``warnings.showwarning``: a captured task's warnings go to its buffer."""

    def __init__(self, show: Any) -> None:
        self._show = show

    def __call__(  # noqa: PLR0917 - the signature of warnings.showwarning
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        captured = _current.get()
        if captured is None:
            self._show(message, category, filename, lineno, file, line)
        else:
            captured.warn(message, category, filename, lineno)


def _install() -> None:
    """Wrap the current ``sys.stdout`` and ``warnings.showwarning`` unless they are relays already.

    Checked at every capture, not once: test runners and notebooks replace
    ``sys.stdout`` at will, and ``catch_warnings`` restores ``showwarning``.
    The relays are never removed: another thread may still be capturing.
    """
    with _install_lock:
        if not isinstance(sys.stdout, _StdoutRelay):
            sys.stdout = _StdoutRelay(sys.stdout)
        if not isinstance(warnings.showwarning, _WarningRelay):
            warnings.showwarning = _WarningRelay(warnings.showwarning)
        # Forget which warnings were shown already, so this task reports its own
        # (the module-level "once per location" registries are keyed by version).
        mutated = getattr(warnings, "_filters_mutated", None) or getattr(
            warnings, "_filters_mutated_lock_held", None
        )
        if mutated is not None:
            mutated()


@contextlib.contextmanager
def capturing(enabled: bool) -> Iterator[Captured | None]:
    """Capture stdout and warnings of the code run inside, if ``enabled``; yields the buffer or ``None``."""
    if not enabled:
        yield None
        return
    _install()
    captured = Captured()
    token = _current.set(captured)
    try:
        yield captured
    finally:
        _current.reset(token)


def wants_capture(xs_extra: Mapping[str, Any] | None) -> bool:
    """Whether a task asked for its output (the ``capture_output`` entry of its ``xs_extra``)."""
    return xs_extra is not None and bool(xs_extra.get(CAPTURE_OUTPUT))


def attach_output(
    outcome: tuple[str, int, bool, dict[str, Any]], captured: Captured | Mapping[str, Any] | None
) -> tuple[str, int, bool, dict[str, Any]]:
    """``outcome`` with the captured output: in ``ys_extra`` for a result, in ``condition`` for a failure.

    ``captured`` is a buffer, or its :meth:`Captured.fields` as a child process
    sent them back; ``None`` leaves the outcome as it is.
    """
    if captured is None:
        return outcome
    key, attempt, ok, fields = outcome
    output = captured.fields() if isinstance(captured, Captured) else dict(captured)
    if ok:
        return key, attempt, ok, {**fields, "ys_extra": {**(fields.get("ys_extra") or {}), **output}}
    return key, attempt, ok, {**fields, "condition": {**fields["condition"], **output}}
