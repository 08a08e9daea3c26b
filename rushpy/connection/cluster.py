"""Connections to a Redis Cluster that follow one hash slot to whichever node owns it.

Every key of a rushpy network carries the ``{network}`` hash tag, so a
network lives in one slot, on one primary. A network's client therefore needs
no cluster-aware client (which would give up transactions, ``WATCH`` and
blocking moves across nodes): it talks to that one primary as to a single
server, and everything rushpy does on one server works unchanged.

How a connection finds the primary (:class:`SlotRouting`, shared by every
connection of a client's pool):

- at first it connects to a seed node; the first command on a key answers
  ``MOVED <slot> <host>:<port>``, which names the slot and its owner: the
  connection is dropped and the command sent again there, by the client's
  usual retry (a redirected command did not run, so sending it again is safe);
- when the owner stops answering (it died, or a failover is under way), the
  routing forgets it and asks the seeds (``CLUSTER SLOTS``) who owns the slot
  now, until one answers with a live primary, within the client's reconnect
  budget; ``READONLY`` (a primary demoted to replica), ``UNBLOCKED`` (a
  blocking move cut short by that demotion), ``CLUSTERDOWN`` and ``TRYAGAIN``
  are retried the same way;
- while the slot migrates to another node (resharding: a host joins or
  leaves), ``ASK`` and ``TRYAGAIN`` are retried with backoff on the owner
  until the migration ends, then ``MOVED`` names the new owner.

Every transition of a task is a script that runs at most once however often
it is sent (first writer wins, lost-reply tokens; docs/lifecycle.md), so a
command sent again after a failover changes nothing twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from rushpy.connection.wire import TCPConnection, TLSConnection

__all__ = ["ClusterTCPConnection", "ClusterTLSConnection", "SlotRouting", "redirected"]

# MovedError is an AskError. All mean: this node does not serve the slot (now).
REDIRECTS = (AskError, ClusterDownError, ReadOnlyError, TryAgainError)
# A blocking command (an idle worker's BLMOVE) on a primary that just became a replica.
_UNBLOCKED = "UNBLOCKED"


def _is_redirect(exc: BaseException) -> bool:
    return isinstance(exc, REDIRECTS) or (isinstance(exc, ResponseError) and str(exc).startswith(_UNBLOCKED))


def redirected(exc: BaseException) -> bool:
    """Whether ``exc`` is a cluster redirect being followed: the command may be sent again at once."""
    return isinstance(exc, RedisConnectionError) and _is_redirect(exc.__cause__ or exc)


class SlotRouting:
    """Where the slot of a client's network is served: learned from redirects, asked of the seeds.

    Args:
        seeds: The cluster's seed nodes as ``host:port``.
        probe: Makes an unconnected connection to ``(host, port)`` with the
            client's settings (credentials, TLS), for ``CLUSTER SLOTS``.

    """

    def __init__(self, seeds: Sequence[str], probe: Callable[[str, int], AbstractConnection]) -> None:
        """Start knowing the seeds only."""
        self.seeds = [_address(seed) for seed in seeds]
        self.slot: int | None = None
        self.owner: tuple[str, int] | None = None
        self._probe = probe
        self._next_seed = 0

    def moved(self, exc: MovedError, asked: str) -> None:
        """The server ``asked`` (a host) redirected a command: remember the slot and its owner."""
        self.slot = int(exc.slot_id)
        self.owner = (_endpoint(exc.host, {}, asked), int(exc.port))

    def lost(self) -> None:
        """The owner did not answer: find it again before the next connection."""
        self.owner = None

    async def address(self) -> tuple[str, int]:
        """Where to connect now: the known owner, the owner the seeds name, or the next seed."""
        if self.owner is not None:
            return self.owner
        if self.slot is not None:
            found = await self._ask_seeds(self.slot)
            if found is not None:
                self.owner = found
                return found
        # The slot is unknown yet (no key command so far), or no seed answered:
        # any node will redirect the first key command to the owner.
        seed = self.seeds[self._next_seed % len(self.seeds)]
        self._next_seed += 1
        return seed

    async def _ask_seeds(self, slot: int) -> tuple[str, int] | None:
        for host, port in random.sample(self.seeds, len(self.seeds)):
            probe = self._probe(host, port)
            try:
                await probe.connect()  # type: ignore[no-untyped-call]
                await probe.send_command("CLUSTER", "SLOTS")
                ranges = await probe.read_response()
            except (RedisError, OSError):
                continue  # this seed is down too: ask the next one
            finally:
                await probe.disconnect()
            for entry in ranges:
                if int(entry[0]) <= slot <= int(entry[1]):
                    node = entry[2]
                    extra = node[3] if len(node) > 3 and isinstance(node[3], dict) else {}
                    return (_endpoint(node[0], extra, host), int(node[1]))
        return None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _endpoint(preferred: object, extra: dict[Any, Any], asked: str) -> str:
    """The host to reach a node at, as a node described it to the client that ``asked``.

    A node names another by its preferred endpoint (``cluster-preferred-endpoint-type``):
    an IP or a host name; ``?`` when that is a host name none was announced
    for (then the ``ip`` the reply adds is used); nothing (``None``, or an
    empty host in ``MOVED``) when it is ``unknown-endpoint``, which means
    "the address you reached me at".
    """
    if preferred is None or _text(preferred) in ("", "?"):
        ip = extra.get(b"ip", extra.get("ip"))
        return _text(ip) if ip else asked
    return _text(preferred)


def _address(seed: str) -> tuple[str, int]:
    host, _, port = seed.rpartition(":")
    return host.strip("[]"), int(port)


class _Routed:
    """A connection that asks its :class:`SlotRouting` where to connect, and follows redirects."""

    routing: SlotRouting
    host: str
    port: int

    def __init__(self, *, routing: SlotRouting, **kwargs: Any) -> None:
        self.routing = routing
        super().__init__(**kwargs)

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        # Each seed once before giving up: a dead seed (or a dead owner the seeds still
        # name) must not fail a connection that another node would take, not even
        # the single attempt of a connection check.
        tries = len(self.routing.seeds)
        for attempt in range(tries):
            if not self.is_connected:  # type: ignore[attr-defined]
                self.host, self.port = await self.routing.address()
            try:
                await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
                return
            except (RedisError, OSError):
                self.routing.lost()
                if attempt == tries - 1:
                    raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as exc:
            if not _is_redirect(exc):
                raise
            if isinstance(exc, MovedError):
                self.routing.moved(exc, self.host)
            elif not isinstance(exc, AskError):
                self.routing.lost()
            # ASK: the slot is being migrated and this key has left already. The
            # owner stays the owner until the migration ends; the command is sent
            # to it again (after the retry's backoff) rather than, without ASKING,
            # bouncing between the two nodes.
            await self.disconnect()  # type: ignore[attr-defined]
            # A connection error: the client's retry sends the command again, to the owner.
            raise RedisConnectionError(f"the cluster redirected the command ({exc}); following it") from exc


class ClusterTCPConnection(_Routed, TCPConnection):
    """TCP connection to the node that owns the client's slot."""


class ClusterTLSConnection(_Routed, TLSConnection):
    """TLS connection to the node that owns the client's slot."""
