"""Finding lost workers and settling their tasks.

A running worker is lost when it crashed (its exit left a ``crashed`` mark:
see :mod:`rushpy.worker.registration`), when its heartbeat key expired, or,
for a worker without a heartbeat that runs on this host, when its process is
gone. Marking
it lost is first-writer-wins (only a worker still recorded as running moves),
so concurrent detectors, a controller and a worker loop say, never both report
or settle the same worker. Its popped tasks go back to the queue; its running
tasks go back while attempts remain (``max_retries``) and fail otherwise, with
a condition naming the worker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence

from rushpy.logs import get_logger
from rushpy.models import Condition, WorkerState
from rushpy.store import Requeued, Store

__all__ = [
    "LostWorkerDetector",
    "find_lost_workers",
    "pid_alive",
    "release_stranded_pending",
    "settle_lost_workers",
    "settle_worker",
    "stale_workers",
]

log = get_logger("rushpy.lost")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


async def find_lost_workers(store: Store, known: Mapping[str, str] | None = None) -> dict[str, str]:
    """Running workers that are gone, with the reason, by id.

    A worker that crashed says so in its hash, on any host. Heartbeat
    workers are lost when their key expired. Workers without a heartbeat
    are checked only when they run on this host (by process id);
    elsewhere nothing can tell a busy worker from a dead one, so start remote
    workers with a heartbeat.

    Args:
        store: Store of the network.
        known: Workers the caller knows to be gone, with the reason (a
            controller's exited processes); kept for those still recorded running.

    """
    running = await store.workers.worker_ids(WorkerState.RUNNING)
    infos = await store.workers.worker_infos(running)
    beating = [info.worker_id for info in infos if info.heartbeat]
    running_set = set(running)
    # The most telling reason first: a crash report, then an exit code, then
    # an expired heartbeat or a vanished process.
    lost = {
        info.worker_id: f"it crashed: {info.extra['crashed']}" for info in infos if info.extra.get("crashed")
    }
    for wid, why in (known or {}).items():
        if wid in running_set:
            lost.setdefault(wid, why)
    for wid, alive in zip(beating, await store.workers.heartbeats_alive(beating), strict=True):
        if not alive:
            lost.setdefault(wid, "its heartbeat expired")
    host = socket.gethostname()
    for info in infos:
        if info.heartbeat or info.hostname != host or not info.pid or info.worker_id in lost:
            continue
        if not pid_alive(int(info.pid)):
            lost[info.worker_id] = f"its process {info.pid} on {host} is gone"
    return lost


async def stale_workers(store: Store, worker_ids: Sequence[str]) -> dict[str, str]:
    """Of ``worker_ids``, those without a fresh heartbeat, with why (read only, nothing is settled).

    A worker counts when it is no longer recorded running, keeps no heartbeat
    (nothing tells whether it lives, unless it runs on the detector's host),
    or its heartbeat expired. Used to say, when a wait times out, which
    workers may hold its open tasks without running them.
    """
    if not worker_ids:
        return {}
    infos = {info.worker_id: info for info in await store.workers.worker_infos(worker_ids)}
    beating = [wid for wid, info in infos.items() if info.heartbeat and info.state is WorkerState.RUNNING]
    alive = dict(zip(beating, await store.workers.heartbeats_alive(beating), strict=True))
    stale: dict[str, str] = {}
    for wid in worker_ids:
        info = infos.get(wid)
        if info is None:
            stale[wid] = "not registered"
        elif info.state is not WorkerState.RUNNING:
            stale[wid] = f"recorded {info.state.value}"
        elif not info.heartbeat:
            stale[wid] = "keeps no heartbeat"
        elif not alive[wid]:
            stale[wid] = "its heartbeat expired"
    return stale


async def settle_worker(
    store: Store, worker_id: str, state: WorkerState, condition: Condition
) -> Requeued | None:
    """Move a running worker that is gone to ``state`` and settle its tasks.

    First writer wins: ``None`` (nothing done) when the worker no longer counts
    as running (it exited, or another detector or a kill got there first).
    Its popped tasks go back to the queue; its running tasks go back while
    attempts remain, else fail with ``condition``.
    """
    if not await store.workers.set_worker_state(worker_id, state):
        return None
    return await store.tasks.requeue_worker_tasks(worker_id, condition)


async def settle_lost_workers(store: Store, reasons: Mapping[str, str]) -> list[str]:
    """Mark workers lost and settle their tasks; returns the ids this call marked.

    A worker that is no longer recorded as running (it exited, or another
    detector got there first) is skipped. Tasks that reached the pending list
    of a lost or killed worker after it was settled go back to the queue too
    (:func:`release_stranded_pending`).
    """
    found = []
    for wid, why in reasons.items():
        condition = Condition("WorkerLost", f"worker {wid} was lost ({why}) while running the task")
        settled = await settle_worker(store, wid, WorkerState.LOST, condition)
        if settled is None:
            continue
        found.append(wid)
        log.warning(
            "worker lost",
            worker_id=wid,
            reason=why,
            requeued=len(settled.requeued),
            failed=len(settled.failed),
            released=settled.released,
        )
    await release_stranded_pending(store)
    if found:
        await store.workers.publish_worker_change()
    return found


async def release_stranded_pending(store: Store) -> int:
    """Give back tasks held in the pending lists of lost or killed workers.

    A worker that is paused or cut off (not dead) may still have a blocking
    move armed on the server: a task pushed after the worker was settled lands
    in its pending list, where no running worker ever claims it. Returns how
    many tasks went back to the queue.
    """
    workers = store.workers
    gone = await workers.worker_ids(WorkerState.LOST) + await workers.worker_ids(WorkerState.KILLED)
    released = 0
    for wid, n in zip(gone, await store.tasks.pending_lengths(gone), strict=True):
        if n:
            moved = await store.tasks.release_pending(wid)
            if moved:
                log.warning("returned tasks held by a worker that is gone", worker_id=wid, n=moved)
            released += moved
    return released


class LostWorkerDetector:
    """Finds lost workers of a network and settles their tasks.

    Args:
        store: Store of the network.
        probe: Extra evidence from the owner, called on every detection: running
            workers known to be gone, with the reason (a controller passes the
            exit codes of the processes it started).
        starting: Whether workers are about to register (a controller's local
            processes still starting): they count as workers left.

    """

    def __init__(
        self,
        store: Store,
        *,
        probe: Callable[[], Mapping[str, str]] | None = None,
        starting: Callable[[], bool] | None = None,
    ) -> None:
        self._store = store
        self._probe = probe
        self._starting = starting

    async def detect(
        self, *, before_settling: Callable[[list[str]], Awaitable[object]] | None = None
    ) -> list[str]:
        """Find workers that are gone and settle their tasks; returns the ids this call marked.

        Args:
            before_settling: Called with the ids found, before any is recorded
                lost. A controller that will replace its own workers kills those
                processes here: once recorded lost, a process that still lives
                would re-register (:mod:`rushpy.worker.registration`) and run next
                to its replacement.

        """
        known = None if self._probe is None else self._probe()
        reasons = await find_lost_workers(self._store, known)
        if before_settling is not None and reasons:
            await before_settling(list(reasons))
        return await settle_lost_workers(self._store, reasons)

    async def workers_left(self) -> bool:
        """Whether open tasks can still expect a worker.

        True while a worker runs or is starting, and while no worker of the
        network was ever lost (workers may still come: a waiter gives up only
        once workers it could count on are gone, whether this call, an earlier
        one or another detector found them).
        """
        if self._starting is not None and self._starting():
            return True
        if await self._store.workers.worker_ids(WorkerState.RUNNING):
            return True
        return not await self._store.workers.worker_ids(WorkerState.LOST)
