"""The connection life cycle of one network client (a Controller or a Worker).

A :class:`Session` owns the Redis client, the store, the event listener and
one anyio task group for the background tasks of its owner. Controller and
Worker each hold one (composition): what differs between them, the channels
they listen to and what they do with a message, is given to the constructor.

On connecting, a controller's session checks the server's eviction policy
(:func:`check_eviction_policy`): rushpy's data must never be evicted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import anyio
import anyio.abc

from rushpy.config import RedisConfig
from rushpy.connection import RushClient, check_connection, create_client
from rushpy.errors import ConfigError, RushError, ServerError
from rushpy.events import EventListener
from rushpy.keys import DEFAULT_PREFIX, Keys
from rushpy.logs import get_logger
from rushpy.store import DEFAULT_MAX_TASK_BYTES, Store
from rushpy.validation import check_count

__all__ = ["CLOSE_TIMEOUT", "Session", "check_eviction_policy", "resolve_config"]

log = get_logger("rushpy.session")

CLOSE_TIMEOUT = 10.0
"""Seconds the shielded clean-up of a closing session may take at most."""

_SAFE_POLICY = "noeviction"


async def check_eviction_policy(client: RushClient, *, allow_evicting: bool = False) -> str | None:
    """Check that the server never evicts rushpy's keys when memory runs out.

    Reads ``CONFIG GET maxmemory*``. With ``noeviction`` a full server refuses
    writes (:class:`~rushpy.errors.ServerFullError`: workers wait, pushes are
    refused whole); an evicting policy deletes keys silently instead:

    - ``allkeys-*`` may evict any key: tasks, results, queues vanish without a
      trace. Refused, unless ``allow_evicting`` (then a warning).
    - ``volatile-*`` evicts keys with an expiry: rushpy's heartbeat keys have
      one, and an evicted heartbeat makes a healthy worker look lost (its tasks
      re-run or fail). A warning.

    A server that refuses ``CONFIG`` (an ACL without ``+config``, a managed
    service) skips the check, with a debug record.

    Args:
        client: A client of the server.
        allow_evicting: Accept an ``allkeys-*`` policy (with a warning).

    Returns:
        The policy, or ``None`` when it could not be read.

    Raises:
        ConfigError: an ``allkeys-*`` policy and ``allow_evicting`` is false.

    """
    try:
        reply = await client.config_get("maxmemory*")
    except ServerError as exc:
        log.debug("cannot read the server's maxmemory-policy; eviction check skipped", error=str(exc))
        return None
    settings = {_text(k): _text(v) for k, v in reply.items()}
    policy = settings.get("maxmemory-policy", "")  # empty (not reported): nothing to check
    limit = settings.get("maxmemory", "?")
    fix = f"CONFIG SET maxmemory-policy {_SAFE_POLICY}"
    if policy.startswith("allkeys-"):
        problem = (
            f"the server at {client.config} evicts any key when memory runs out (maxmemory-policy "
            f"{policy}, maxmemory {limit}): tasks, results and queues of rushpy networks would "
            "vanish without a trace"
        )
        if not allow_evicting:
            raise ConfigError(
                f"{problem}. Set `{fix}` (in redis.conf, or your provider's parameter group): a "
                "full server then refuses writes and rushpy waits for memory. Or pass "
                "Controller(..., allow_evicting_server=True) if losing tasks is acceptable"
            )
        log.warning(f"{problem}; allowed by allow_evicting_server=True", policy=policy)
    elif policy.startswith("volatile-"):
        log.warning(
            f"the server's maxmemory-policy is {policy}: when memory runs out it evicts keys with "
            "an expiry, and rushpy's worker heartbeat keys have one: an evicted heartbeat makes a "
            f"healthy worker look lost (its tasks are re-run or failed). Set `{fix}`",
            policy=policy,
            maxmemory=limit,
        )
    return policy or None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def resolve_config(config: RedisConfig | str | None) -> RedisConfig:
    """A config from a config, a URL, or the environment (``None``)."""
    if config is None:
        return RedisConfig.from_env()
    if isinstance(config, str):
        return RedisConfig.from_url(config)
    return config


class Session:
    """Client, store, event listener and task group of one network client.

    Args:
        network_id: Id of the network.
        config: Server settings, a URL, or ``None`` for :meth:`RedisConfig.from_env`.
        prefix: First component of every key.
        channels: Pub/sub channels to listen to besides the network's events channel.
        on_event: Called with the channel and payload of every message.
        owner: Name of the owning class, for error messages.
        max_task_bytes: Largest encoded size of one task's field values; a bigger
            task is refused with a ``TaskError`` before anything is written.
        check_eviction: Check the server's eviction policy on entry
            (:func:`check_eviction_policy`).
        allow_evicting_server: Accept an ``allkeys-*`` eviction policy.

    """

    def __init__(
        self,
        network_id: str,
        config: RedisConfig | str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        channels: Sequence[str] = (),
        on_event: Callable[[str, bytes], None] | None = None,
        owner: str = "Controller",
        max_task_bytes: int = DEFAULT_MAX_TASK_BYTES,
        check_eviction: bool = False,
        allow_evicting_server: bool = False,
    ) -> None:
        check_count(
            max_task_bytes,
            "max_task_bytes",
            minimum=1,
            hint=f"use a positive number of bytes (default {DEFAULT_MAX_TASK_BYTES})",
        )
        self.keys = Keys(network_id, prefix)
        self.config = resolve_config(config)
        self._client = create_client(self.config)
        self.store = Store(self._client, self.keys, max_task_bytes=max_task_bytes)
        self._channels = [self.keys.events, *channels]
        self._on_event = on_event
        self._owner = owner
        self._check_eviction = check_eviction
        self._allow_evicting = allow_evicting_server
        self._listener: EventListener | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def is_open(self) -> bool:
        """Whether the session is entered and its background tasks still run."""
        return self._task_group is not None

    @property
    def events(self) -> EventListener:
        """The event listener; raises when the session is not open."""
        if self._listener is None:
            raise RushError(f"{self._owner} is not open: use `async with {self._owner}(...)`")
        return self._listener

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """Task group for the owner's background tasks; cancelled when the session closes."""
        if self._task_group is None:
            raise RushError(f"{self._owner} is not open: use `async with {self._owner}(...)`")
        return self._task_group

    async def __aenter__(self) -> Self:
        try:
            await check_connection(self.config)
            if self._check_eviction:
                await check_eviction_policy(self._client, allow_evicting=self._allow_evicting)
            await self.store.load_scripts()
        except BaseException:
            await self._close_client()
            raise
        # Entered here and exited in __aexit__, in the same task: the owner is used
        # as `async with`, so the group's scope nests around the caller's block.
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        listener = EventListener(self.config, self._channels, self._on_event)
        try:
            # The listener reads in the session's group: cancelled with it on exit.
            await listener.start(task_group)
        except BaseException:
            await task_group.__aexit__(None, None, None)
            await self._close_client()
            raise
        self._listener = listener
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop_tasks()
        finally:
            await self._close_client()

    async def stop_tasks(self) -> None:
        """Cancel the background tasks (the listener's too) and wait for them to end.

        The client stays open: an owner calls this first on exit, then writes
        its last records (a worker's exit state), then leaves the session.
        Calling it again does nothing.
        """
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return
        task_group.cancel_scope.cancel()
        # Not given the caller's exception: the group would wrap it in an
        # ExceptionGroup. It only reports errors of its own tasks.
        await task_group.__aexit__(None, None, None)

    async def _close_client(self) -> None:
        """Close the listener, then the client; shielded, with a deadline."""
        listener, self._listener = self._listener, None
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + CLOSE_TIMEOUT
            if listener is not None:
                await listener.close()
            await self.store.client.aclose()
