"""A worker's presence in the network: registration, heartbeat, coming back, and the exit record.

On entry the worker registers (its hash, the running set and, with a
heartbeat, the first beat, in one transaction). While it runs,
:class:`Heartbeat` refreshes the heartbeat key from the event loop and,
through a sidecar process (:mod:`rushpy.worker.sidecar`), from outside it, so
a task that holds the GIL or blocks the loop does not stop the beat.

**Coming back.** A worker can be declared lost while its process is healthy:
the server was paused (``CLIENT PAUSE``) or unreachable for longer than the
heartbeat expiry, or the worker process was stopped and continued. It learns
so when a beat or a claim is refused. :class:`Presence` then re-registers it
(``rejoin.lua``) if it is recorded as *lost*, and it goes on serving the
queue. That is safe because the detector settled everything it held: its
pending tasks went back to the queue and its running ones were re-queued
(a new attempt when claimed again) or failed, so a result of one of those
attempts finds the task no longer running on this worker, or running a newer
attempt, and ``complete.lua`` discards it. A worker that was killed or
terminated (stopped on purpose), or whose records are gone (``reset()``, a
server restarted without persistence), stops instead.

**Exit.** :func:`record_exit` settles what the worker still holds and records
how it ended. A clean stop (asked to terminate, a drain, the idle timeout, a
signal) records ``terminated`` (or ``killed``). Any other exit, an error out of
the worker's loop, is a crash: the worker settles its tasks and stays
*running* with a ``crashed`` mark and no heartbeat, so lost-worker detection
on any host finds it at its next check (``its process crashed``), records it
lost and, for a controller that started it with ``restart_lost_workers``,
replaces it. A new recorded state would have needed every detector to learn
it, and a replacement would still have to be tied to the detection that
claims the worker first; going through ``lost`` reuses that one
first-writer-wins step.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
from collections.abc import Awaitable, Callable

import anyio

from rushpy.errors import ServerFullError
from rushpy.logs import get_logger, status_logger
from rushpy.models import Condition, WorkerState
from rushpy.store import Store
from rushpy.worker.backoff import retrying
from rushpy.worker.sidecar import HeartbeatSidecar
from rushpy.worker.stop import StopState

__all__ = ["Heartbeat", "Presence", "crash_error", "crash_reason", "record_exit", "register"]

log = get_logger("rushpy.worker")
status = status_logger()

_CRASH_MESSAGE_LIMIT = 500
"""Characters of a crash's message kept in the worker's ``crashed`` field."""


async def register(store: Store, worker_id: str, heartbeat: tuple[float, float] | None) -> None:
    """Record the worker as running, with its process, host and heartbeat settings.

    While the server is out of memory (``ServerFullError``) the worker waits and
    tries again, logging why, instead of failing to start.
    """
    info: dict[str, object] = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started_at": dt.datetime.now(dt.UTC),
        "heartbeat": heartbeat is not None,
    }
    if heartbeat is not None:
        info["heartbeat_period"], info["heartbeat_expire"] = heartbeat
    expire = None if heartbeat is None else heartbeat[1]
    # A full server (maxmemory) refuses the registration: wait for memory, do not crash.
    await retrying(
        f"registering worker {worker_id}",
        lambda: store.workers.register_worker(worker_id, info, heartbeat_expire=expire),
        errors=(ServerFullError,),
    )
    await store.workers.publish_worker_change()


class Presence:
    """Decides what a worker does when the network says it is not running.

    Args:
        store: Store of the network.
        worker_id: Id of the worker.
        heartbeat_expire: Seconds the fresh heartbeat of a re-registration lasts
            (``None`` for a worker without heartbeat).
        stop: The worker's stop state, told when the worker must stop.

    """

    def __init__(self, store: Store, worker_id: str, heartbeat_expire: float | None, stop: StopState) -> None:
        self._store = store
        self._worker_id = worker_id
        self._expire = heartbeat_expire
        self._stop = stop
        self._lock = anyio.Lock()
        self.rejoins = 0
        """Times this worker came back after being declared lost."""

    async def not_running(self, why: str) -> bool:
        """A beat or a claim was refused: come back if only declared lost, else stop.

        Concurrent callers (the heartbeat, the sidecar, several pops) re-register
        once. Returns whether the worker counts as running again.

        Raises:
            ConnectionFailedError: Redis could not be asked (the caller retries).

        """
        async with self._lock:
            if self._stop.terminated:
                return False  # stopping anyway: nothing to come back for
            outcome = await self._store.workers.rejoin(self._worker_id, self._expire)
            if outcome == 1:
                return True  # another caller brought it back already
            if outcome == 0:
                self._stop.terminate(f"the worker no longer counts as running ({why})")
                return False
            self.rejoins += 1
            log.warning(
                "the worker was declared lost although it is alive (paused, cut off or stalled "
                "longer than its heartbeat expiry); it re-registered and goes on: the tasks it "
                "held were settled and their late results are discarded",
                worker_id=self._worker_id,
                noticed_by=why,
            )
            await self._store.workers.publish_worker_change()
            return True


class Heartbeat:
    """Refreshes a worker's heartbeat key every ``period`` seconds, from the loop and a sidecar.

    A beat that fails (connection trouble) is retried next period. A refused
    beat (the worker no longer counts as running) goes to ``on_refused``,
    which brings the worker back or stops it (:meth:`Presence.not_running`).

    Args:
        store: Store of the network.
        worker_id: Id of the worker.
        period: Seconds between beats.
        expire: Seconds after a beat at which the key expires.
        on_refused: Called with the source of a refused beat; returns whether
            the worker counts as running again.
        sidecar: Builds the sidecar process that beats while the event loop is
            blocked (``None``: beat from the loop only).

    """

    def __init__(
        self,
        store: Store,
        worker_id: str,
        period: float,
        expire: float,
        *,
        on_refused: Callable[[str], Awaitable[bool]],
        sidecar: Callable[[], HeartbeatSidecar] | None = None,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self.period = period
        self.expire = expire
        self._on_refused = on_refused
        self._new_sidecar = sidecar
        self._scope: anyio.CancelScope | None = None
        self.sidecar: HeartbeatSidecar | None = None
        """The running sidecar process, if any."""

    async def run(self) -> None:
        """Beat until :meth:`stop`, the task group is cancelled, or the worker must stop.

        The sidecar is stopped (and waited for) whenever this returns, so no
        beat of it comes after.
        """
        with anyio.CancelScope() as self._scope:
            sidecar = None
            try:
                sidecar = await self._start_sidecar()
                async with anyio.create_task_group() as tg:
                    if sidecar is not None:
                        tg.start_soon(self._watch_sidecar, sidecar, tg.cancel_scope)
                    await self._beat()
                    tg.cancel_scope.cancel()
            finally:
                if sidecar is not None:
                    self.sidecar = None
                    with anyio.CancelScope(shield=True):
                        await sidecar.close()

    async def _start_sidecar(self) -> HeartbeatSidecar | None:
        if self._new_sidecar is None:
            return None
        sidecar = self._new_sidecar()
        try:
            # Shielded: a start cancelled half-way could leave a process that
            # nobody closes (its pipe held open until garbage collection).
            with anyio.CancelScope(shield=True):
                await sidecar.start()
        except OSError as exc:  # beat from the loop alone rather than not at all
            log.warning("no heartbeat sidecar; beating from the event loop only", error=str(exc))
            return None
        self.sidecar = sidecar
        return sidecar

    async def _watch_sidecar(self, sidecar: HeartbeatSidecar, scope: anyio.CancelScope) -> None:
        if await sidecar.watch(lambda: self._refused("heartbeat refused (sidecar)")):
            scope.cancel()  # the worker must stop: no more beats
        elif self.sidecar is sidecar:
            log.warning("the heartbeat sidecar exited; beating from the event loop only")

    async def _beat(self) -> None:
        while True:
            await anyio.sleep(self.period)
            try:
                alive = await self._store.workers.beat(self._worker_id, self.expire)
            except Exception as exc:  # keep beating through passing faults
                log.warning("heartbeat failed; retrying", error=str(exc))
                continue
            if not alive and not await self._refused("heartbeat refused"):
                return

    async def _refused(self, why: str) -> bool:
        try:
            return await self._on_refused(why)
        except Exception as exc:  # Redis unreachable: the next refused beat asks again
            log.warning("could not re-register after a refused heartbeat; retrying", error=str(exc))
            return True

    def stop(self) -> None:
        """Stop beating at once, the sidecar included (the key then expires unless the exit deletes it)."""
        sidecar, self.sidecar = self.sidecar, None
        if sidecar is not None:
            sidecar.kill()
        if self._scope is not None:
            self._scope.cancel()


def crash_error(exc: BaseException | None) -> BaseException | None:
    """The exception that crashed a worker, or ``None`` when ``exc`` is a clean way out.

    No exception, a cancellation (the owner stopped the worker's task) and
    ``KeyboardInterrupt`` are clean; anything else is a crash (of a group: its
    first such exception).
    """
    if exc is None or isinstance(exc, (anyio.get_cancelled_exc_class(), KeyboardInterrupt)):
        return None
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = crash_error(inner)
            if found is not None:
                return found
        return None
    return exc


def crash_reason(exc: BaseException | None) -> str | None:
    """What crashed a worker as ``Type: message``; ``None`` for a clean way out (:func:`crash_error`)."""
    error = crash_error(exc)
    return None if error is None else f"{type(error).__name__}: {error}"[:_CRASH_MESSAGE_LIMIT]


async def record_exit(
    store: Store,
    worker_id: str,
    final_state: WorkerState,
    reason: str | None = None,
    *,
    error: BaseException | None = None,
) -> None:
    """Settle what an exiting worker still holds, and record how it ended.

    Popped-but-unclaimed tasks go back to the queue. Tasks still running here
    were interrupted (a kill, a crash of the worker loop): they are re-queued
    while attempts remain, else failed, so none stays "running" forever.

    After a clean stop the worker leaves the running set for ``final_state``,
    and only then are its heartbeat key (and its stop-request keys) deleted:
    deleted earlier, a lost-worker check in between would find a running
    worker without a heartbeat and declare it lost. After a crash (``error``,
    the exception that crashed it) it stays running with a ``crashed`` mark and no
    heartbeat, so lost-worker detection finds it and a controller can replace
    it. If the tasks cannot be settled (Redis unreachable), the worker is left
    "running" so that lost-worker detection settles it once its heartbeat
    expires (or its process is found gone).

    ``reason`` (why the worker stopped, :attr:`StopState.reason`) goes into the
    last status line. ``error`` is also recorded as the worker's
    ``last_error``, with its type and traceback (``worker_info()``).
    """
    crash = crash_reason(error)
    if crash is not None:
        verb, what = "crashed", f"crashed ({crash})"
    elif final_state is WorkerState.KILLED:
        verb = what = "killed"
    else:
        verb = what = "exited"
    try:
        settled = await store.tasks.requeue_worker_tasks(
            worker_id,
            Condition(
                "WorkerKilled" if verb == "killed" else "WorkerExited",
                f"worker {worker_id} {what} while running the task",
            ),
        )
    except Exception as exc:  # the worker stays "running": lost-worker detection settles it
        log.error("could not settle the worker's tasks on exit", error=f"{type(exc).__name__}: {exc}")
        return
    if settled.released:
        log.info("returned popped tasks to the queue", n=settled.released, worker_id=worker_id)
    if settled.requeued or settled.failed:
        log.warning(
            "tasks interrupted by the exit",
            requeued=len(settled.requeued),
            failed=len(settled.failed),
            worker_id=worker_id,
        )
    if error is not None and crash is not None:
        status.error(
            "the worker crashed; lost-worker detection will record it lost", crash=crash, worker_id=worker_id
        )
        with contextlib.suppress(Exception):  # unrecorded: its heartbeat or process check finds it
            await store.workers.mark_crashed(worker_id, crash)
            # The crashing exception itself: type, message and traceback.
            await store.workers.set_last_error(worker_id, Condition.from_exception(error))
        return
    status.info(
        "worker stopped",
        state=final_state.value,
        reason=reason or "the worker's block was left",
        worker_id=worker_id,
    )
    with contextlib.suppress(Exception):
        await store.workers.set_worker_state(worker_id, final_state)
        await store.workers.unregister(worker_id)
        await store.workers.publish_worker_change()
