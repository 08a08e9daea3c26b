"""Task functions for the logging tests (importable by worker processes as tests.log_funcs)."""

from __future__ import annotations

import asyncio
import logging
import sys

user_log = logging.getLogger("tests.user")


def chatty(x: int) -> dict[str, int]:
    """A plain function (run in a thread) that logs through the standard library."""
    user_log.warning("plain function saw %s", x, extra={"ignored": True})
    return {"y": x}


async def async_chatty(x: int) -> dict[str, int]:
    """An async function that logs through the standard library."""
    await asyncio.sleep(0)
    user_log.warning("async function saw %s", x)
    return {"y": x}


def shout(x: int) -> dict[str, int]:
    """Write 1 MB to stderr (and some to stdout), then return."""
    chunk = "e" * 1023 + "\n"
    for _ in range(1024):
        sys.stderr.write(chunk)
    sys.stderr.flush()
    print("o" * 1000, flush=True)
    return {"y": x}


def fail_loudly(x: int) -> dict[str, int]:
    """Raise with a multi-line message."""
    raise RuntimeError(f"bad input {x}\nsecond line")
