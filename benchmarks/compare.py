"""rushpy side by side with its Python peers on W1, W2 and W3 (see docs/performance.md).

Run from the repository root::

    .venv/bin/python -m benchmarks.compare [--only W1,W2,W3] [--peers rushpy,huey,...] [--quick]

One embedded server for the whole run, one database per peer, flushed before
and after every run. Peers run interleaved (round-robin within each repetition)
so that drift of a shared machine hits all of them alike; every figure is the
median of the repetitions (3, or 1 with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import redis.asyncio

import rushpy
from benchmarks.peers import registry, workloads
from benchmarks.peers.base import Adapter

#: Workers for W1 and W2; W3 needs one per evaluation in flight.
N_WORKERS = 2
WORKLOADS = ("W1", "W2", "W3")
#: Bound on one run (start workers, workload, stop), in seconds.
RUN_TIMEOUT = 300.0


@dataclass
class Results:
    """Every repetition's figure, per (workload, peer); W2 keeps (p50, p99)."""

    runs: dict[tuple[str, str], list[tuple[float, ...]]] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)

    def median(self, workload: str, peer: str) -> tuple[float, ...] | None:
        values = self.runs.get((workload, peer))
        if not values:
            return None
        return tuple(statistics.median(column) for column in zip(*values, strict=True))


async def run_once(adapter: Adapter, url: str, workload: str, sizes: workloads.Sizes) -> tuple[float, ...]:
    """One run of ``workload`` by ``adapter`` on the database at ``url``, flushed before and after."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.flushdb()
        await adapter.setup(url)
        try:
            # A peer that hangs fails its run instead of the whole comparison.
            async with asyncio.timeout(RUN_TIMEOUT):
                return await _workload(adapter, workload, sizes)
        finally:
            await adapter.teardown()
    finally:
        await client.flushdb()
        await client.aclose()


async def _workload(adapter: Adapter, workload: str, sizes: workloads.Sizes) -> tuple[float, ...]:
    if workload == "W1":
        await adapter.start_workers(N_WORKERS)
        return (await workloads.w1(adapter, sizes.w1_tasks),)
    if workload == "W2":
        await adapter.start_workers(N_WORKERS)
        return await workloads.w2(adapter, sizes.w2_round_trips)
    await adapter.start_workers(workloads.W3_SLOTS)
    return (await workloads.w3(adapter, sizes.w3_evaluations),)


async def compare(
    url: str,
    peers: Sequence[str],
    only: Sequence[str] = WORKLOADS,
    *,
    sizes: workloads.Sizes | None = None,
    repeats: int = 3,
    on_run: Callable[[str, str, int, tuple[float, ...] | str], Awaitable[None] | None] | None = None,
) -> Results:
    """Run ``only`` for every peer, interleaved, ``repeats`` times; errors are recorded, not raised.

    Args:
        url: Server URL without a database (``redis://host:port``); peer ``i`` gets database ``i``.
        peers: Adapter names (see :data:`benchmarks.peers.registry.ADAPTERS`).
        only: Workloads to run.
        sizes: Workload sizes (default :class:`benchmarks.peers.workloads.Sizes`).
        repeats: Repetitions (the table shows medians).
        on_run: Called after every run with (workload, peer, repetition, figures or error text).
    """
    sizes = sizes or workloads.Sizes()
    results = Results()
    for workload in only:
        for rep in range(repeats):
            for db, peer in enumerate(peers):
                if (workload, peer) in results.errors:
                    continue
                outcome: tuple[float, ...] | str
                try:
                    outcome = await run_once(registry.create(peer), f"{url}/{db}", workload, sizes)
                    results.runs.setdefault((workload, peer), []).append(outcome)
                except Exception as exc:  # one broken peer must not end the comparison
                    outcome = f"{type(exc).__name__}: {exc}"
                    results.errors[(workload, peer)] = outcome
                if on_run is not None:
                    maybe = on_run(workload, peer, rep, outcome)
                    if maybe is not None:
                        await maybe
    return results


def rows(results: Results, peers: Sequence[str], only: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Table header and rows: one row per peer, each figure with its ratio against rushpy."""
    header = ["peer"]
    if "W1" in only:
        header += ["W1 tasks/s", "W1 x rushpy"]
    if "W2" in only:
        header += ["W2 p50 ms", "W2 p99 ms", "W2 p50 x rushpy"]
    if "W3" in only:
        header += ["W3 overhead %", "W3 x rushpy"]
    table = []
    for peer in peers:
        row = [peer]
        for workload in only:
            mine, base = results.median(workload, peer), results.median(workload, "rushpy")
            width = {"W1": 2, "W2": 3, "W3": 2}[workload]
            if mine is None:
                error = results.errors.get((workload, peer), "not run")
                row += [f"failed: {error[:40]}"] + [""] * (width - 1)
                continue
            ratio = f"{mine[0] / base[0]:.2f}" if base and base[0] else "-"
            if workload == "W1":
                row += [f"{mine[0]:,.0f}", ratio]
            elif workload == "W2":
                row += [f"{mine[0] * 1e3:.2f}", f"{mine[1] * 1e3:.2f}", ratio]
            else:
                row += [f"{mine[0]:.1f}", ratio]
        table.append(row)
    return header, table


async def server_version(url: str) -> str:
    """``redis_version`` (and ``valkey_version`` when there is one) of the server at ``url``."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '?')}"


def machine_info(version: str) -> str:
    """One line: date, CPU count, Python, server."""
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{today}; {os.cpu_count()} CPUs; Python {platform.python_version()} ({platform.machine()}); "
        f"{version} (embedded, loopback TCP)"
    )


def render(header: list[str], table: list[list[str]], title: str) -> str:
    """The table as text: rich when installed, else plain columns."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
        return "\n".join(lines)
    out = Table(title=title)
    for name in header:
        # The first column names the row (a peer, a shape, a figure); the others are numbers.
        out.add_column(name, justify="left" if name == header[0] else "right")
    for row in table:
        out.add_row(*row)
    console = Console(width=200, record=True)
    with console.capture() as capture:
        console.print(out)
    return capture.get()


def markdown(header: list[str], table: list[list[str]]) -> str:
    """The table in Markdown (for docs/performance.md)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. W1,W3")
    parser.add_argument("--peers", default=None, help="adapters (default: every installed one)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions (default 3, 1 with --quick)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args(argv)
    args.only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in args.only if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.peers is None:
        args.peers = [name for name in registry.ADAPTERS if registry.available(name)]
    else:
        args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
        missing = [p for p in args.peers if p not in registry.ADAPTERS]
        if missing:
            parser.error(f"unknown peer(s) {missing}; choose from {', '.join(registry.ADAPTERS)}")
        absent = [p for p in args.peers if not registry.available(p)]
        if absent:
            hints = sorted({registry.INSTALL_HINT.get(p, registry.DEFAULT_HINT) for p in absent})
            parser.error(f"peer(s) {absent} not installed; install them with: {' and '.join(hints)}")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    return args


async def main(argv: Sequence[str] | None = None) -> Results:
    args = parse_args(argv)
    sizes = workloads.QUICK if args.quick else workloads.Sizes()

    def progress(workload: str, peer: str, rep: int, outcome: tuple[float, ...] | str) -> None:
        print(f"  {workload} {peer} #{rep + 1}: {outcome}", flush=True)

    with rushpy.EmbeddedServer() as server:
        # redis://127.0.0.1:PORT/0 -> redis://127.0.0.1:PORT: compare() appends each peer's database.
        url = server.config.to_url(include_password=True).rsplit("/", 1)[0]
        info = machine_info(await server_version(url))
        print(info, flush=True)
        results = await compare(
            url, args.peers, args.only, sizes=sizes, repeats=args.repeats, on_run=progress
        )
    header, table = rows(results, args.peers, args.only)
    title = (
        f"W1 {sizes.w1_tasks} no-op tasks, W2 {sizes.w2_round_trips} round trips ({N_WORKERS} workers); "
        f"W3 {sizes.w3_evaluations} x 10 ms, 4 in flight (4 workers); medians of {args.repeats}"
    )
    print(render(header, table, title))
    print(info)
    if args.markdown:
        print(markdown(header, table))
    return results


if __name__ == "__main__":
    asyncio.run(main())
