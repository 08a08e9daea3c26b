"""Helpers shared by the test modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from rushpy import Controller


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 5.0
) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for: {what}")


Waiter = Callable[[Controller, list[str]], Awaitable[Any]]
"""A controller method that waits, called with the keys of the tasks pushed."""


def waiters(timeout: float) -> list[Any]:
    """The controller's waiting methods, each with ``timeout``, as ``pytest.param`` values with ids."""

    async def wait_for_tasks(rush: Controller, keys: list[str]) -> Any:
        return await rush.wait_for_tasks(keys, timeout=timeout)

    async def wait_for_new_tasks(rush: Controller, keys: list[str]) -> Any:
        return await rush.wait_for_new_tasks(timeout=timeout)

    async def fetch_new_tasks(rush: Controller, keys: list[str]) -> Any:
        return await rush.fetch_new_tasks(timeout=timeout)

    async def wait_for_workers(rush: Controller, keys: list[str]) -> Any:
        return await rush.wait_for_workers(n=1, timeout=timeout)

    calls = (wait_for_tasks, wait_for_new_tasks, fetch_new_tasks, wait_for_workers)
    return [pytest.param(call, id=call.__name__) for call in calls]
