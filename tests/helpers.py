"""Helpers shared by the test modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest


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
