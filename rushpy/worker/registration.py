"""A worker's presence in the network: registration, heartbeat, and the exit record.

On entry the worker registers (its hash, the running set and, with a
heartbeat, the first beat, in one transaction). While it runs,
:class:`Heartbeat` refreshes the heartbeat key from the event loop (plain
task functions run in threads or child processes, so a busy function never
stops the beat). On exit :func:`record_exit` settles what the worker still
holds and records its final state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket

import anyio

from rushpy.logs import get_logger
from rushpy.models import Condition, WorkerState
from rushpy.store import Store
from rushpy.worker.stop import StopState

__all__ = ["Heartbeat", "record_exit", "register"]

log = get_logger("rushpy.worker")


async def register(store: Store, worker_id: str, heartbeat: tuple[float, float] | None) -> None:
    """Record the worker as running, with its process, host and heartbeat settings."""
    info: dict[str, object] = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started_at": dt.datetime.now(dt.UTC),
        "heartbeat": heartbeat is not None,
    }
    if heartbeat is not None:
        info["heartbeat_period"], info["heartbeat_expire"] = heartbeat
    expire = None if heartbeat is None else heartbeat[1]
    await store.workers.register_worker(worker_id, info, heartbeat_expire=expire)
    await store.workers.publish_event()


class Heartbeat:
    """Refreshes a worker's heartbeat key every ``period`` seconds.

    A beat that fails (connection trouble) is retried next period. A beat
    refused because the worker no longer counts as running (declared lost or
    stopped) terminates the worker: its tasks may run elsewhere now.

    Args:
        store: Store of the network.
        worker_id: Id of the worker.
        period: Seconds between beats.
        expire: Seconds after a beat at which the key expires.
        stop: The worker's stop state, told when a beat is refused.

    """

    def __init__(self, store: Store, worker_id: str, period: float, expire: float, stop: StopState) -> None:
        self._store = store
        self._worker_id = worker_id
        self.period = period
        self.expire = expire
        self._stop = stop
        self._scope: anyio.CancelScope | None = None

    async def run(self) -> None:
        """Beat until :meth:`stop` is called, the task group is cancelled, or a beat is refused."""
        with anyio.CancelScope() as self._scope:
            while True:
                await anyio.sleep(self.period)
                try:
                    alive = await self._store.workers.beat(self._worker_id, self.expire)
                except Exception as exc:  # keep beating through passing faults
                    log.warning("heartbeat failed; retrying", error=str(exc))
                    continue
                if not alive:
                    self._stop.terminate("the worker no longer counts as running (heartbeat refused)")
                    return

    def stop(self) -> None:
        """Stop beating (the key then expires unless the worker's exit deletes it)."""
        if self._scope is not None:
            self._scope.cancel()


async def record_exit(store: Store, worker_id: str, final_state: WorkerState) -> None:
    """Settle what an exiting worker still holds, and record its final state.

    Popped-but-unclaimed tasks go back to the queue. Tasks still running here
    were interrupted (a kill, a crash of the worker loop): they are re-queued
    while attempts remain, else failed, so none stays "running" forever. Then
    the worker leaves the running set, and only then are its heartbeat key
    (and its stop-request keys) deleted: deleted earlier, a lost-worker check in between would find a
    running worker without a heartbeat and declare it lost. If the tasks
    cannot be settled (Redis unreachable), the worker is left "running" so
    that lost-worker detection settles it once its heartbeat expires.
    """
    verb = "killed" if final_state is WorkerState.KILLED else "exited"
    try:
        settled = await store.tasks.requeue_worker_tasks(
            worker_id,
            Condition(f"Worker{verb.capitalize()}", f"worker {worker_id} {verb} while running the task"),
        )
    except Exception as exc:  # the worker stays "running": lost-worker detection settles it
        log.error("could not settle the worker's tasks on exit", error=f"{type(exc).__name__}: {exc}")
        return
    if settled.released:
        log.info("returned popped tasks to the queue", n=settled.released)
    if settled.requeued or settled.failed:
        log.warning(
            "tasks interrupted by the exit", requeued=len(settled.requeued), failed=len(settled.failed)
        )
    with contextlib.suppress(Exception):
        await store.workers.set_worker_state(worker_id, final_state)
        await store.workers.unregister(worker_id)
        await store.workers.publish_event()
