"""The result writer of a worker loop: group commit of outcomes.

Slots hand their outcomes to one :class:`ResultWriter`, which records
everything that accumulated while its previous write was in flight: low
latency when the worker is idle, large batches under load. Outcomes stay in
memory while Redis is unreachable and are written once it is back; writes are
fenced by attempt, so repeating one is harmless.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

from rushpy.logs import get_logger
from rushpy.worker.backoff import TRANSIENT_ERRORS, Backoff
from rushpy.worker.execution import Outcome
from rushpy.worker.results import Results

__all__ = ["WRITE_GIVE_UP", "ResultWriter"]

log = get_logger("rushpy.worker")

WRITE_GIVE_UP = 30.0
"""Seconds a closing writer keeps retrying while Redis is unreachable.

After that the unwritten outcomes are dropped and their tasks left to
lost-worker detection (re-queued or failed there).
"""


class ResultWriter:
    """Records outcomes in batches: whatever accumulated while the last write ran.

    Args:
        results: Writes outcomes and stops tracking their tasks.
        give_up_after: Seconds a closing writer keeps retrying (default :data:`WRITE_GIVE_UP`).

    """

    def __init__(self, results: Results, give_up_after: float = WRITE_GIVE_UP) -> None:
        self._results = results
        self._give_up_after = give_up_after
        self._buffer: list[Outcome] = []
        self._wakeup = anyio.Event()
        self._closed = False
        self._backoff = Backoff("writing results")

    def add(self, outcomes: list[Outcome]) -> None:
        """Queue outcomes for the next write."""
        self._buffer.extend(outcomes)
        self._wakeup.set()

    async def let_write(self) -> None:
        """Give an idle writer its turn before the caller goes on (to its next pop).

        An idle writer woken by :meth:`add` sends its script call in its next
        turn of the event loop; yielding once lets it go first, so the server
        records the outcomes before it runs the caller's pop instead of after
        (one script less on a result's critical path). One turn, not the
        write: a slot never waits for a round trip here.
        """
        await anyio.lowlevel.checkpoint()

    def close(self) -> None:
        """No more outcomes come: :meth:`run` returns once everything is written."""
        self._closed = True
        self._wakeup.set()

    async def _flush(self) -> None:
        while self._buffer:
            # Results first, then failures; each group leaves the buffer once written,
            # and outcomes added while a write is in flight wait for the next round.
            ok = any(o[2] for o in self._buffer)
            group = [o for o in self._buffer if o[2] == ok]
            codes = await self._results.complete(
                "finished" if ok else "failed", [(k, a, f) for k, a, _, f in group]
            )
            written = {id(o) for o in group}
            self._buffer = [o for o in self._buffer if id(o) not in written]
            discarded = codes.count(0)
            if discarded:
                log.warning(
                    "outcomes discarded: those attempts no longer run on this worker "
                    "(cancelled, or re-queued after the worker was declared lost)",
                    n=discarded,
                )

    async def run(self) -> None:
        """Write until closed and empty (or, closed, until Redis stayed unreachable too long)."""
        give_up_at: float | None = None
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            try:
                await self._flush()
            except TRANSIENT_ERRORS as exc:
                if self._closed:
                    give_up_at = give_up_at or anyio.current_time() + self._give_up_after
                    if anyio.current_time() > give_up_at:
                        log.error("could not write results before exiting", n=len(self._buffer))
                        return
                await self._backoff.failed(exc)
                self._wakeup.set()
                continue
            self._backoff.succeeded()
            if self._closed and not self._buffer:
                return
