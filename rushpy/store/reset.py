"""Deleting a network's data by what the network indexes (no ``SCAN``).

``SCAN`` walks one node of a Redis Cluster at a time and the whole keyspace of
the others' networks; the network already lists every key it owns: the fixed
keys of :class:`~rushpy.keys.Keys`, the task keys in the all-tasks list (and,
in case one is missing there, in the queues, state collections and pending
lists), and the per-worker keys of every worker id it recorded.
"""

from __future__ import annotations

from rushpy.errors import ServerError
from rushpy.store.base import CHUNK, Plumbing, text

__all__ = ["delete_network"]


async def delete_network(store: Plumbing, *, keep_workers: bool = False) -> int:
    """Delete every key of the network; returns how many existed.

    Args:
        store: Client and keys of the network.
        keep_workers: Keep every worker key (registration hash, log, heartbeat,
            terminate and kill keys, the worker sets) and the start arguments,
            so running workers stay registered and healthy (their heartbeats
            survive, and lost-worker detection does not mistake them for lost);
            delete only task data (queues, priority queues, pending lists,
            running sets, task hashes, state collections).

    """
    k = store.keys
    worker_sets = [k.workers, k.running_workers, k.terminated_workers, k.killed_workers, k.lost_workers]
    worker_ids = text(await store.client.sunion(worker_sets))
    async with store.client.pipeline(transaction=True) as pipe:
        pipe.lrange(k.all_tasks, 0, -1)
        pipe.lrange(k.queued, 0, -1)
        pipe.smembers(k.running)
        pipe.lrange(k.finished, 0, -1)
        pipe.smembers(k.failed)
        for wid in worker_ids:
            pipe.lrange(k.priority_queue(wid), 0, -1)
            pipe.lrange(k.pending(wid), 0, -1)
            pipe.smembers(k.worker_running(wid))
        # A key of the wrong type (data written by something else) indexes
        # nothing but is deleted all the same: reset is how such a network is repaired.
        indexes = await pipe.execute(raise_on_error=False)
    task_keys: set[str] = set()
    for index in indexes:
        if not isinstance(index, Exception):
            task_keys.update(text(index))
    names = [k.queued, k.running, k.finished, k.rows, k.failed, k.failed_log, k.all_tasks, k.terminate_all]
    # Constants, large objects (listed in their index set) and the seed counter are task
    # data; the root seed is, like the start arguments, the network's configuration.
    names += [k.constants, k.constants_version, k.seed_index, k.objects]
    try:
        digests = text(await store.client.smembers(k.objects))
    except ServerError:  # not a set (written by something else): deleted below all the same
        digests = []
    names += [k.object(d) for d in sorted(digests)]
    for wid in worker_ids:
        names += [k.priority_queue(wid), k.pending(wid), k.worker_running(wid)]
    if not keep_workers:
        names += [*worker_sets, k.start_args, k.seed]
        for wid in worker_ids:
            names += [
                k.worker(wid),
                k.heartbeat(wid),
                k.terminate_signal(wid),
                k.kill_signal(wid),
                k.log(wid),
            ]
    names += k.tasks(sorted(task_keys))
    deleted = 0
    async with store.client.pipeline(transaction=False) as pipe:
        for start in range(0, len(names), CHUNK):
            pipe.unlink(*names[start : start + CHUNK])
        for n in await pipe.execute():
            deleted += int(n)
    return deleted
