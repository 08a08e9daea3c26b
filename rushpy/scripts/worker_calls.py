"""Typed wrappers of the scripts that change a worker's recorded state.

As :mod:`rushpy.scripts.calls`, one function per script: it builds the
script's ``KEYS`` and ``ARGV`` and says how to read the reply.
"""

from __future__ import annotations

from rushpy.codec import encode
from rushpy.keys import Keys
from rushpy.models import WorkerState
from rushpy.scripts import Call, script
from rushpy.scripts.calls import now

__all__ = ["WORKER_SETS", "crashed", "heartbeat", "rejoin", "worker_state"]

WORKER_SETS = {
    WorkerState.RUNNING: "running_workers",
    WorkerState.TERMINATED: "terminated_workers",
    WorkerState.KILLED: "killed_workers",
    WorkerState.LOST: "lost_workers",
}
"""Attribute of :class:`~rushpy.keys.Keys` naming the set of each worker state."""


def worker_state(keys: Keys, worker_id: str, state: WorkerState) -> Call[bool]:
    """``worker_state.lua``: a running worker -> ``state``; ``False`` if it was not running."""
    sets = [keys.running_workers, getattr(keys, WORKER_SETS[state]), keys.worker(worker_id)]
    return Call(script("worker_state"), sets, [worker_id, encode(state.value)], bool)


def heartbeat(keys: Keys, worker_id: str, expire: float) -> Call[bool]:
    """``heartbeat.lua``: refresh the heartbeat key; ``False`` if the worker is not running."""
    return Call(
        script("heartbeat"),
        [keys.running_workers, keys.heartbeat(worker_id)],
        [worker_id, max(1, int(expire * 1000))],
        bool,
    )


def rejoin(keys: Keys, worker_id: str, heartbeat_expire: float | None) -> Call[int]:
    """``rejoin.lua``: a lost worker -> running; 1 already running, 2 came back, 0 must stop."""
    return Call(
        script("rejoin"),
        [keys.running_workers, keys.lost_workers, keys.worker(worker_id), keys.heartbeat(worker_id)],
        [
            worker_id,
            encode(WorkerState.RUNNING.value),
            "" if heartbeat_expire is None else max(1, int(heartbeat_expire * 1000)),
            now(),
        ],
        int,
    )


def crashed(keys: Keys, worker_id: str, reason: str) -> Call[bool]:
    """``crashed.lua``: mark a running worker as crashed; ``False`` if it was not running."""
    return Call(
        script("crashed"),
        [keys.running_workers, keys.worker(worker_id), keys.heartbeat(worker_id)],
        [worker_id, encode(reason), keys.events],
        bool,
    )
