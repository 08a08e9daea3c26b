"""W1, W2 and W3, written once against :class:`Adapter` so that every peer runs the same code.

Each workload checks every result (``2 * x`` for every ``x`` pushed) and raises
:class:`WrongResults` otherwise: a fast peer that loses tasks must not win.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from benchmarks.peers.base import Adapter

#: Evaluations W3 keeps in flight, and the length of one.
W3_SLOTS = 4
W3_SLEEP = 0.010
#: Round trips W2 runs first and does not count (connections, imports, caches warm up).
W2_WARMUP = 5


class WrongResults(AssertionError):
    """An adapter returned missing, duplicate or wrong results."""


@dataclass(frozen=True)
class Sizes:
    """How big each workload is."""

    w1_tasks: int = 2_000
    w2_round_trips: int = 100
    w3_evaluations: int = 100


QUICK = Sizes(w1_tasks=50, w2_round_trips=5, w3_evaluations=8)


def check(xs: range, ys: list[int]) -> None:
    """Raise :class:`WrongResults` unless ``ys`` holds ``2 * x`` exactly once for each ``x``."""
    if sorted(ys) != [2 * x for x in xs]:
        got = sorted(ys)[:10]
        raise WrongResults(f"expected {len(xs)} results 2*x for x in {xs}, got {len(ys)}: {got}...")


async def w1(adapter: Adapter, n_tasks: int) -> float:
    """Throughput: push ``n_tasks`` no-op tasks at once; tasks per second until all results are seen."""
    xs = range(n_tasks)
    started = time.perf_counter()
    ys = await adapter.run_batch(list(xs))
    elapsed = time.perf_counter() - started
    check(xs, ys)
    return n_tasks / elapsed


async def w2(adapter: Adapter, n_round_trips: int) -> tuple[float, float]:
    """Round trip: sequential single tasks, push to result seen; (p50, p99) in seconds."""
    latencies = []
    for i in range(-W2_WARMUP, n_round_trips):
        started = time.perf_counter()
        y = await adapter.run_one(i, 0.0)
        elapsed = time.perf_counter() - started
        if y != 2 * i:
            raise WrongResults(f"round trip {i}: expected {2 * i}, got {y!r}")
        if i >= 0:
            latencies.append(elapsed)
    return percentile(latencies, 50), percentile(latencies, 99)


async def w3(adapter: Adapter, n_evaluations: int) -> float:
    """HPO loop: keep 4 x 10 ms evaluations in flight for ``n_evaluations``; overhead over the ideal, %.

    The ideal is ``n_evaluations * 10 ms / 4``: what four slots would take if
    pushing, popping and reading results cost nothing.
    """
    pending = iter(range(n_evaluations))
    ys: list[int] = []

    async def slot() -> None:
        # A new evaluation is proposed as soon as one finishes, like an optimiser would.
        for x in pending:
            ys.append(await adapter.run_one(x, W3_SLEEP))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(W3_SLOTS):
            group.create_task(slot())
    elapsed = time.perf_counter() - started
    check(range(n_evaluations), ys)
    ideal = n_evaluations * W3_SLEEP / W3_SLOTS
    return 100.0 * (elapsed - ideal) / ideal


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (nearest rank, so p99 of 5 values is the largest)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] if len(ordered) > 1 else statistics.fmean(ordered)
