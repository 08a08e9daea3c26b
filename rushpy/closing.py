"""Waiting for given tasks to close: ``wait_for_tasks`` and ``as_completed``.

A task *closes* when it finishes or fails for good. :class:`KeyWaits` looks
the keys up once (``lookup.lua``, O(1) per key whatever the network's size),
then waits for the results channel and the events channel. A wake-up caused
only by announcements (:mod:`rushpy.announcements`, on the results channel)
closes exactly the announced keys without a round trip, and rows that
travelled with their announcement need no read either; any other wake-up (a
reconnection, a message on the events channel such as a reset or a worker
found lost, a timeout step) looks the open keys up again. So a waiter costs nothing per
result that does not concern it, and one result's critical path ends when
its announcement arrives.

While waiting, a :class:`LostWatch` looks for lost workers every
:data:`LOST_CHECK_INTERVAL` s (one check for all waiters of the owner).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from rushpy.announcements import Outcomes
from rushpy.errors import TaskTimeoutError, UnknownTaskError, WorkerError
from rushpy.fields import decode_task
from rushpy.lost import stale_workers
from rushpy.models import TaskState
from rushpy.session import Session
from rushpy.table import Table, flatten_task
from rushpy.validation import check_keys, check_timeout

__all__ = ["LOST_CHECK_INTERVAL", "KeyWaits", "LostWatch", "OnStates", "step"]

LOST_CHECK_INTERVAL = 0.5
"""Seconds between lost-worker checks while a wait detects lost workers.

A controller's waits (``wait_for_tasks``, ``as_completed``,
``wait_for_new_tasks``, ``fetch_new_tasks`` with a timeout) detect by
default; one check per interval serves every waiter of the controller.
"""

OnStates = Callable[[Sequence[str | None]], None] | None
"""Called with the states of the open keys after each lookup (a progress bar)."""

_FINAL = (TaskState.FINISHED.value, TaskState.FAILED.value)
# Running tasks whose workers a timeout message looks up (a bounded read).
_HINT_TASKS = 100


@dataclass(frozen=True, slots=True)
class LostWatch:
    """How a waiter detects lost workers: given by the owner of a :class:`~rushpy.reads.Reads`.

    Attributes:
        detect: Finds and settles lost workers; returns the ids found by this call.
        workers_left: Whether any worker can still run open tasks.

    """

    detect: Callable[[], Awaitable[list[str]]]
    workers_left: Callable[[], Awaitable[bool]]


def step(remaining: float | None, lost: LostWatch | None) -> float | None:
    """How long a waiter sleeps before it checks again: at most one lost-worker interval."""
    if lost is None:
        return remaining
    return LOST_CHECK_INTERVAL if remaining is None else min(remaining, LOST_CHECK_INTERVAL)


class KeyWaits:
    """The waits for given keys of one network client.

    Args:
        session: The owner's open session.
        outcomes: What announcements said about watched keys (fed by the owner's event handler).
        check_lost: Runs the owner's lost-worker check (at most once per interval).
        explain_unknown: Says why keys are not tasks of the network.

    """

    def __init__(
        self,
        session: Session,
        outcomes: Outcomes,
        check_lost: Callable[[LostWatch], Awaitable[list[str]]],
        explain_unknown: Callable[[Sequence[str]], Awaitable[str]],
    ) -> None:
        self._session = session
        self._store = session.store
        self._outcomes = outcomes
        self._check_lost = check_lost
        self._explain_unknown = explain_unknown

    async def wait_for_tasks(
        self, keys: Sequence[str], timeout: float | None, lost: LostWatch | None, on_states: OnStates = None
    ) -> Table:
        """Wait until every task in ``keys`` is finished or failed; return their rows.

        Each wake-up checks only the keys still open (``lookup.lua``, O(1) per
        key), never the whole network. With ``lost``, look for lost workers every
        :data:`LOST_CHECK_INTERVAL` s and raise :class:`~rushpy.errors.WorkerError` once workers
        were lost and none is left.
        """
        wanted = list(dict.fromkeys(check_keys(keys)))
        check_timeout(timeout, allow_none=True)
        closed: dict[str, str] = {}
        carried: dict[str, list[bytes]] = {}
        async with aclosing(self._batches(wanted, timeout, lost, on_states, carried)) as batches:
            async for batch in batches:
                closed.update(batch)
        # Rows that came with their announcements need no read.
        unread = [k for k in wanted if k not in carried]
        read = dict(zip(unread, await self._store.reads.read_tasks(unread), strict=True))
        tasks = [decode_task(carried[k]) if k in carried else read[k] for k in wanted]
        return Table([flatten_task(k, closed[k], t) for k, t in zip(wanted, tasks, strict=True) if t])

    async def as_completed(
        self, keys: Sequence[str], timeout: float | None, lost: LostWatch | None, on_states: OnStates = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield each task's row as it finishes or fails for good (see :meth:`wait_for_tasks`)."""
        wanted = list(dict.fromkeys(check_keys(keys)))
        check_timeout(timeout, allow_none=True)
        carried: dict[str, list[bytes]] = {}
        async with aclosing(self._batches(wanted, timeout, lost, on_states, carried)) as batches:
            async for batch in batches:
                # The state found at close, not now: a failure retried since stays one here.
                unread = [k for k in batch if k not in carried]
                rows = [flatten_task(k, batch[k], decode_task(carried.pop(k))) for k in batch if k in carried]
                for key, found in zip(unread, await self._store.reads.lookup_rows(unread), strict=True):
                    if found is not None:
                        rows.append(flatten_task(key, batch[key], found[1]))
                for row in rows:
                    yield row

    async def _batches(
        self,
        wanted: list[str],
        timeout: float | None,
        lost: LostWatch | None,
        on_states: OnStates = None,
        carried: dict[str, list[bytes]] | None = None,
    ) -> AsyncGenerator[dict[str, str], None]:
        """Yield ``{key: state}`` batches of ``wanted`` as they finish or fail, until none is open.

        The first pass looks every key up (``lookup.lua``). After that, a wake-up
        caused only by announcements (``F``/``X`` messages on the results
        channel, nothing else: no reconnection, no message on the events
        channel) closes exactly the announced keys, without a round trip; any
        other wake-up looks the open keys up again.
        Rows that came with their announcements go to ``carried``.
        """
        events = self._session.events
        channel = self._session.keys.results
        # Announcements, and everything else that may close keys or make them
        # unknown (a reset, lost workers, cancellations): the events channel.
        channels = [channel, self._session.keys.events]
        await events.subscribe(channel)  # a worker hears announcements only once it waits
        outcomes = self._outcomes
        deadline = None if timeout is None else time.monotonic() + timeout
        found_lost: list[str] = []
        left_checked = -LOST_CHECK_INTERVAL
        outcomes.watch(wanted)
        try:
            seen, heard = [events.counter(c) for c in channels], outcomes.announcements
            # The open keys and their states; a full look-up refreshes all of them, an
            # announcement only the keys it names (so a wait costs O(keys), not O(keys^2)).
            known = dict(zip(wanted, await self._store.reads.lookup(wanted), strict=True))
            batch: dict[str, str] = {}
            full = True
            while True:
                if full:
                    if on_states is not None:  # a progress bar (rushpy.progress): open keys' states
                        on_states(list(known.values()))
                    unknown = [k for k, s in known.items() if s is None]
                    if unknown:
                        raise UnknownTaskError(await self._explain_unknown(unknown))
                    batch = {k: s for k, s in known.items() if s in _FINAL}
                for key in batch:
                    del known[key]
                if batch:
                    yield batch
                if not known:
                    return
                if lost is not None:
                    found = await self._check_lost(lost)
                    if found:
                        # Detection re-queued or failed the lost workers' tasks: look again,
                        # then ask whether workers are left.
                        found_lost += found
                        left_checked = -LOST_CHECK_INTERVAL
                        seen, heard = [events.counter(c) for c in channels], outcomes.announcements
                        known = dict(zip(known, await self._store.reads.lookup(list(known)), strict=True))
                        full = True
                        continue
                    # Whether workers are left: once per interval (one SMEMBERS, not one
                    # per wake-up), and right after a check found workers lost.
                    if time.monotonic() - left_checked >= LOST_CHECK_INTERVAL:
                        left_checked = time.monotonic()
                        if not await lost.workers_left():
                            raise self._no_workers(found_lost, len(known), len(wanted))
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    running = [k for k, s in known.items() if s == TaskState.RUNNING.value]
                    raise TaskTimeoutError(
                        f"{len(known)} of {len(wanted)} tasks still open after {timeout} s "
                        f"({len(running)} running, the rest queued); raise the timeout or check the workers "
                        f"with worker_info(){await self._stale_hint(running, lost is not None)}"
                    )
                await events.wait(channels, seen, step(remaining, lost))
                announced, other = (events.counter(c) - n for c, n in zip(channels, seen, strict=True))
                since = heard
                seen, heard = [events.counter(c) for c in channels], outcomes.announcements
                if announced and not other and announced == heard - since and on_states is None:
                    # Only announcements: the announced keys closed, nothing else did
                    # (a progress bar needs every state, so it always looks up).
                    batch = {}
                    for key in outcomes.announced_since(since):
                        closed = outcomes.closed(key, since) if key in known else None
                        if closed is None:
                            continue
                        batch[key] = closed[0]
                        if closed[1] is not None and carried is not None:
                            carried[key] = closed[1]
                    full = False
                else:
                    known = dict(zip(known, await self._store.reads.lookup(list(known)), strict=True))
                    full = True
        finally:
            outcomes.unwatch(wanted)

    def _no_workers(self, found_lost: list[str], n_open: int, n_wanted: int) -> WorkerError:
        """Workers found lost by this wait, or earlier (a background check, another detector)."""
        network = self._session.keys.network_id
        found = f"lost while waiting: {sorted(set(found_lost))}" if found_lost else "workers were lost"
        return WorkerError(
            f"no worker of network {network!r} is running ({found}) and {n_open} of "
            f"{n_wanted} tasks are still open; start workers, or let the controller restart "
            "lost local workers"
        )

    async def _stale_hint(self, running: Sequence[str], detecting: bool) -> str:
        """A hint naming the workers without a fresh heartbeat that run some of ``running``."""
        tasks = await self._store.reads.read_tasks(running[:_HINT_TASKS])
        ids = sorted({str(t["worker_id"]) for t in tasks if t and t.get("worker_id")})
        stale = await stale_workers(self._store, ids)
        if not stale:
            return ""
        named = "; ".join(f"{wid}: {why}" for wid, why in sorted(stale.items())[:5])
        fix = (
            "detection runs while waiting, but only a heartbeat tells a remote worker that died; "
            "start workers with heartbeat_period"
            if detecting
            else "call detect_lost_workers() or wait with detect_lost_workers=True"
        )
        return f"; running tasks belong to workers without a fresh heartbeat ({named}): if they died, {fix}"
