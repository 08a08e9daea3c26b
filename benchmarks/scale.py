"""W4 scale: how rushpy's costs grow with the archive and with the number of workers.

Run from the repository root::

    .venv/bin/python -m benchmarks.scale [--quick] [--max-n 100000] [--only cache,memory,workers]

Prints three tables (see docs/performance.md):

- ``cache``: ``fetch_new_tasks`` returning 1 new result with 10^3 ... 10^6 rows
  cached (median of ``--calls`` calls); a fresh controller's cold
  ``fetch_finished_tasks`` per row; controller RAM per cached row (tracemalloc
  around a fresh controller's ``fetch_finished_tasks``).
- ``memory``: Redis bytes per small finished task (``used_memory`` delta / N
  after N tasks ``xs={"x": i}``, ``ys={"y": i}`` ran through real workers), the
  per-entry cost of the rows hash and of the finished list,
  and the same delta for each peer in ``--peers``.
- ``workers``: N no-op tasks run by 64 workers as coroutines in a few processes
  (:mod:`benchmarks.many_workers`), tasks/s.

Every figure comes with a check of the results (counts and values), so a run
that loses tasks fails instead of printing a number.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio

import rushpy
from benchmarks.compare import machine_info, render, server_version
from benchmarks.funcs import noop
from benchmarks.peers import registry
from benchmarks.peers.base import ROOT, python_argv, stop_procs
from rushpy.keys import Keys

#: Rows pushed per ``push_finished_tasks`` call while building a big network.
CHUNK = 10_000
TIMEOUT = 300.0
PARTS = ("cache", "memory", "workers")


class ScaleCheckError(AssertionError):
    """A scale run saw missing or wrong results."""


@dataclass(frozen=True)
class Sizes:
    """How big each part is (the defaults are the documented run)."""

    cached: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    calls: int = 50
    cold_from: int = 100_000
    ram_rows: int = 100_000
    memory_tasks: int = 20_000
    many_tasks: int = 100_000
    many_workers: int = 64
    many_procs: int = 4


QUICK = Sizes(
    cached=(100, 1_000), calls=5, cold_from=1_000, ram_rows=1_000,
    memory_tasks=200, many_tasks=2_000, many_workers=8, many_procs=2,
)  # fmt: skip


@dataclass(frozen=True)
class CacheRow:
    """One archive size: cached fetch (ms), cold fetch (µs/row), controller RAM (bytes/row)."""

    n: int
    cached_ms: float
    cold_us_per_row: float | None
    ram_bytes_per_row: float | None


@dataclass(frozen=True)
class MemoryFigures:
    """Redis memory of N small finished tasks."""

    n: int
    bytes_per_task: float
    rows_bytes_per_entry: float
    finished_list_bytes_per_entry: float


def network() -> str:
    return f"scale-{uuid.uuid4().hex[:8]}"


async def _grow(rush: rushpy.Controller, have: int, target: int) -> int:
    """Push finished tasks ``x = have .. target-1`` (``y = x``) in chunks; returns ``target``."""
    for start in range(have, target, CHUNK):
        xs = range(start, min(target, start + CHUNK))
        await rush.push_finished_tasks([{"x": i} for i in xs], [{"y": i} for i in xs])
    return max(have, target)


async def _cold_fetch(config: rushpy.RedisConfig, network_id: str, n: int, *, trace: bool) -> float:
    """µs per row of a fresh controller's first ``fetch_finished_tasks`` (or bytes per row if ``trace``)."""
    async with rushpy.Controller(network_id, config=config) as fresh:
        if trace:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        table = await fresh.fetch_finished_tasks()
        elapsed = time.perf_counter() - started
        if trace:
            # The cache and the returned table: what a controller holds for n rows.
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
        if len(table) != n:
            raise ScaleCheckError(f"cold fetch returned {len(table)} rows, expected {n}")
        del table
    return (after - before) / n if trace else elapsed / n * 1e6


async def cache_scale(config: rushpy.RedisConfig, sizes: Sizes) -> list[CacheRow]:
    """One network grown through ``sizes.cached``; at each size the three cache figures."""
    rows = []
    network_id = network()
    async with rushpy.Controller(network_id, config=config) as rush:
        have = 0
        try:
            for n in sorted(sizes.cached):
                have = await _grow(rush, have, n)
                cold = ram = None
                if n >= sizes.cold_from:
                    cold = await _cold_fetch(config, network_id, have, trace=False)
                if n == sizes.ram_rows:
                    ram = await _cold_fetch(config, network_id, have, trace=True)
                # A timeout, although the rows are there: fetch_new_tasks() with the default
                # timeout=0 bounds its reads by a few seconds, too short for 10^5+ new rows.
                seen = len(await rush.fetch_new_tasks(timeout=TIMEOUT))
                if len(await rush.fetch_finished_tasks()) != have:
                    raise ScaleCheckError(f"cache holds a wrong number of rows (expected {have}, new {seen})")
                times = []
                for i in range(sizes.calls):
                    await rush.push_finished_tasks([{"x": -i}], [{"y": -i}])
                    started = time.perf_counter()
                    new = await rush.fetch_new_tasks()
                    times.append(time.perf_counter() - started)
                    if [row["y"] for row in new] != [-i]:
                        raise ScaleCheckError(f"fetch_new_tasks returned {len(new)} rows, expected y={-i}")
                have += sizes.calls
                rows.append(CacheRow(n, statistics.median(times) * 1e3, cold, ram))
        finally:
            await rush.reset()
    return rows


async def _used_memory(client: redis.asyncio.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def server_memory(config: rushpy.RedisConfig, n: int) -> MemoryFigures:
    """Redis memory per small finished task, after ``n`` tasks ran through 2 real workers."""
    network_id = network()
    client = redis.asyncio.Redis.from_url(config.to_url(include_password=True))
    try:
        async with rushpy.Controller(network_id, config=config) as rush:
            try:
                await rush.start_local_workers(2, fun=noop)
                await rush.wait_for_workers(2, timeout=TIMEOUT)
                before = await _used_memory(client)
                await rush.push_tasks([{"x": i} for i in range(n)])
                ys: list[int] = []
                while len(ys) < n:
                    ys.extend(row["y"] for row in await rush.fetch_new_tasks(timeout=TIMEOUT))
                if sorted(ys) != list(range(n)):
                    raise ScaleCheckError(f"expected y = 0 .. {n - 1}, got {len(ys)} results")
                after = await _used_memory(client)
                names = Keys(network_id)
                rows = await client.memory_usage(names.rows, samples=0)
                finished = await client.memory_usage(names.finished, samples=0)
                await rush.stop_workers()
            finally:
                await rush.reset()
    finally:
        await client.aclose()
    return MemoryFigures(n, (after - before) / n, (rows or 0) / n, (finished or 0) / n)


async def peer_memory(url: str, peer: str, n: int) -> float:
    """Bytes that stay in Redis per task after ``peer`` ran ``n`` no-op tasks (2 workers)."""
    client = redis.asyncio.Redis.from_url(url)
    adapter = registry.create(peer)
    try:
        await client.flushdb()
        await adapter.setup(url)
        try:
            await adapter.start_workers(2)
            before = await _used_memory(client)
            ys = await adapter.run_batch(list(range(n)))
            if sorted(ys) != [2 * x for x in range(n)]:
                raise ScaleCheckError(f"{peer}: expected {n} results 2*x, got {len(ys)}")
            after = await _used_memory(client)
        finally:
            await adapter.teardown()
    finally:
        await client.flushdb()
        await client.aclose()
    return (after - before) / n


async def many_workers(config: rushpy.RedisConfig, n_tasks: int, n_workers: int, n_procs: int) -> float:
    """Tasks/s of ``n_tasks`` no-op tasks run by ``n_workers`` coroutine workers in ``n_procs`` processes."""
    network_id = network()
    url = config.to_url(include_password=True)
    shares = [n_workers // n_procs + (i < n_workers % n_procs) for i in range(n_procs)]
    procs: list[subprocess.Popen[bytes]] = []
    async with rushpy.Controller(network_id, config=config) as rush:
        try:
            for share in shares:
                argv = python_argv("-m", "benchmarks.many_workers", url, network_id, str(share))
                quiet = subprocess.DEVNULL
                procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=quiet, stderr=quiet))
            await rush.wait_for_workers(n_workers, timeout=TIMEOUT)
            started = time.perf_counter()
            await rush.push_tasks([{"x": i} for i in range(n_tasks)])
            ys: list[int] = []
            while len(ys) < n_tasks:
                ys.extend(row["y"] for row in await rush.fetch_new_tasks(timeout=TIMEOUT))
            elapsed = time.perf_counter() - started
            if sorted(ys) != list(range(n_tasks)):
                raise ScaleCheckError(f"expected y = 0 .. {n_tasks - 1}, got {len(ys)} results")
            await rush.stop_workers()
        finally:
            await asyncio.to_thread(stop_procs, procs, 30.0)
            await rush.reset()
    return n_tasks / elapsed


def cache_table(rows: Sequence[CacheRow]) -> tuple[list[str], list[list[str]]]:
    header = ["rows cached", "fetch_new_tasks ms (1 new)", "cold fetch µs/row", "controller bytes/row"]
    table = [
        [
            f"{r.n:,}",
            f"{r.cached_ms:.3f}",
            "-" if r.cold_us_per_row is None else f"{r.cold_us_per_row:.2f}",
            "-" if r.ram_bytes_per_row is None else f"{r.ram_bytes_per_row:,.0f}",
        ]
        for r in rows
    ]
    return header, table


def memory_table(figures: MemoryFigures, peers: dict[str, float | str]) -> tuple[list[str], list[list[str]]]:
    header = ["what", "bytes"]
    table = [
        [f"rushpy used_memory delta / task ({figures.n:,} finished tasks)", f"{figures.bytes_per_task:,.0f}"],
        ["rushpy rows hash per finished task", f"{figures.rows_bytes_per_entry:,.1f}"],
        ["rushpy finished list, per entry", f"{figures.finished_list_bytes_per_entry:,.1f}"],
    ]
    for peer, value in peers.items():
        shown = value if isinstance(value, str) else f"{value:,.0f}"
        table.append([f"{peer}: used_memory delta / task after run_batch", shown])
    return header, table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of a few seconds)")
    parser.add_argument("--max-n", type=int, default=None, help="largest archive cached (e.g. 100000)")
    parser.add_argument("--only", default=",".join(PARTS), help="parts to run: cache,memory,workers")
    parser.add_argument("--peers", default="", help="peers to add to the memory table")
    args = parser.parse_args(argv)
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := [p for p in args.only if p not in PARTS]:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if missing := [p for p in args.peers if p not in registry.ADAPTERS]:
        parser.error(f"unknown peer(s) {missing}; choose from {', '.join(registry.ADAPTERS)}")
    sizes = QUICK if args.quick else Sizes()
    if args.max_n is not None:
        kept = tuple(n for n in sizes.cached if n <= args.max_n)
        if not kept:
            parser.error(f"--max-n {args.max_n} leaves no archive size; the smallest is {min(sizes.cached)}")
        sizes = Sizes(**{**sizes.__dict__, "cached": kept})
    args.sizes = sizes
    return args


async def run(server: rushpy.EmbeddedServer, args: argparse.Namespace) -> dict[str, object]:
    """Run the parts in ``args.only`` on ``server``, print each table; return the raw figures."""
    sizes: Sizes = args.sizes
    config = server.config
    base = config.to_url(include_password=True).rsplit("/", 1)[0]
    print(machine_info(await server_version(base)), flush=True)
    out: dict[str, object] = {}
    if "cache" in args.only:
        rows = await cache_scale(config, sizes)
        out["cache"] = rows
        title = f"W4 cache: median of {sizes.calls} fetch_new_tasks calls; cold = fresh controller"
        print(render(*cache_table(rows), title), flush=True)
    if "memory" in args.only:
        figures = await server_memory(config, sizes.memory_tasks)
        peers: dict[str, float | str] = {}
        for peer in args.peers:
            try:
                peers[peer] = await peer_memory(f"{base}/1", peer, sizes.memory_tasks)
            except Exception as exc:  # one broken peer must not end the run
                peers[peer] = f"failed: {type(exc).__name__}: {exc}"[:60]
        out["memory"], out["peer_memory"] = figures, peers
        print(render(*memory_table(figures, peers), "W4 Redis memory per small finished task"), flush=True)
    if "workers" in args.only:
        rate = await many_workers(config, sizes.many_tasks, sizes.many_workers, sizes.many_procs)
        out["workers"] = rate
        title = f"W4 {sizes.many_workers} coroutine workers in {sizes.many_procs} processes"
        row = [f"{sizes.many_tasks:,}", f"{sizes.many_workers}", f"{sizes.many_procs}", f"{rate:,.0f}"]
        print(render(["no-op tasks", "workers", "processes", "tasks/s"], [row], title), flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with rushpy.EmbeddedServer() as server:
        asyncio.run(run(server, args))


if __name__ == "__main__":
    main()
