"""The task store: the only package that issues task and worker Redis commands.

:class:`Store` composes three parts that share one client and one set of key
names: :attr:`Store.tasks` (:class:`TaskStore`, state transitions),
:attr:`Store.reads` (:class:`ReadStore`, hashes, keys per state, counts) and
:attr:`Store.workers` (:class:`WorkerStore`, registration, heartbeats, stop
requests, start arguments). Every state transition is a Lua script from
:mod:`rushpy.scripts`, run by SHA through its typed wrapper; batches are
split into chunks (:data:`CHUNK`) that travel in one pipeline, so pushing
10,000 tasks is one round trip.

Task hash fields hold msgpack values (see :mod:`rushpy.codec`). Queues and
state collections hold bare task keys (uuid hex); the hash of key ``k`` is
``<prefix>:{<network>}:task:k``.
"""

from __future__ import annotations

from redis.asyncio import Redis

from rushpy.keys import Keys
from rushpy.scripts.calls import Requeued
from rushpy.store.base import CHUNK, CHUNK_BYTES, DEFAULT_MAX_TASK_BYTES, new_task_key, new_worker_id
from rushpy.store.networks import find_networks
from rushpy.store.objects import LARGE_OBJECT_BYTES, ObjectStore
from rushpy.store.reads import NetworkStatus, ReadStore
from rushpy.store.reset import delete_network
from rushpy.store.tasks import TaskStore
from rushpy.store.workers import WorkerStore

__all__ = [
    "CHUNK",
    "CHUNK_BYTES",
    "DEFAULT_MAX_TASK_BYTES",
    "LARGE_OBJECT_BYTES",
    "NetworkStatus",
    "ObjectStore",
    "ReadStore",
    "Requeued",
    "Store",
    "TaskStore",
    "WorkerStore",
    "find_networks",
    "new_task_key",
    "new_worker_id",
]


class Store:
    """Task and worker operations of one network on one Redis client.

    Args:
        client: An asyncio client with ``decode_responses=False``.
        keys: Key names of the network.
        max_task_bytes: Largest encoded size of one task's fields (inputs, or
            results, together); a larger task raises
            :class:`~rushpy.errors.TaskError` before anything is written.

    Attributes:
        client: The client.
        keys: The key names.
        max_task_bytes: The size limit of one task.
        tasks: State transitions of tasks.
        reads: Reads of task data and counts.
        workers: Worker records and stop requests.
        objects: Root seed and seed counter, constants, large objects.

    """

    def __init__(self, client: Redis, keys: Keys, max_task_bytes: int = DEFAULT_MAX_TASK_BYTES) -> None:
        self.client = client
        self.keys = keys
        self.max_task_bytes = max_task_bytes
        self.tasks = TaskStore(client, keys, max_task_bytes)
        self.reads = ReadStore(client, keys, max_task_bytes)
        self.workers = WorkerStore(client, keys, max_task_bytes)
        self.objects = ObjectStore(client, keys, max_task_bytes)

    async def load_scripts(self) -> None:
        """Register every script on the server (needed before pipelined calls)."""
        await self.tasks.load_scripts()  # the variant this client's server needs

    async def network_exists(self) -> bool:
        """Whether the server holds a key every used network has (tasks, workers, start arguments, seeds)."""
        k = self.keys
        names = [k.all_tasks, k.workers, k.start_args, k.seed, k.constants, k.failed_log]
        return int(await self.client.exists(*names)) > 0

    async def reset(self, *, keep_workers: bool = False) -> int:
        """Delete the network's data; returns the number of keys deleted.

        Args:
            keep_workers: Keep every worker key (registration, log, heartbeat,
                terminate and kill keys, worker sets) and the start arguments;
                delete only task data.

        """
        return await delete_network(self.tasks, keep_workers=keep_workers)
