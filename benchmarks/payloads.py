"""W5 payloads: throughput and round trip as task inputs grow, rushpy against a hand-written floor.

Run from the repository root::

    .venv/bin/python -m benchmarks.payloads [--quick]

Six shapes of input: 1, 10 and 100 float parameters, and one vector of 10,
1,000 and 10,000 floats. For each, rushpy (2 local workers, an async function
that counts what it received) and a hand-written LPUSH/BRPOP loop carrying the
same inputs as msgpack (2 worker processes) run a batch (tasks/s, W1-style) and
sequential round trips (p50, W2-style). Every result is checked. Batches are
capped at :data:`BATCH_BYTES` of inputs so that the 10,000-float shape stays small.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]
import redis.asyncio

import rushpy
from benchmarks.compare import machine_info, render, server_version
from benchmarks.funcs import async_payload_size
from benchmarks.peers.base import ROOT, python_argv, stop_procs
from benchmarks.peers.workloads import percentile

TIMEOUT = 120.0
#: Most input bytes one batch carries (the batch is shortened for big shapes).
BATCH_BYTES = 20 * 1024 * 1024
QUEUE, READY = "w5:queue", "w5:ready"


@dataclass(frozen=True)
class Sizes:
    """Tasks per batch (before the byte cap) and round trips per shape."""

    tasks: int = 2_000
    round_trips: int = 50


QUICK = Sizes(tasks=20, round_trips=3)


def shapes() -> dict[str, dict[str, Any]]:
    """Name -> the inputs of one task."""
    out: dict[str, dict[str, Any]] = {}
    for n in (1, 10, 100):
        out[f"{n} params"] = {f"p{i}": i + 0.5 for i in range(n)}
    for n in (10, 1_000, 10_000):
        out[f"vector {n:,}"] = {"v": [i + 0.5 for i in range(n)]}
    return out


def expected(xs: dict[str, Any]) -> int:
    """What :func:`benchmarks.funcs.async_payload_size` returns for ``xs``."""
    return sum(len(v) if isinstance(v, list) else 1 for v in xs.values())


def batch_size(xs: dict[str, Any], tasks: int) -> int:
    return max(1, min(tasks, BATCH_BYTES // len(msgpack.packb(xs))))


@dataclass(frozen=True)
class Figures:
    """One system on one shape."""

    tasks: int
    tasks_per_s: float
    p50: float


class WrongPayloadResult(AssertionError):
    """A worker returned the wrong count for a payload."""


def _check(ys: Sequence[int], want: int, n: int, who: str) -> None:
    if len(ys) != n or any(y != want for y in ys):
        raise WrongPayloadResult(f"{who}: expected {n} results of {want}, got {len(ys)}: {list(ys)[:5]}")


async def rushpy_shape(rush: rushpy.Controller, xs: dict[str, Any], sizes: Sizes) -> Figures:
    """Batch and round trips of one shape through a controller whose workers already run."""
    n, want = batch_size(xs, sizes.tasks), expected(xs)
    started = time.perf_counter()
    await rush.push_tasks([xs] * n)
    ys: list[int] = []
    while len(ys) < n:
        ys.extend(row["y"] for row in await rush.fetch_new_tasks(timeout=TIMEOUT))
    rate = n / (time.perf_counter() - started)
    _check(ys, want, n, "rushpy")
    latencies = []
    for _ in range(sizes.round_trips):
        started = time.perf_counter()
        keys = await rush.push_tasks([xs])
        async for row in rush.as_completed(keys, timeout=TIMEOUT):
            _check([row["y"]], want, 1, "rushpy")
        latencies.append(time.perf_counter() - started)
        await rush.fetch_new_tasks()  # keep the stream of new results empty for the next batch
    return Figures(n, rate, percentile(latencies, 50))


async def rushpy_all(config: rushpy.RedisConfig, sizes: Sizes) -> dict[str, Figures]:
    """Every shape through rushpy (2 local workers)."""
    async with rushpy.Controller(f"w5-{uuid.uuid4().hex[:8]}", config=config) as rush:
        try:
            await rush.start_local_workers(2, fun=async_payload_size)
            await rush.wait_for_workers(2, timeout=TIMEOUT)
            return {name: await rushpy_shape(rush, xs, sizes) for name, xs in shapes().items()}
        finally:
            await rush.stop_workers()
            await rush.reset()


async def handwritten_all(url: str, sizes: Sizes) -> dict[str, Figures]:
    """Every shape through the hand-written loop (2 worker processes)."""
    client = redis.asyncio.Redis.from_url(url)
    argv = python_argv("-m", "benchmarks.payloads", "--worker", url)
    quiet = subprocess.DEVNULL
    procs = [subprocess.Popen(argv, cwd=ROOT, stdout=quiet, stderr=quiet) for _ in range(2)]
    try:
        for _ in procs:
            if await client.brpop([READY], timeout=TIMEOUT) is None:
                raise TimeoutError(f"payload workers not ready within {TIMEOUT} s")
        out = {}
        for name, xs in shapes().items():
            n, want = batch_size(xs, sizes.tasks), expected(xs)
            reply = f"w5:reply:{uuid.uuid4().hex}"
            body = msgpack.packb([xs, reply])
            started = time.perf_counter()
            await client.lpush(QUEUE, *([body] * n))
            ys: list[int] = []
            while len(ys) < n:
                got = await client.brpop([reply], timeout=TIMEOUT)
                if got is None:
                    raise TimeoutError(f"{len(ys)} of {n} results after {TIMEOUT} s")
                ys.append(int(got[1]))
                # Drain whatever else has arrived in one more round trip (as benchmarks.peers.handwritten).
                more = await client.rpop(reply, n - len(ys)) if len(ys) < n else None
                ys.extend(int(v) for v in more or ())
            rate = n / (time.perf_counter() - started)
            _check(ys, want, n, "handwritten")
            latencies = []
            for _ in range(sizes.round_trips):
                started = time.perf_counter()
                await client.lpush(QUEUE, body)
                got = await client.brpop([reply], timeout=TIMEOUT)
                latencies.append(time.perf_counter() - started)
                _check([int(got[1])] if got else [], want, 1, "handwritten")
            out[name] = Figures(n, rate, percentile(latencies, 50))
        return out
    finally:
        await client.flushdb()
        await client.aclose()
        await asyncio.to_thread(stop_procs, procs)


async def work(url: str) -> None:
    """Hand-written worker: BRPOP msgpack ``[xs, reply]``, LPUSH the count to ``reply``."""
    client = redis.asyncio.Redis.from_url(url)
    await client.lpush(READY, "1")
    while True:
        _, raw = await client.brpop([QUEUE])  # type: ignore[misc]
        xs, reply = msgpack.unpackb(raw)
        await client.lpush(reply, (await async_payload_size(**xs))["y"])


def table(rush: dict[str, Figures], hand: dict[str, Figures]) -> tuple[list[str], list[list[str]]]:
    header = ["shape", "input bytes", "batch", "rushpy tasks/s", "rushpy p50 ms", "handwritten tasks/s",
              "handwritten p50 ms"]  # fmt: skip
    rows = []
    for name, xs in shapes().items():
        r, h = rush[name], hand[name]
        rows.append([
            name, f"{len(msgpack.packb(xs)):,}", f"{r.tasks:,}",
            f"{r.tasks_per_s:,.0f}", f"{r.p50 * 1e3:.2f}", f"{h.tasks_per_s:,.0f}", f"{h.p50 * 1e3:.2f}",
        ])  # fmt: skip
    return header, rows


async def run(server: rushpy.EmbeddedServer, sizes: Sizes) -> tuple[dict[str, Figures], dict[str, Figures]]:
    """Both systems on every shape; prints the table."""
    base = server.config.to_url(include_password=True).rsplit("/", 1)[0]
    print(machine_info(await server_version(base)), flush=True)
    rush = await rushpy_all(server.config, sizes)
    hand = await handwritten_all(f"{base}/1", sizes)
    title = f"W5 payloads: batch of up to {sizes.tasks:,} tasks, {sizes.round_trips} round trips (2 workers)"
    print(render(*table(rush, hand), title), flush=True)
    return rush, hand


def main(argv: Sequence[str] | None = None) -> None:
    summary = __doc__.splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.payloads", description=summary)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)  # a hand-written worker process
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(work(args.worker))
        return
    with rushpy.EmbeddedServer() as server:
        asyncio.run(run(server, QUICK if args.quick else Sizes()))


if __name__ == "__main__":
    main(sys.argv[1:])
