"""What a worker knows about the tasks it claimed: attempt, cancellation, interruption.

Outcomes are fenced by attempt in Redis (``complete.lua``): the worker sends
the attempt it claimed with every result, so the outcome of a stale attempt
(the task was re-queued and claimed again elsewhere) is discarded. A task
cancelled by the controller (``Controller.cancel_tasks``) is announced on the
events channel; the worker then skips it if it has not started, or interrupts
it where it runs (cancels its async task, kills its child process, raises in
its thread), through the callable registered with :meth:`TaskTracker.interruptible`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rushpy.logs import get_logger, log_worker

__all__ = ["UNKNOWN_VERSION", "TaskTracker"]

UNKNOWN_VERSION = b"?"
"""The constants version of a task whose claim did not say (adopted after a lost reply)."""

log = get_logger("rushpy.worker")


class TaskTracker:
    """Per-task state of the tasks a worker claimed and has not reported on yet.

    Args:
        worker_id: The worker, to which the records made while a task runs
            (the function's own logging) are attributed.

    """

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._attempts: dict[str, int] = {}
        # The constants version each claim read (claim.lua): a batch whose claims all
        # read the version the worker has cached needs no round trip to check it.
        self._versions: dict[str, bytes | None] = {}
        # How to interrupt each task that runs right now, and cancelled keys that
        # this worker claimed but has not started (skipped when their turn comes).
        self._interrupts: dict[str, Callable[[], object]] = {}
        self._cancelled: set[str] = set()

    # -- attempts -------------------------------------------------------------------------
    def claimed(self, key: str, attempt: int, constants_version: bytes | None = UNKNOWN_VERSION) -> None:
        """Record that this worker runs ``attempt`` of task ``key``, claimed with ``constants_version``."""
        self._attempts[key] = attempt
        self._versions[key] = constants_version

    def constants_version(self, key: str) -> bytes | None:
        """The constants version read when ``key`` was claimed (:data:`UNKNOWN_VERSION`: not known)."""
        return self._versions.get(key, UNKNOWN_VERSION)

    def attempt(self, key: str) -> int | None:
        """The attempt this worker runs, or ``None`` if it does not know the task."""
        return self._attempts.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._attempts

    def forget(self, key: str) -> None:
        """Drop what is tracked about a task the worker reported on or will not report on."""
        self._attempts.pop(key, None)
        self._versions.pop(key, None)
        self._cancelled.discard(key)

    # -- cancellation ---------------------------------------------------------------------
    def cancel(self, key: str) -> None:
        """A task was cancelled: skip it if it has not started, interrupt it if it runs.

        Keys this worker does not track are ignored (another worker's tasks).
        """
        if key not in self._attempts:
            return
        self._cancelled.add(key)
        interrupt = self._interrupts.get(key)
        if interrupt is not None:
            log.info("task cancelled; interrupting it", key=key)
            interrupt()

    def is_cancelled(self, key: str) -> bool:
        """Whether a task this worker claimed was cancelled (skip it or stop running it)."""
        return key in self._cancelled

    def register(self, key: str, interrupt: Callable[[], object]) -> None:
        """Interrupt task ``key`` with ``interrupt`` if it is cancelled from now on.

        The bare form of :meth:`interruptible`, for a caller that checked
        :meth:`is_cancelled` just before and attributes its records to the worker
        itself (one ``log_worker`` block for a whole batch costs less than one per
        task). Undo it with :meth:`unregister`.
        """
        self._interrupts[key] = interrupt

    def unregister(self, key: str) -> None:
        """Task ``key`` no longer runs: a cancellation from now on only marks it."""
        self._interrupts.pop(key, None)

    @contextlib.contextmanager
    def interruptible(self, key: str, interrupt: Callable[[], object]) -> Iterator[None]:
        """Register how to interrupt task ``key`` while the block runs.

        A cancellation of the task calls ``interrupt`` once; if the task was
        cancelled before the block starts, it is called at once. Records made
        inside the block (the function runs there, or in a thread started
        there) go to this worker's log (:func:`rushpy.logs.log_worker`).
        """
        self._interrupts[key] = interrupt
        with log_worker(self.worker_id):
            try:
                if key in self._cancelled:
                    interrupt()
                yield
            finally:
                self._interrupts.pop(key, None)
