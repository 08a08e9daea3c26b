"""The connection life cycle of one network client (a Controller or a Worker).

A :class:`Session` owns the Redis client, the store, the event listener and
one anyio task group for the background tasks of its owner. Controller and
Worker each hold one (composition): what differs between them, the channels
they listen to and what they do with a message, is given to the constructor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import anyio
import anyio.abc

from rushpy.config import RedisConfig
from rushpy.connection import check_connection, create_client
from rushpy.errors import RushError
from rushpy.events import EventListener
from rushpy.keys import DEFAULT_PREFIX, Keys
from rushpy.store import DEFAULT_MAX_TASK_BYTES, Store
from rushpy.validation import check_count

__all__ = ["CLOSE_TIMEOUT", "Session", "resolve_config"]

CLOSE_TIMEOUT = 10.0
"""Seconds the shielded clean-up of a closing session may take at most."""


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
    ) -> None:
        check_count(
            max_task_bytes,
            "max_task_bytes",
            minimum=1,
            hint=f"use a positive number of bytes (default {DEFAULT_MAX_TASK_BYTES})",
        )
        self.keys = Keys(network_id, prefix)
        self.config = resolve_config(config)
        self.store = Store(create_client(self.config), self.keys, max_task_bytes=max_task_bytes)
        self._channels = [self.keys.events, *channels]
        self._on_event = on_event
        self._owner = owner
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
