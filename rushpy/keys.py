"""Key names of a network: the only place that builds them.

Grammar: ``<prefix>:{<network_id>}:<kind>[:<id>][:<facet>]``. The braces are the
Redis Cluster hash tag, so every key of one network maps to one slot and Lua
scripts, ``MULTI`` and ``BLMOVE`` stay legal on a cluster.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from rushpy.config import validate_identifier

__all__ = [
    "DEFAULT_PREFIX",
    "TASK_KEY_BYTES",
    "TASK_KEY_CHARS",
    "Keys",
    "key_from_bytes",
    "key_to_bytes",
    "new_task_keys",
]

DEFAULT_PREFIX = "rush"
"""Prefix of every key unless a network is created with another."""

TASK_KEY_BYTES = 12
"""Random bytes of a task key: 96 bits, unguessable, and a collision (which would
make ``create.lua`` skip the second task) is unlikely below 10**12 tasks (p < 10**-4)."""

TASK_KEY_CHARS = TASK_KEY_BYTES * 4 // 3
"""Characters of a task key: base64url of :data:`TASK_KEY_BYTES` (16, no padding)."""


# base64url with "." for "-": a key never starts with "-", so a shell command that
# takes keys (``rushpy cancel NETWORK KEY``) never mistakes one for an option.
_TO_KEY = bytes.maketrans(b"-", b".")
_FROM_KEY = bytes.maketrans(b".", b"-")


def key_from_bytes(raw: bytes) -> str:
    """The task key(s) of random bytes (12 per key; several keys come out joined)."""
    return base64.urlsafe_b64encode(raw).translate(_TO_KEY).decode("ascii")


def key_to_bytes(key: str) -> bytes:
    """The bytes a task key (or several joined) encodes; the inverse of :func:`key_from_bytes`.

    Raises:
        ValueError: ``key`` is not made of whole 16-character task keys.

    """
    return base64.urlsafe_b64decode(key.encode("ascii").translate(_FROM_KEY))


def new_task_keys(n: int) -> list[str]:
    """``n`` fresh task keys: 12 random bytes each, as 16 URL- and shell-safe characters.

    A task key is stored three times (in the task hash's name, the all-tasks list
    and the finished list), so it is kept short: base64url (``A-Z a-z 0-9 _``,
    and ``.`` for ``-``) carries 6 bits per character where hex carries 4 (16
    characters instead of 32).

    Args:
        n: How many keys.

    Returns:
        Distinct keys (with overwhelming probability), in no particular order.

    """
    # One draw and one encoding for all keys: 12 bytes are exactly 16 characters,
    # so each key is a fixed slice and no padding appears.
    text = key_from_bytes(secrets.token_bytes(TASK_KEY_BYTES * n))
    return [text[i : i + TASK_KEY_CHARS] for i in range(0, TASK_KEY_CHARS * n, TASK_KEY_CHARS)]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names of one network.

    Attributes:
        network_id: The network's id.
        prefix: First component of every key.

    """

    network_id: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        validate_identifier(self.network_id, "network id")
        validate_identifier(self.prefix, "key prefix")

    @property
    def base(self) -> str:
        """``<prefix>:{<network_id>}``: the start of every key of the network."""
        return f"{self.prefix}:{{{self.network_id}}}"

    @property
    def pattern(self) -> str:
        """``SCAN`` pattern matching every key of the network."""
        return f"{self.prefix}:{{{_glob_escape(self.network_id)}}}:*"

    # -- task state -----------------------------------------------------------
    @property
    def queued(self) -> str:
        """List of keys of the shared FIFO queue (push right, pop left)."""
        return f"{self.base}:queued"

    @property
    def running(self) -> str:
        """Set of keys of running tasks."""
        return f"{self.base}:running"

    @property
    def finished(self) -> str:
        """List of keys of finished tasks, append-only, in finish order."""
        return f"{self.base}:finished"

    @property
    def failed(self) -> str:
        """Set of keys of failed tasks."""
        return f"{self.base}:failed"

    @property
    def failed_log(self) -> str:
        """List of keys of tasks that failed for good, append-only, in failure order.

        A key is appended each time its task reaches its final failed state, so
        the failure stream reads it like the finished list (from an offset).
        """
        return f"{self.base}:failed_log"

    @property
    def all_tasks(self) -> str:
        """List of every task key in creation order."""
        return f"{self.base}:tasks"

    @property
    def rows(self) -> str:
        """Hash of finished tasks: per task key, its fields packed into one row.

        A task leaves its own hash when it finishes (see :mod:`rushpy.stored_rows`).
        """
        return f"{self.base}:rows"

    def task(self, key: str) -> str:
        """Hash of one task (until it finishes: then its row in :attr:`rows`)."""
        return f"{self.base}:task:{key}"

    def tasks(self, keys: Iterable[str]) -> list[str]:
        """Hashes of several tasks."""
        base = f"{self.base}:task:"
        return [base + k for k in keys]

    # -- workers --------------------------------------------------------------
    @property
    def workers(self) -> str:
        """Set of ids of every worker that ever registered."""
        return f"{self.base}:workers"

    @property
    def running_workers(self) -> str:
        """Set of ids of workers that are up."""
        return f"{self.base}:running_workers"

    @property
    def terminated_workers(self) -> str:
        """Set of ids of workers that exited after being asked to stop."""
        return f"{self.base}:terminated_workers"

    @property
    def killed_workers(self) -> str:
        """Set of ids of workers that were killed."""
        return f"{self.base}:killed_workers"

    @property
    def lost_workers(self) -> str:
        """Set of ids of workers found lost."""
        return f"{self.base}:lost_workers"

    def worker(self, worker_id: str) -> str:
        """Hash with a worker's registration data."""
        return f"{self.base}:worker:{worker_id}"

    def priority_queue(self, worker_id: str) -> str:
        """List of a worker's own priority queue."""
        return f"{self.base}:worker:{worker_id}:queued"

    def pending(self, worker_id: str) -> str:
        """List of keys a worker popped but has not yet marked running."""
        return f"{self.base}:worker:{worker_id}:pending"

    def worker_running(self, worker_id: str) -> str:
        """Set of keys a worker is running."""
        return f"{self.base}:worker:{worker_id}:running"

    def heartbeat(self, worker_id: str) -> str:
        """String with an expiry, refreshed by a worker that keeps a heartbeat."""
        return f"{self.base}:worker:{worker_id}:heartbeat"

    def terminate_signal(self, worker_id: str) -> str:
        """String set when a worker is asked to terminate."""
        return f"{self.base}:worker:{worker_id}:terminate"

    def kill_signal(self, worker_id: str) -> str:
        """String set (and channel published to) when a worker is to be killed at once."""
        return f"{self.base}:worker:{worker_id}:kill"

    def log(self, worker_id: str) -> str:
        """Capped stream of a worker's log records (field ``r``: one msgpack record per entry)."""
        return f"{self.base}:worker:{worker_id}:log"

    # -- network --------------------------------------------------------------
    @property
    def start_args(self) -> str:
        """String with the start arguments the controller stored for workers."""
        return f"{self.base}:start_args"

    @property
    def seed(self) -> str:
        """String with the network's root seed (``Controller(seed=...)``)."""
        return f"{self.base}:seed"

    @property
    def seed_index(self) -> str:
        """Counter of task indices handed out for derived seeds (``INCRBY`` per push)."""
        return f"{self.base}:seed_index"

    @property
    def constants(self) -> str:
        """Hash of the network's constants: name to msgpack value."""
        return f"{self.base}:constants"

    @property
    def constants_version(self) -> str:
        """Counter moved by every change of the constants (workers re-read them when it moves)."""
        return f"{self.base}:constants_version"

    @property
    def objects(self) -> str:
        """Set of the digests of the network's large objects (what reset deletes)."""
        return f"{self.base}:objects"

    def object(self, digest: str) -> str:
        """String holding one large object (msgpack bytes), named by its SHA-256."""
        return f"{self.base}:object:{digest}"

    @property
    def terminate_all(self) -> str:
        """String set when every worker of the network is asked to terminate."""
        return f"{self.base}:terminate"

    @property
    def events(self) -> str:
        """Pub/sub channel for everyone: cancellations (``C``) and resets (``R``)."""
        return f"{self.base}:events"

    @property
    def worker_events(self) -> str:
        """Pub/sub channel saying that workers registered, left, or were found lost (``W``).

        Only controllers (``wait_for_workers``) subscribe to it: were workers to
        hear it, n workers registering would send n x n messages.
        """
        return f"{self.base}:worker_events"

    @property
    def results(self) -> str:
        """Pub/sub channel announcing finished and failed tasks (with small rows).

        Only clients that wait for results subscribe to it, so a worker that
        just runs tasks is not sent every announcement of the network.
        """
        return f"{self.base}:results"


def _glob_escape(text: str) -> str:
    # Ids are restricted to [A-Za-z0-9_.-]; none is special to glob, but stay safe.
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
