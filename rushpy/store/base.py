"""Plumbing shared by the parts of the store: client, keys, running script calls.

Batches travel in one pipeline (one round trip) as chunks of at most
:data:`CHUNK` tasks and about :data:`CHUNK_BYTES` bytes of arguments, so each
script call stays short and each command stays far below the server's limits.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from rushpy.codec import decode
from rushpy.connection import sharded_pubsub
from rushpy.errors import PermissionDeniedError, ServerError, ServerFullError, TaskError
from rushpy.keys import Keys, new_task_keys
from rushpy.models import WorkerState
from rushpy.scripts import Call, load_all
from rushpy.scripts.calls import text
from rushpy.scripts.worker_calls import WORKER_SETS

__all__ = [
    "CHUNK",
    "CHUNK_BYTES",
    "DEFAULT_MAX_TASK_BYTES",
    "Plumbing",
    "chunks",
    "decode_hash",
    "new_task_key",
    "new_worker_id",
    "text",
]

T = TypeVar("T")

CHUNK = 1000
"""Tasks per script call inside one pipelined batch (keeps each call short)."""

CHUNK_BYTES = 32 * 1024 * 1024
"""Bytes of encoded values per script call: a call may hold fewer than
:data:`CHUNK` tasks when they are large, so no single command nears the
server's query buffer limit (1 GB by default)."""

DEFAULT_MAX_TASK_BYTES = 64 * 1024 * 1024
"""Default limit on the encoded size of one task's fields (64 MiB): far below
Redis's 512 MB ``proto-max-bulk-len``, and large values are better kept
elsewhere (a file or object store) with their location in the task."""


def new_worker_id() -> str:
    """A readable, unique worker id: ``<host>-<random hex>``."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())[:40]
    return f"{host.strip('-._') or 'host'}-{secrets.token_hex(4)}"


def new_task_key() -> str:
    """A fresh, globally unique task key (see :func:`rushpy.keys.new_task_keys`)."""
    return new_task_keys(1)[0]


def new_token() -> str:
    """A unique token for one recording call (claim, complete)."""
    return secrets.token_hex(8)


def decode_hash(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A hash read with ``HGETALL``, its fields decoded."""
    return {k.decode(): decode(v) for k, v in raw.items()}


def chunks(sizes: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Split items into runs of at most :data:`CHUNK` items and about :data:`CHUNK_BYTES`.

    Args:
        sizes: Bytes of each item.

    Returns:
        ``(start, stop)`` index ranges; a run holds at least one item, however large.

    """
    start, size = 0, 0
    for i, n in enumerate(sizes):
        if i > start and (i - start >= CHUNK or size + n > CHUNK_BYTES):
            yield start, i
            start, size = i, 0
        size += n
    if start < len(sizes):
        yield start, len(sizes)


class Plumbing:
    """The client and keys of one network, and how script calls are run.

    Args:
        client: An asyncio client with ``decode_responses=False``.
        keys: Key names of the network.
        max_task_bytes: Largest encoded size of one task's fields.

    """

    def __init__(self, client: Redis, keys: Keys, max_task_bytes: int = DEFAULT_MAX_TASK_BYTES) -> None:
        if max_task_bytes <= 0:
            raise TaskError(f"max_task_bytes must be positive, got {max_task_bytes}")
        self.client = client
        self.keys = keys
        self.max_task_bytes = max_task_bytes
        # A Redis Cluster: scripts and the store publish on sharded channels.
        self.sharded = sharded_pubsub(client)

    def publish(self, target: Redis, channel: str, message: bytes) -> Any:
        """``PUBLISH`` (``SPUBLISH`` on a cluster) on ``target``: a client (await it) or a pipeline."""
        if self.sharded:
            return target.spublish(channel, message)
        return target.publish(channel, message)

    async def load_scripts(self) -> None:
        """Register every script on the server (needed before pipelined calls)."""
        await load_all(self.client, sharded=self.sharded)

    async def run(self, call: Call[T]) -> T:
        """Run one script call."""
        try:
            return await call.run(self.client, sharded=self.sharded)
        except (ServerFullError, PermissionDeniedError):
            raise  # says what happened and what to do (callers wait for memory on a full server)
        except ServerError as exc:
            raise self._server_error(call, exc) from exc

    async def run_batched(self, calls: Sequence[Call[T]], *, atomic: bool = False) -> list[T]:
        """Run many script calls in one pipeline (one round trip).

        Args:
            calls: The script calls, run in order.
            atomic: Run them as one transaction (``MULTI``/``EXEC``): all or none.
                A full server refuses the whole transaction, where separate calls
                would leave the first ones done and refuse the rest.

        """
        if len(calls) == 1:
            return [await self.run(calls[0])]
        for attempt in (1, 2):
            try:
                async with self.client.pipeline(transaction=atomic) as pipe:
                    for call in calls:
                        sha = call.script.variant(self.sharded).sha
                        pipe.evalsha(sha, len(call.keys), *call.keys, *call.args)
                    raw = await pipe.execute()
                return [call.parse(reply) for call, reply in zip(calls, raw, strict=True)]
            except NoScriptError:
                # The server lost its script cache (restart, SCRIPT FLUSH): reload
                # once. Every script is first-writer-wins, so running a chunk again is safe.
                if attempt == 2:
                    raise
                await self.load_scripts()
            except (ServerFullError, PermissionDeniedError):
                raise
            except ServerError as exc:
                raise self._server_error(calls[0], exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _server_error(self, call: Call[Any], exc: Exception) -> ServerError:
        # A client error carries the server's own message as its cause.
        reason = exc.__cause__ if isinstance(exc, ServerError) and exc.__cause__ else exc
        return ServerError(
            f"script {call.script.name}.lua failed on network {self.keys.network_id!r}: {reason}; "
            "the network's data may have been changed by something other than rushpy "
            "(reset() the network)"
        )

    async def worker_ids(self, state: WorkerState | None = None) -> list[str]:
        """Ids of every worker, or of the workers in ``state``, sorted."""
        name = self.keys.workers if state is None else getattr(self.keys, WORKER_SETS[state])
        return sorted(text(await self.client.smembers(name)))
