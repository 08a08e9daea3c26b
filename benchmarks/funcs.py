"""Task functions for the benchmarks (importable by worker processes)."""

from __future__ import annotations


def noop(x: int) -> dict[str, int]:
    return {"y": x}


async def async_noop(x: int) -> dict[str, int]:
    return {"y": x}


async def async_payload_size(**xs: object) -> dict[str, int]:
    """W5: count what arrived (parameters, plus the length of any vector), so the driver can check it."""
    return {"y": sum(len(v) if isinstance(v, list) else 1 for v in xs.values())}
