"""One stop state per worker, fed by every source that can stop it.

A worker stops for many reasons: :meth:`~rushpy.Worker.set_terminated`, a
signal caught by the command line, its terminate key or channel
(``stop_workers("terminate")``), the network-wide drain key
(``push_tasks(..., terminate_workers=True)``), its kill key or channel
(``stop_workers("kill")``, a second SIGINT), a heartbeat refused because the
worker no longer counts as running, a claim refused for the same reason, and
the idle timeout of :func:`~rushpy.worker.run_function`. Every one of them
writes to a :class:`StopState`; pops, loops and the exit read it, so there is
exactly one answer to "should this worker stop, and how".

The flags only ever go from unset to set: a stopped worker never resumes.
The first reason given is kept (:attr:`StopState.reason`) and written as a
status line (:data:`rushpy.logs.STATUS_LOGGER`), so the worker's output and
its log in Redis say why it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rushpy.logs import status_logger
from rushpy.models import WorkerState

__all__ = ["StopState"]

log = status_logger()


class StopState:
    """Whether a worker should stop, and whether the stop is a kill.

    Args:
        worker_id: Id of the worker, for log records.

    """

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._terminated = False
        self._drain = False
        # asyncio events, not anyio ones: a Worker may be built outside a running loop.
        self._killed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self.reason: str | None = None
        """Why the worker stops (the first reason given), or ``None`` while it runs."""

    # -- reading ------------------------------------------------------------------------
    @property
    def terminated(self) -> bool:
        """Whether the worker should stop once the tasks it runs are done."""
        return self._terminated

    @property
    def drain_requested(self) -> bool:
        """Whether the network asked every worker to exit once the queue is empty."""
        return self._drain

    @property
    def killed(self) -> bool:
        """Whether the worker should stop at once (its exit is recorded as a kill)."""
        return self._killed.is_set()

    @property
    def final_state(self) -> WorkerState:
        """The state the worker records on exit: ``killed`` after a kill, else ``terminated``."""
        return WorkerState.KILLED if self.killed else WorkerState.TERMINATED

    async def wait_killed(self) -> None:
        """Return once the worker is asked to stop at once."""
        await self._killed.wait()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously) whenever a flag becomes set.

        Waiters (a pop blocked on an empty queue) use it to wake up at once.
        """
        self._listeners.append(listener)

    # -- writing: one method per kind of request --------------------------------------
    def terminate(self, reason: str | None = None) -> None:
        """Stop after the running tasks; ``reason`` is logged the first time."""
        if self._terminated:
            return
        self._terminated = True
        self.reason = reason or "set_terminated() was called"
        log.info(f"terminating: {self.reason}", worker_id=self.worker_id)
        self._changed()

    def request_drain(self) -> None:
        """Stop once the queue is found empty (network-wide drain)."""
        if self._drain:
            return
        self._drain = True
        self._changed()

    def kill(self, reason: str | None = None) -> None:
        """Stop at once; the exit is recorded as a kill (implies :meth:`terminate`)."""
        if self.killed:
            return
        self.reason = reason or "set_killed() was called"
        log.warning(f"killing: {self.reason}", worker_id=self.worker_id)
        self._killed.set()
        self._terminated = True
        self._changed()

    def update(self, *, terminate: bool, drain: bool, kill: bool) -> None:
        """Apply the stop requests found in Redis (the worker's keys and the drain key)."""
        if kill:
            self.kill("kill requested through the network")
        if terminate:
            self.terminate("terminate requested through the network")
        if drain:
            self.request_drain()

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()
