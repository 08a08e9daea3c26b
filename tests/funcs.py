"""Functions run by worker processes in the tests (importable as tests.funcs)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any


def square(x: float) -> dict[str, float]:
    return {"y": x * x}


async def async_square(x: float) -> dict[str, float]:
    await asyncio.sleep(0)
    return {"y": x * x}


def fail_on_odd(x: int) -> dict[str, int]:
    if x % 2:
        raise ValueError(f"odd input {x}")
    return {"y": x}


def bad_return(x: int) -> Any:
    return [x]


def sleepy(x: float, duration: float = 0.2) -> dict[str, float]:
    time.sleep(duration)
    return {"y": x}


async def async_sleepy(x: float, duration: float = 0.2) -> dict[str, Any]:
    started = time.monotonic()
    await asyncio.sleep(duration)
    return {"y": x, "start": started, "pid": os.getpid()}


def bad_return_on_odd(x: int) -> Any:
    if x % 2:
        return [x]
    return {"y": x}


def interval(x: float, duration: float = 0.3) -> dict[str, float]:
    started = time.monotonic()
    time.sleep(duration)
    return {"y": x, "start": started, "end": time.monotonic()}


async def async_interval(x: float, duration: float = 0.3) -> dict[str, float]:
    started = time.monotonic()
    await asyncio.sleep(duration)
    return {"y": x, "start": started, "end": time.monotonic()}


def burn(seconds: float) -> dict[str, int]:
    """Busy-loop on the CPU (holding the GIL as much as Python does) for ``seconds``."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return {"loops": n}


def fail_first(marker: str, x: int = 0) -> dict[str, int]:
    """Fail the first run (creating the file ``marker``), succeed on every later run."""
    try:
        with open(marker, "x"):
            pass
    except FileExistsError:
        return {"y": x}
    raise RuntimeError(f"first attempt fails ({marker})")


def pid_square(x: float) -> dict[str, float]:
    """Square ``x`` and say which process did it (thread of the worker or a child)."""
    return {"y": x * x, "pid": os.getpid()}


def exit_on_negative(x: int, code: int = 3) -> dict[str, int]:
    """End the whole process at once (no cleanup, no reply) for a negative ``x``."""
    if x < 0:
        os._exit(code)
    return {"y": x}


def chaos_square(x: int) -> dict[str, int]:
    """A short task (4 ms) for the chaos tests: long enough to be interrupted."""
    time.sleep(0.004)
    return {"y": x * x, "pid": os.getpid()}


def fail_on_odd_sized(x: int, blob: str = "") -> dict[str, int]:
    """As fail_on_odd, with an optional large input whose length is returned."""
    if x % 2:
        raise ValueError(f"odd input {x}")
    return {"y": x, "n": len(blob)}


def gc_settings() -> dict[str, Any]:
    """The garbage collector's settings in the process that runs the task."""
    import gc

    return {"threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}
