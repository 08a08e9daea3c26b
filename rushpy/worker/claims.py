"""Popping and claiming tasks: the pop script, blocking moves, claims, adoption.

A pop moves keys from the worker's priority queue, then from the shared
queue, into the worker's pending list (``pop.lua``), and a claim moves them
from there to running (``claim.lua``, one new attempt each). A popped key is
never in no state: it is in a queue, in the pending list, or running.

**Waiting without polling.** When both queues are empty, a pop waits on two
blocking moves (``BLMOVE``), one per queue, each on its own connection. They
run as tasks of the worker's task group, not of the pop, so a wait stays
armed from one pop to the next and an arriving task is delivered at once.
A moved key lands in the pending list; the blocking move also hands it to
the next pop directly, which then claims it in one round trip instead of
running the pop script first.

**Compensations.** A blocking move may outlive the pop that armed it, and
take a task that nobody on this worker is waiting for. The worker gives such
tasks back:

- when a pop ends without work (timeout, terminated, or the worker was
  declared lost) and no other pop of this worker runs, the blocking moves
  are stopped and the pending list goes back to the head of the shared queue
  (``release.lua``); not while another pop runs, which may be about to claim
  pending keys;
- when work arrives on the priority queue, the move on the shared queue is
  stopped, so it takes no task while the worker is busy (the priority wait
  may stay armed: only this worker pops its priority queue);
- on exit the worker's task group stops every move and the exit settles the
  pending list (:func:`rushpy.worker.registration.record_exit`).

A worker that is paused or cut off has no such chance: lost-worker detection
releases what its still-armed moves took (``rushpy.lost.release_stranded_pending``).

**Lost replies.** A claim whose reply was lost (connection dropped) may have
moved tasks to running without the worker knowing; the next pop adopts them
(:meth:`Claims._adopt`), holding other claims back meanwhile so that a claim
in flight is never adopted twice.

**Bad data.** A claimed task whose stored inputs cannot be used (``xs`` that
is not valid msgpack or not a mapping, a bad ``seed`` or ``timeout``: see
:mod:`rushpy.fields`) fails at once, alone and for good, with a
``CorruptTask`` condition naming the field; the rest of the batch runs.
Adopted tasks go through the same checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import anyio
import anyio.abc

from rushpy.errors import WorkerError, WorkerNotRunningError
from rushpy.fields import CorruptTask, popped_from_hash
from rushpy.keys import Keys
from rushpy.logs import get_logger
from rushpy.models import PoppedTask
from rushpy.store import Store
from rushpy.worker.stop import StopState
from rushpy.worker.tracking import TaskTracker

__all__ = ["BLOCK_SLICE", "Claims"]

log = get_logger("rushpy.worker")

BLOCK_SLICE = 30.0
"""Seconds one blocking move waits on the server before it is re-armed."""


class _Move:
    """One blocking move on one queue, run as a task of the worker's task group."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.scope = anyio.CancelScope()
        self.finished = asyncio.Event()


class Claims:
    """Pops and claims the tasks of one worker.

    Args:
        store: Store of the network.
        keys: Key names of the network.
        worker_id: Id of the worker.
        stop: The worker's stop state: read by pops, told when a claim is refused.
        tracker: Records the attempt of every claimed task.
        rejoin: Called when a claim is refused because the worker no longer
            counts as running; returns whether it counts as running again
            (re-registered after being declared lost). Without it the worker stops.

    """

    def __init__(
        self,
        store: Store,
        keys: Keys,
        worker_id: str,
        stop: StopState,
        tracker: TaskTracker,
        *,
        rejoin: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self._store = store
        self._rejoin = rejoin
        self._worker_id = worker_id
        self._stop = stop
        self._tracker = tracker
        self._priority = keys.priority_queue(worker_id)
        self._shared = keys.queued
        self._task_group: anyio.abc.TaskGroup | None = None
        self._active_pops = 0
        self._moves: dict[str, _Move] = {}
        # Keys the blocking moves put in the pending list that no pop claimed yet,
        # and errors they raised, for the next waiting pop to raise.
        self._delivered: list[str] = []
        self._errors: list[Exception] = []
        # Replaced (after being set) on every change a waiting pop must see.
        self._wakeup = asyncio.Event()
        stop.subscribe(self._notify)
        self._claim_uncertain = False
        self._claims_in_flight = 0
        self._no_claim_in_flight = asyncio.Event()
        self._no_claim_in_flight.set()
        self._claim_gate = asyncio.Event()
        self._claim_gate.set()

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run blocking moves in ``task_group`` (the worker's, cancelled on exit)."""
        self._task_group = task_group

    def close(self) -> None:
        """Forget the task group (it was cancelled): later pops raise instead of waiting."""
        self._task_group = None
        self._moves.clear()
        self._delivered.clear()
        self._errors.clear()

    # -- popping --------------------------------------------------------------------------
    async def pop(self, n: int, timeout: float | None) -> list[PoppedTask]:
        """Pop up to ``n`` tasks, waiting up to ``timeout`` seconds (``None``: no limit).

        Returns early (empty) once the worker is terminated, and terminates it
        when the network asked workers to drain and the queue is empty, or when
        the worker no longer counts as running.
        """
        self._active_pops += 1
        try:
            while True:
                try:
                    if self._claim_uncertain:
                        adopted = await self._adopt()
                        if adopted:
                            return adopted
                    return await self._pop(n, timeout)
                except WorkerNotRunningError:
                    # Declared lost while alive (paused, cut off): come back and pop
                    # again; the refused claim's keys are still in the pending list.
                    if self._rejoin is None or not await self._rejoin("claim refused"):
                        raise
        except WorkerNotRunningError as exc:
            # Stopped, or its records are gone: its tasks may run elsewhere now, so stop.
            self._stop.terminate(str(exc))
            # The refused claim left its keys in the pending list: give them back
            # now, not only when the worker exits (it may live on).
            await self._give_back_if_last()
            return []
        finally:
            self._active_pops -= 1

    async def _pop(self, n: int, timeout: float | None) -> list[PoppedTask]:
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            if self._delivered:
                # A blocking move handed us these keys: claim them directly (one
                # round trip). Keys beyond n wait for the next pop.
                keys = self._delivered[:n]
                del self._delivered[:n]
                tasks = await self._claim(keys)
            else:
                keys = await self._store.tasks.pop_keys(self._worker_id, n)
                tasks = await self._claim(keys)
            if tasks:
                return tasks
            if keys and not self._stop.terminated:
                # Every key was dropped (a duplicate) or failed (corrupt): the
                # queue may hold more, so pop again before waiting.
                continue
            if self._stop.drain_requested:
                self._stop.terminate("queue empty and workers asked to drain")
            remaining = None if deadline is None else deadline - anyio.current_time()
            if self._stop.terminated or (remaining is not None and remaining <= 0):
                await self._give_back_if_last()
                return []
            await self._wait_for_work(remaining)

    async def _wait_for_work(self, timeout: float | None) -> None:
        """Wait until a blocking move delivers, the stop state changes, or ``timeout``."""
        wakeup = self._wakeup
        # Checked after taking the event (a change from here on sets it): keys or
        # errors may have come in while the last claim was in flight.
        if not (self._delivered or self._errors):
            for source in (self._priority, self._shared):
                if source not in self._moves:
                    self._arm(source)
            with anyio.move_on_after(timeout):
                await wakeup.wait()
        if self._errors:
            # Surface connection errors (the caller retries); a moved key is safe
            # in the pending list.
            error = self._errors.pop(0)
            raise error

    def _arm(self, source: str) -> None:
        if self._task_group is None:
            raise WorkerError("the worker is not open: use `async with Worker(...)`")
        move = _Move(source)
        self._moves[source] = move
        self._task_group.start_soon(self._run_move, move, name=f"rushpy-blmove-{self._worker_id}")

    async def _run_move(self, move: _Move) -> None:
        delivered = False
        try:
            with move.scope:
                key = await self._store.tasks.block_move(move.source, self._worker_id, BLOCK_SLICE)
                if key is not None:
                    self._delivered.append(key)
                    delivered = True
        except Exception as exc:  # a waiting pop raises it; its caller retries
            self._errors.append(exc)
        finally:
            if self._moves.get(move.source) is move:
                del self._moves[move.source]
            move.finished.set()
            if delivered and move.source == self._priority:
                shared = self._moves.pop(self._shared, None)
                if shared is not None:
                    shared.scope.cancel()
            self._notify()

    async def _give_back_if_last(self) -> None:
        """Nobody waits any more: stop the blocking moves and release what they took."""
        if self._active_pops != 1:
            return
        await self.stop_moves()
        await self._store.tasks.release_pending(self._worker_id)
        self._delivered.clear()

    async def stop_moves(self) -> None:
        """Stop every blocking move and wait until each has ended."""
        moves = list(self._moves.values())
        self._moves.clear()
        for move in moves:
            move.scope.cancel()
        for move in moves:
            await move.finished.wait()

    def _notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    # -- claiming -------------------------------------------------------------------------
    async def _claim(self, keys: list[str]) -> list[PoppedTask]:
        """Claim pending keys, fail the corrupt ones, record the attempts of the rest."""
        if not keys:
            return []
        await self._claim_gate.wait()
        self._claims_in_flight += 1
        self._no_claim_in_flight.clear()
        try:
            claimed = await self._store.tasks.claim(self._worker_id, keys)
            # Before any attempt is recorded: if this write fails, the next pop
            # adopts the whole claim (good and corrupt tasks) and checks it again.
            # The store leaves out keys it did not claim: no None in the reply.
            await self._fail_corrupt(cast("list[PoppedTask | CorruptTask]", claimed))
        except WorkerNotRunningError:
            raise
        except Exception:
            # The claim may have happened with its reply lost: check on the next pop.
            self._claim_uncertain = True
            raise
        finally:
            self._claims_in_flight -= 1
            if not self._claims_in_flight:
                self._no_claim_in_flight.set()
        tasks = [task for task in claimed if isinstance(task, PoppedTask)]
        for task in tasks:
            self._tracker.claimed(task.key, task.attempt, claimed.constants_version)
        return tasks

    async def _fail_corrupt(self, claimed: Sequence[PoppedTask | CorruptTask]) -> None:
        """Fail, for good, the claimed tasks whose stored inputs cannot be used."""
        corrupt = [task for task in claimed if isinstance(task, CorruptTask)]
        if not corrupt:
            return
        for task in corrupt:
            log.warning("task failed: its stored data is corrupt", key=task.key, reason=task.message)
        # Fenced by the attempt just claimed; complete.lua never retries a CorruptTask.
        await self._store.tasks.complete(
            self._worker_id,
            "failed",
            [(task.key, task.attempt, {"condition": task.condition().to_dict()}) for task in corrupt],
        )

    async def _adopt(self) -> list[PoppedTask]:
        """Take over tasks running on this worker in Redis that it does not know of."""
        self._claim_gate.clear()
        try:
            await self._no_claim_in_flight.wait()
            running, stale = await self._store.tasks.worker_running_keys(self._worker_id)
            for key in stale:
                self._tracker.forget(key)
            orphans = [k for k in running if k not in self._tracker]
            rows = await self._store.reads.read_tasks(orphans)
            adopted = [
                popped_from_hash(key, row) for key, row in zip(orphans, rows, strict=True) if row is not None
            ]
            await self._fail_corrupt(adopted)
            self._claim_uncertain = False
        finally:
            self._claim_gate.set()
        tasks = [task for task in adopted if isinstance(task, PoppedTask)]
        for task in tasks:
            self._tracker.claimed(task.key, task.attempt)
        if tasks:
            log.warning("adopted tasks claimed before a lost reply", n=len(tasks))
        return tasks
