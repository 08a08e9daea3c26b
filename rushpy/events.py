"""Event-driven waiting: a pub/sub listener with per-channel counters.

Transition scripts ``PUBLISH`` on the network's events channel when tasks
finish or fail, workers publish when they register, and the controller
publishes on a worker's channel to ask it to terminate. Waiters read a
channel's counter, check the state in Redis, and then wait for the counter to
move past the value they read, so no wake-up is ever lost between check and
wait.

The subscription has its own connection, without redis-py's silent
reconnects: a dropped subscription is noticed here, re-established with
backoff, and then bumps every counter, because messages may have been missed
meanwhile. A hung server (a stopped process, a silent network partition)
raises no error by itself: after
:attr:`RedisConfig.health_check_interval <rushpy.config.RedisConfig.health_check_interval>`
seconds without a message the listener sends a ``PING``, and no answer within
``socket_timeout`` counts as a dropped subscription. While it is down, waiters raise
:class:`~rushpy.errors.ConnectionFailedError` once the outage exceeds
:attr:`RedisConfig.reconnect_budget <rushpy.config.RedisConfig.reconnect_budget>`,
however long their own timeout.

On a Redis Cluster the channels are sharded (``SSUBSCRIBE``; the scripts
``SPUBLISH``): every channel of a network carries its ``{network}`` hash tag,
so they all live in the network's slot and the subscription follows the slot
to its owner like every other connection (:mod:`rushpy.connection.cluster`).
A server that unsubscribes the listener on its own (the slot moved to another
shard) counts as a dropped subscription, re-made on the new owner.

Usage (the listener owns its task group)::

    async with EventListener(config, [channel]) as events:
        seen = events.counter(channel)
        ...  # check Redis
        await events.wait([channel], [seen], timeout=5)

or, inside an owner's task group: ``await events.start(task_group)`` and
``await events.close()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rushpy.config import RedisConfig
from rushpy.connection import RushClient, connection_failed, create_client, server_error
from rushpy.errors import ConnectionFailedError, RushError
from rushpy.logs import get_logger
from rushpy.subscription import (
    FIRST_BACKOFF,
    LOST,
    MAX_BACKOFF,
    SUBSCRIBE_TIMEOUT,
    Subscription,
    channel_name,
)

__all__ = ["CLOSE_TIMEOUT", "MAX_BACKOFF", "SUBSCRIBE_TIMEOUT", "EventListener"]

log = get_logger("rushpy.events")

CLOSE_TIMEOUT = 5.0
"""Seconds the shielded clean-up of :meth:`EventListener.close` may take at most."""


def _failure(config: RedisConfig, command: str, exc: BaseException) -> RushError:
    """A failed subscription as a rushpy error: a refusal (an ACL without the channel) is no lost server."""
    if isinstance(exc, ResponseError):
        return server_error(config, command, exc)
    return connection_failed(config, exc, 0.0)


class EventListener:
    """Subscribe to channels and count the messages seen on each.

    Args:
        config: Server settings; the listener opens its own connection, and
            ``config.reconnect_budget`` bounds how long waiters sit through an outage.
        channels: Channels to subscribe to.
        on_message: Called with channel and payload of every message, before
            waiters are woken. An exception it raises is logged, not propagated.
        close_timeout: Seconds the shielded clean-up may take at most.

    """

    def __init__(
        self,
        config: RedisConfig,
        channels: Sequence[str],
        on_message: Callable[[str, bytes], None] | None = None,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self._config = config
        self._on_message = on_message
        self._channels = list(channels)
        self._counters = dict.fromkeys(self._channels, 0)
        self._close_timeout = close_timeout
        # Replaced on every change: a waiter waits on the event current when it checked.
        self._changed = anyio.Event()
        # Without retries: a drop must reach this class, not be hidden by a reconnect.
        self._client: RushClient = create_client(config, max_connections=1, retries=0)
        self._subscription = Subscription(self._client)
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self._down_since: float | None = None
        self._last_error: BaseException | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        # Channels added while running (subscribe()), waiting for the server's confirmation.
        self._confirming: dict[str, anyio.Event] = {}

    # -- state ---------------------------------------------------------------------------
    def counter(self, channel: str) -> int:
        """Messages seen so far on ``channel`` (plus reconnections)."""
        return self._counters[channel]

    def listens_to(self, channel: str) -> bool:
        """Whether ``channel`` is one of the channels this listener counts."""
        return channel in self._counters

    async def subscribe(self, channel: str) -> None:
        """Listen to one more channel from now on; returns once the server confirmed it.

        A waiter reads the channel's counter after this returns, so it misses
        no message. While the subscription is down, the channel joins the next
        reconnection (which wakes every waiter anyway).

        Raises:
            ConnectionFailedError: the server did not confirm within
                :data:`SUBSCRIBE_TIMEOUT` seconds.

        """
        if channel in self._counters:
            confirming = self._confirming.get(channel)
        else:
            self._counters[channel] = 0
            self._channels.append(channel)
            confirming = None
            if self.connected:
                confirming = self._confirming[channel] = anyio.Event()
                try:
                    await self._subscription.add([channel])
                except LOST as exc:
                    self._confirming.pop(channel, None)
                    raise _failure(self._config, self._subscription.command, exc) from exc
        if confirming is None:
            return
        with anyio.move_on_after(SUBSCRIBE_TIMEOUT):
            await confirming.wait()
        if not confirming.is_set():
            raise ConnectionFailedError(
                f"the server at {self._config} did not confirm a subscription to {channel!r} within "
                f"{SUBSCRIBE_TIMEOUT:g} s; check that it runs and answers"
            )

    @property
    def connected(self) -> bool:
        """Whether the subscription is up (``False`` while reconnecting, or before start)."""
        return self._subscription.pubsub is not None and self._down_since is None

    # -- life cycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            await self.start(task_group)
        except BaseException:
            await self.close()
            # The group has no task left: leaving it only ends its scope.
            await task_group.__aexit__(None, None, None)
            raise
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        await self.close()
        if task_group is not None:
            # The reader has stopped, so the group holds no task: leave it without the
            # body's exception, which then propagates unchanged (not in a group). If
            # the reader crashed, the group raises that crash here.
            await task_group.__aexit__(None, None, None)

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Subscribe and wait for the server to confirm, then read in ``task_group``.

        Raises:
            ConnectionFailedError: the first subscription failed.

        """
        if self._scope is not None:
            raise RuntimeError("EventListener.start() was called twice")
        await task_group.start(self._run)

    async def close(self) -> None:
        """Stop reading and close the subscription connection (idempotent).

        Runs shielded from cancellation, for at most ``close_timeout`` seconds.
        """
        with anyio.move_on_after(self._close_timeout, shield=True):
            if self._scope is not None:
                self._scope.cancel()
            if self._stopped is not None:
                await self._stopped.wait()
            else:  # never started: only the client to close
                await self._client.aclose()

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stopped = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    await self._subscription.open_first(self._channels, self._config)
                except LOST as exc:
                    raise _failure(self._config, self._subscription.command, exc) from exc
                self._confirmed(self._channels)
                task_status.started()
                while True:
                    try:
                        await self._read()
                    except LOST as exc:
                        self._lost(exc)
                    await self._reconnect()
        finally:
            with anyio.move_on_after(self._close_timeout, shield=True):
                await self._subscription.close()
                await self._client.aclose()
            self._stopped.set()

    # -- subscription ---------------------------------------------------------------------
    def _confirmed(self, channels: Sequence[str]) -> None:
        # Channels added while the subscription was being made joined it (or join the next).
        for name in channels:
            waiting = self._confirming.pop(name, None)
            if waiting is not None:
                waiting.set()

    async def _read(self) -> None:
        """Read messages until the subscription breaks (a silent server breaks it too)."""
        pubsub = self._subscription.pubsub
        assert pubsub is not None
        interval = self._config.health_check_interval
        patience = self._config.socket_timeout
        heard = anyio.current_time()
        pinged: float | None = None
        while True:
            due = heard + interval if pinged is None else pinged + patience
            msg = await pubsub.get_message(timeout=max(due - anyio.current_time(), 0.0))
            now = anyio.current_time()
            if msg is None:
                if pinged is None and now >= heard + interval:
                    await pubsub.ping()  # any answer (the pong, a message) proves the server alive
                    pinged = now
                elif pinged is not None and now >= pinged + patience:
                    raise RedisTimeoutError(
                        f"no answer to PING within the socket timeout of {patience:g} s: the server hangs"
                    )
                continue
            heard, pinged = now, None
            if msg["type"] == "pong":
                continue
            if Subscription.is_confirmation(msg):  # a channel added by subscribe() is live
                self._confirmed([channel_name(msg["channel"])])
                continue
            if Subscription.is_dropped_by_server(msg):
                # The listener never unsubscribes: the server did, because the
                # network's slot left this node's shard. Subscribe again where it is now.
                raise RedisConnectionError(
                    f"the server unsubscribed {channel_name(msg['channel'])!r}: the network's slot moved"
                )
            if not Subscription.is_message(msg):
                continue
            name = channel_name(msg["channel"])
            if name not in self._counters:
                continue
            if self._on_message is not None:
                data = msg["data"]
                try:
                    self._on_message(name, data if isinstance(data, bytes) else str(data).encode())
                except Exception:
                    # A faulty callback must not stop the subscription; waiters still wake.
                    log.exception("event callback failed", channel=name)
            self._bump([name])

    def _lost(self, exc: BaseException) -> None:
        self._last_error = exc
        if self._down_since is None:
            self._down_since = anyio.current_time()
            log.warning("event subscription lost; reconnecting", error=str(exc))
        # Wake waiters so that they bound their wait by the reconnect budget.
        self._notify()

    async def _reconnect(self) -> None:
        await self._subscription.close()
        backoff = FIRST_BACKOFF
        while True:
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            channels = list(self._channels)
            try:
                await self._subscription.open(channels)
            except LOST as exc:
                self._last_error = exc
                continue
            self._confirmed(channels)
            down_since, self._down_since = self._down_since, None
            if down_since is not None:
                log.info("event subscription restored", after=round(anyio.current_time() - down_since, 3))
            # Messages may have been missed while disconnected: wake every waiter.
            self._bump(self._channels)
            return

    def _bump(self, channels: Sequence[str]) -> None:
        for name in channels:
            self._counters[name] += 1
        self._notify()

    def _notify(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    # -- waiting ------------------------------------------------------------------------
    def _check_outage(self, now: float) -> None:
        if self._down_since is None:
            return
        down_for = now - self._down_since
        if down_for >= self._config.reconnect_budget:
            raise ConnectionFailedError(
                f"the event subscription to the server at {self._config} has been down for "
                f"{down_for:.1f} s, past the reconnect budget of {self._config.reconnect_budget:g} s "
                f"(last error: {self._last_error}); check that the server runs and this host can "
                "reach it, or raise RedisConfig(reconnect_budget=...) to ride out longer outages"
            )

    async def wait(self, channels: Sequence[str], seen: Sequence[int], timeout: float | None) -> bool:
        """Wait until a counter of ``channels`` moves past the values in ``seen``.

        Args:
            channels: Channels to watch.
            seen: The counter of each channel read before the caller checked Redis.
            timeout: Seconds to wait at most; ``None`` waits without limit.

        Returns:
            ``True`` if one moved, ``False`` on timeout.

        Raises:
            ConnectionFailedError: the subscription has been down longer than the
                reconnect budget.

        """
        pairs = list(zip(channels, seen, strict=True))
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            if any(self._counters[c] != s for c, s in pairs):
                return True
            now = anyio.current_time()
            self._check_outage(now)
            step = None if deadline is None else deadline - now
            if step is not None and step <= 0:
                return False
            if self._down_since is not None:
                left = self._down_since + self._config.reconnect_budget - now
                step = left if step is None else min(step, left)
            changed = self._changed
            with anyio.move_on_after(step):
                await changed.wait()
