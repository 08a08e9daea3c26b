"""Event-driven waiting: a pub/sub listener with per-channel counters.

Transition scripts ``PUBLISH`` on the network's events channel when tasks
finish or fail, workers publish when they register, and the controller
publishes on a worker's channel to ask it to terminate. Waiters read a
channel's counter, check the state in Redis, and then wait for the counter to
move past the value they read, so no wake-up is ever lost between check and
wait. A dropped subscription is re-established with backoff and bumps every
counter, because messages may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rushpy.logs import get_logger

__all__ = ["EventListener"]

log = get_logger("rushpy.events")


class EventListener:
    """Subscribe to channels and count the messages seen on each.

    Args:
        client: Client to open the subscription connection from.
        channels: Channels to subscribe to.
        on_message: Called with channel and payload of every message, before
            waiters are woken.

    """

    def __init__(
        self,
        client: Redis,
        channels: Sequence[str],
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._client = client
        self._on_message = on_message
        self._channels = list(channels)
        self._counters = dict.fromkeys(self._channels, 0)
        self._changed = asyncio.Condition()
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None

    def counter(self, channel: str) -> int:
        """Messages seen so far on ``channel`` (plus reconnections)."""
        return self._counters[channel]

    async def start(self) -> None:
        """Subscribe and wait for the server to confirm, then read in the background."""
        self._pubsub = await self._subscribe()
        self._task = asyncio.create_task(self._read(), name="rushpy-events")

    async def _subscribe(self) -> PubSub:
        pubsub = self._client.pubsub()
        await pubsub.subscribe(*self._channels)
        confirmed = 0
        while confirmed < len(self._channels):
            msg = await pubsub.get_message(timeout=5.0)
            if msg is None:
                raise RedisTimeoutError("no confirmation of SUBSCRIBE within 5 s")
            if msg["type"] == "subscribe":
                confirmed += 1
        return pubsub

    async def _read(self) -> None:
        backoff = 0.05
        while True:
            try:
                assert self._pubsub is not None
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                backoff = 0.05
                if msg is None:
                    continue
                channel = msg["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                if name in self._counters:
                    if self._on_message is not None:
                        data = msg["data"]
                        self._on_message(name, data if isinstance(data, bytes) else str(data).encode())
                    await self._bump([name])
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("event subscription lost; reconnecting", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                with contextlib.suppress(Exception):
                    if self._pubsub is not None:
                        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                try:
                    self._pubsub = await self._subscribe()
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    continue
                # Messages may have been missed while disconnected: wake every waiter.
                await self._bump(self._channels)

    async def _bump(self, channels: Sequence[str]) -> None:
        async with self._changed:
            for name in channels:
                self._counters[name] += 1
            self._changed.notify_all()

    async def wait(self, channels: Sequence[str], seen: Sequence[int], timeout: float | None) -> bool:
        """Wait until a counter of ``channels`` moves past the values in ``seen``.

        Returns:
            ``True`` if one moved, ``False`` on timeout.

        """

        def moved() -> bool:
            return any(self._counters[c] != s for c, s in zip(channels, seen, strict=True))

        async with self._changed:
            if moved():
                return True
            if timeout is not None and timeout <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait_for(moved), timeout)
            except TimeoutError:
                return False
            return True

    async def close(self) -> None:
        """Stop reading and close the subscription connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
