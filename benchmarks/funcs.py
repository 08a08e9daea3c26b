"""Task functions for the benchmarks (importable by worker processes)."""

from __future__ import annotations


def noop(x: int) -> dict[str, int]:
    return {"y": x}


async def async_noop(x: int) -> dict[str, int]:
    return {"y": x}
