"""One pub/sub connection: plain channels on one server, sharded channels on a Redis Cluster.

:class:`~rushpy.events.EventListener` owns one :class:`Subscription` and
re-makes it whenever it drops. This module knows the two dialects: on one
server ``SUBSCRIBE`` and ``message``; on a cluster ``SSUBSCRIBE`` and
``smessage`` (the scripts ``SPUBLISH``), sent to the node that owns the
network's slot. Every channel of a network carries its ``{network}`` hash
tag, so one subscription holds them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rushpy.config import RedisConfig
from rushpy.connection import RushClient, sharded_pubsub
from rushpy.connection.cluster import redirected
from rushpy.logs import get_logger

__all__ = ["LOST", "MAX_BACKOFF", "SUBSCRIBE_TIMEOUT", "Subscription", "channel_name"]

log = get_logger("rushpy.events")

SUBSCRIBE_TIMEOUT = 5.0
"""Seconds to wait for the server to confirm a ``SUBSCRIBE``."""
MAX_BACKOFF = 2.0
"""Longest pause (seconds) between two attempts to subscribe again."""
FIRST_BACKOFF = 0.05
LOST = (RedisError, OSError)
"""Errors of a subscription connection: redis-py's, and socket errors it lets through."""

# Message types of plain and sharded (Redis Cluster) channels.
_MESSAGES = frozenset({"message", "smessage"})
_CONFIRMATIONS = frozenset({"subscribe", "ssubscribe"})


def channel_name(channel: object) -> str:
    """A channel name as text."""
    return channel.decode() if isinstance(channel, bytes) else str(channel)


class Subscription:
    """The pub/sub connection of one client, in the dialect of its server.

    Args:
        client: The client whose connection it takes (``max_connections=1``, no retries:
            a drop must reach the owner, not be hidden by a reconnect).

    """

    def __init__(self, client: RushClient) -> None:
        self.client = client
        self.sharded = sharded_pubsub(client)
        self.command = "SSUBSCRIBE" if self.sharded else "SUBSCRIBE"
        """The subscribing command, for messages."""
        self.pubsub: PubSub | None = None

    @staticmethod
    def is_message(msg: Mapping[str, Any]) -> bool:
        """Whether ``msg`` is a published message (plain or sharded)."""
        return msg["type"] in _MESSAGES

    @staticmethod
    def is_confirmation(msg: Mapping[str, Any]) -> bool:
        """Whether ``msg`` confirms a subscription."""
        return msg["type"] in _CONFIRMATIONS

    @staticmethod
    def is_dropped_by_server(msg: Mapping[str, Any]) -> bool:
        """Whether the server ended a sharded subscription itself (the slot left its shard)."""
        return bool(msg["type"] == "sunsubscribe")

    async def add(self, channels: Sequence[str]) -> None:
        """Subscribe the open connection to more ``channels`` (confirmed by a later message)."""
        assert self.pubsub is not None
        await self._send(self.pubsub, channels)

    async def open(self, channels: Sequence[str]) -> None:
        """Connect and subscribe to ``channels``; returns once the server confirmed each.

        Raises:
            RedisError: or ``OSError``; the connection failed or was refused.

        """
        pubsub = self.client.pubsub()
        try:
            await self._send(pubsub, channels)
            confirmed = 0
            while confirmed < len(channels):
                msg = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT)
                if msg is None:
                    raise RedisTimeoutError(
                        f"no confirmation of {self.command} within {SUBSCRIBE_TIMEOUT:g} s"
                    )
                if self.is_confirmation(msg):
                    confirmed += 1
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _close_quietly(pubsub)
            raise
        self.pubsub = pubsub

    async def open_first(self, channels: Sequence[str], config: RedisConfig) -> None:
        """:meth:`open`, riding out a cluster failover within ``config.reconnect_budget``.

        One server fails at once (its owner learns of an unreachable server
        early). On a cluster only the slot's owner takes the subscription: a
        redirect is followed at once, and a failover under way (the owner is
        gone until its replica takes over) is waited out as every command
        does. A refusal (an ACL without the channel) fails at once.
        """
        if not self.sharded:
            await self.open(channels)
            return
        started = anyio.current_time()
        backoff = FIRST_BACKOFF
        while True:
            try:
                await self.open(channels)
                return
            except ResponseError:
                raise
            except LOST as exc:
                if anyio.current_time() - started >= config.reconnect_budget:
                    raise
                if not redirected(exc):
                    log.debug("subscription not made yet; trying again", error=str(exc))
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)

    async def close(self) -> None:
        """Close the connection, if open (a broken one closes quietly)."""
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            await _close_quietly(pubsub)

    async def _send(self, pubsub: PubSub, channels: Sequence[str]) -> None:
        if self.sharded:
            await pubsub.ssubscribe(*channels)
        else:
            await pubsub.subscribe(*channels)


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    except LOST as exc:  # the connection is already broken: nothing left to close
        log.debug("closing the subscription failed", error=str(exc))
