"""A progress bar for waits on tasks: counts per state, drawn with rich on a terminal.

``wait_for_tasks`` and ``as_completed`` take ``progress: bool | None``;
:func:`task_progress` turns that into a callback that the wait feeds, at every
wake-up, with the states of the keys still open. :class:`TaskProgress` turns
those states into counts (finished, failed, running, queued) and draws them.
Rich is optional (``pip install 'rushpy[progress]'``): it is imported only
when a bar is drawn, so the core never depends on it.

The default (``None``) draws a bar only when standard error is a terminal and
rich is installed: scripts, services, CI logs and notebooks' captured output
stay quiet. ``True`` draws one even on a plain stream (and asks for rich);
``False`` never draws.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, TextIO

from rushpy.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["StatesCallback", "TaskProgress", "progress_enabled", "task_progress"]

StatesCallback = Callable[[Sequence[str | None]], None]
"""What a wait calls at every wake-up with the states of the keys still open."""

_STATES = ("finished", "failed", "running", "queued")


def _has_rich() -> bool:
    """Whether rich can be imported (without importing it)."""
    return find_spec("rich") is not None


def progress_enabled(progress: bool | None, stream: TextIO | None = None) -> bool:
    """Whether a wait called with ``progress`` draws a bar.

    Args:
        progress: ``True``: always; ``False``: never; ``None``: only when
            ``stream`` is a terminal and rich is installed.
        stream: Where the bar goes (default ``sys.stderr``).

    Raises:
        ConfigError: ``progress`` is not a bool or ``None``, or it is ``True``
            and rich is not installed.

    """
    if progress is not None and not isinstance(progress, bool):
        raise ConfigError(f"progress must be True, False or None, got {progress!r}")
    if progress is False:
        return False
    if progress is True:
        if not _has_rich():
            raise ConfigError(
                "progress=True needs rich; install it with: pip install 'rushpy[progress]' "
                "(or pass progress=None to draw a bar only when rich is there)"
            )
        return True
    out = sys.stderr if stream is None else stream
    # A closed or replaced stream (pytest capture, a daemon) counts as no terminal.
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and _has_rich()


class TaskProgress:
    """Counts of a fixed set of tasks per state, drawn as one rich progress bar.

    Feed it with :meth:`observe` (the states of the keys still open, at every
    wake-up of a wait) or set counts with :meth:`update`; :meth:`close` draws
    the last state and releases the terminal. The bar appears at the first
    count, so a wait that fails its argument checks draws nothing.

    Example:
        >>> with TaskProgress(description="grid") as bar:
        ...     bar.update(finished=3, failed=1, running=2, queued=4)

    Args:
        description: The label in front of the bar.
        console: A ``rich.console.Console`` to draw on (default: standard error).
        total: How many tasks the bar counts to (default: the first counts' sum).

    """

    def __init__(
        self, description: str = "tasks", console: Console | None = None, total: int | None = None
    ) -> None:
        self.description = description
        self.total = total
        self.counts: dict[str, int] = dict.fromkeys(_STATES, 0)
        self._console = console
        self._bar: Any = None  # rich.progress.Progress once started
        self._task_id: Any = None

    def observe(self, states: Sequence[str | None]) -> None:
        """Take the states of the keys still open at one wake-up of a wait.

        A wait reports each key as finished or failed once (then it is closed),
        so those add up; running and queued are the open keys' states now. The
        first call sets the total (every key is open then).
        """
        if self.total is None:
            self.total = len(states)
        finished = self.counts["finished"] + sum(s == "finished" for s in states)
        failed = self.counts["failed"] + sum(s == "failed" for s in states)
        running = sum(s == "running" for s in states)
        queued = sum(s == "queued" for s in states)
        self.update(finished=finished, failed=failed, running=running, queued=queued)

    def update(self, *, finished: int, failed: int, running: int, queued: int) -> None:
        """Set the counts per state and redraw."""
        self.counts = {"finished": finished, "failed": failed, "running": running, "queued": queued}
        if self.total is None:
            self.total = finished + failed + running + queued
        self._draw()

    def text(self) -> str:
        """The counts as text: ``3 finished, 1 failed, 2 running, 4 queued``."""
        return ", ".join(f"{self.counts[s]} {s}" for s in _STATES)

    def _draw(self) -> None:
        """Start the bar on the first draw, then move it to the current counts."""
        if self._bar is None:
            from rich.console import Console  # noqa: PLC0415  # optional: only when a bar is drawn
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415
            from rich.table import Column  # noqa: PLC0415

            console = self._console if self._console is not None else Console(stderr=True)

            # Text and numbers never wrap or get cut; the bar takes the width left.
            def whole() -> Column:
                return Column(no_wrap=True)

            # No refresh thread: the wait redraws at every wake-up, and a thread
            # would outlive an event loop that is torn down without close().
            self._bar = Progress(
                TextColumn("{task.description}", table_column=whole()),
                BarColumn(bar_width=None),
                MofNCompleteColumn(table_column=whole()),
                TextColumn("{task.fields[counts]}", table_column=whole()),
                TimeElapsedColumn(table_column=whole()),
                console=console,
                auto_refresh=False,
            )
            self._bar.start()
            self._task_id = self._bar.add_task(self.description, total=self.total, counts="")
        done = self.counts["finished"] + self.counts["failed"]
        self._bar.update(self._task_id, completed=done, total=self.total, counts=self.text())
        self._bar.refresh()

    def close(self) -> None:
        """Draw the last counts and give the terminal back (idempotent)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> TaskProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def task_progress(progress: bool | None, description: str) -> Iterator[StatesCallback | None]:
    """The callback a wait feeds with open keys' states, or ``None`` when no bar is drawn.

    Args:
        progress: As in :func:`progress_enabled`.
        description: The bar's label (the method's name).

    Raises:
        ConfigError: as :func:`progress_enabled`.

    """
    if not progress_enabled(progress):
        yield None
        return
    bar = TaskProgress(description)
    try:
        yield bar.observe
    finally:
        bar.close()
