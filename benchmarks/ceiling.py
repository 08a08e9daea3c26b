"""The ceiling: what the server itself sustains for rushpy's command mix, with no worker logic.

Run from the repository root::

    .venv/bin/python -m benchmarks.ceiling [--quick] [--tasks N] [--lanes K] [--batch B]

``K`` lanes, each a registered :class:`rushpy.Worker` with its own connection,
drive rushpy's own Lua scripts through its store (the same wrappers the worker
uses, pipelined in chunks): the lanes create N queued tasks in batches of B,
then each lane pops B keys, claims them and completes them, until the queue is
empty. Printed: tasks/s end to end, the server's CPU seconds for the run (INFO
cpu) and the tasks one server CPU-second carries (the true ceiling when the
driver, not the server, is the bottleneck), the top commands by server time
(INFO commandstats), rushpy's W1 measured in the same sitting as a fraction of
the ceiling, and ``redis-benchmark`` LPUSH/RPOP figures when the binary exists.
Every task's result is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

import rushpy
from benchmarks.compare import machine_info, render, run_once, server_version
from benchmarks.peers import workloads
from benchmarks.peers.rushpy_peer import RushpyAdapter
from rushpy.models import PoppedTask
from rushpy.store import Store


class CeilingCheckError(AssertionError):
    """The ceiling run lost or corrupted tasks."""


@dataclass(frozen=True)
class Sizes:
    """Tasks, lanes (connections), tasks per script call, W1 tasks, redis-benchmark requests."""

    tasks: int = 100_000
    lanes: int = 4
    batch: int = 500
    w1_tasks: int = 20_000
    bench_requests: int = 200_000


QUICK = Sizes(tasks=2_000, lanes=2, batch=100, w1_tasks=200, bench_requests=2_000)


@dataclass
class Figures:
    """The ceiling run's figures."""

    tasks: int
    create_s: float
    process_s: float
    server_cpu_s: float
    commands: list[tuple[str, int, float]] = field(default_factory=list)  # name, calls, usec

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / (self.create_s + self.process_s)

    @property
    def tasks_per_server_cpu_s(self) -> float:
        return self.tasks / self.server_cpu_s if self.server_cpu_s > 0 else float("inf")


def store_of(worker: rushpy.Worker) -> Store:
    """The worker's store: the benchmark drives the scripts below the worker logic on purpose."""
    store: Store = worker._store
    return store


async def _server_cpu(client: redis.asyncio.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _commandstats(client: redis.asyncio.Redis) -> list[tuple[str, int, float]]:
    stats = await client.info("commandstats")
    out = [(name.removeprefix("cmdstat_"), int(v["calls"]), float(v["usec"])) for name, v in stats.items()]
    return sorted(out, key=lambda row: -row[2])


async def _lane(store: Store, worker_id: str, batch: int) -> int:
    """Pop, claim and complete batches until the queue is empty; returns the tasks completed."""
    done = 0
    while keys := await store.tasks.pop_keys(worker_id, batch):
        claimed = await store.tasks.claim(worker_id, keys)
        tasks = [t for t in claimed if isinstance(t, PoppedTask)]
        if len(tasks) != len(keys):
            raise CeilingCheckError(f"{worker_id}: claimed {len(tasks)} usable tasks of {len(keys)} popped")
        items = [(t.key, t.attempt, {"ys": {"y": t.xs["x"]}}) for t in tasks]
        flags = await store.tasks.complete(worker_id, "finished", items)
        if flags.count(1) != len(keys):
            raise CeilingCheckError(f"{worker_id}: completed {flags.count(1)} of {len(keys)} popped tasks")
        done += len(keys)
    return done


async def ceiling(config: rushpy.RedisConfig, sizes: Sizes) -> Figures:
    """Run the ceiling once on a network of its own; check every result; return the figures."""
    network_id = f"ceiling-{uuid.uuid4().hex[:8]}"
    client = redis.asyncio.Redis.from_url(config.to_url(include_password=True))
    try:
        async with contextlib.AsyncExitStack() as stack:
            rush = await stack.enter_async_context(rushpy.Controller(network_id, config=config))
            stack.push_async_callback(rush.reset)
            workers = [
                await stack.enter_async_context(rushpy.Worker(network_id, config=config))
                for _ in range(sizes.lanes)
            ]
            stores = [store_of(w) for w in workers]
            await client.config_resetstat()
            cpu0 = await _server_cpu(client)
            started = time.perf_counter()
            step = sizes.batch
            batches = [range(i, min(sizes.tasks, i + step)) for i in range(0, sizes.tasks, step)]

            async def create(lane: int) -> None:
                for xs in batches[lane :: sizes.lanes]:
                    await stores[lane].tasks.create_tasks("queued", [{"xs": {"x": x}} for x in xs])

            await asyncio.gather(*(create(i) for i in range(sizes.lanes)))
            created = time.perf_counter()
            done = await asyncio.gather(
                *(_lane(s, w.worker_id, sizes.batch) for s, w in zip(stores, workers, strict=True))
            )
            finished = time.perf_counter()
            cpu = await _server_cpu(client) - cpu0
            commands = await _commandstats(client)
            if sum(done) != sizes.tasks:
                raise CeilingCheckError(f"lanes completed {sum(done)} tasks, expected {sizes.tasks}")
            table = await rush.fetch_finished_tasks()
            if sorted((row["x"], row["y"]) for row in table) != [(x, x) for x in range(sizes.tasks)]:
                raise CeilingCheckError(f"finished tasks do not hold y = x for x = 0 .. {sizes.tasks - 1}")
    finally:
        await client.aclose()
    return Figures(sizes.tasks, created - started, finished - created, cpu, commands)


def redis_benchmark(config: rushpy.RedisConfig, requests: int) -> dict[str, float] | None:
    """LPUSH and RPOP requests/s from ``redis-benchmark`` (50 clients; plain and 16-deep pipelines)."""
    binary = shutil.which("redis-benchmark") or shutil.which("valkey-benchmark")
    if binary is None:
        return None
    url = urllib.parse.urlsplit(config.to_url(include_password=True))
    argv = [binary, "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379), "-n", str(requests), "-q"]
    if url.password:
        argv += ["-a", urllib.parse.unquote(url.password), "--no-auth-warning"]
    out: dict[str, float] = {}
    for depth in (1, 16):
        command = [*argv, "-t", "lpush,rpop", "-P", str(depth)]
        text = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
        # Lines look like "LPUSH: 123456.79 requests per second, p50=0.2 msec"; progress lines end in \r.
        # A run shorter than redis-benchmark's clock resolution reports "inf" (use more requests).
        for command, rate in re.findall(r"(LPUSH|RPOP): ([\d.]+|inf) requests per second", text):
            out[f"{command} -P {depth}"] = float(rate)
    return out


def table(
    figures: Figures, w1: float | None, bench: dict[str, float] | None
) -> tuple[list[str], list[list[str]]]:
    rows = [
        ["ceiling: create + pop/claim/complete, tasks/s", f"{figures.tasks_per_s:,.0f}"],
        ["  create phase, tasks/s", f"{figures.tasks / figures.create_s:,.0f}"],
        ["  pop/claim/complete phase, tasks/s", f"{figures.tasks / figures.process_s:,.0f}"],
        ["server CPU seconds for the run", f"{figures.server_cpu_s:.2f}"],
        ["tasks per server CPU-second", f"{figures.tasks_per_server_cpu_s:,.0f}"],
    ]
    for name, calls, usec in figures.commands[:6]:
        rows.append([f"  {name}: {calls:,} calls", f"{usec / figures.tasks:.2f} µs/task"])
    if w1 is not None:
        rows.append(["rushpy W1 (2 workers), tasks/s", f"{w1:,.0f}"])
        rows.append(["  W1 / ceiling tasks/s", f"{w1 / figures.tasks_per_s:.2f}"])
        rows.append(["  W1 / tasks per server CPU-second", f"{w1 / figures.tasks_per_server_cpu_s:.2f}"])
    for name, rate in (bench or {}).items():
        rows.append([f"redis-benchmark {name} (50 clients), requests/s", f"{rate:,.0f}"])
    return ["figure", "value"], rows


async def run(server: rushpy.EmbeddedServer, sizes: Sizes) -> tuple[Figures, float, dict[str, float] | None]:
    """Ceiling, then W1 and redis-benchmark in the same sitting; prints the table."""
    base = server.config.to_url(include_password=True).rsplit("/", 1)[0]
    print(machine_info(await server_version(base)), flush=True)
    figures = await ceiling(server.config, sizes)
    w1_sizes = workloads.Sizes(w1_tasks=sizes.w1_tasks)
    (w1,) = await run_once(RushpyAdapter(), f"{base}/1", "W1", w1_sizes)
    bench = await asyncio.to_thread(redis_benchmark, server.config, sizes.bench_requests)
    title = (
        f"Ceiling: {sizes.tasks:,} tasks, {sizes.lanes} lanes, batches of {sizes.batch}; "
        f"W1 {sizes.w1_tasks:,} tasks"
    )
    print(render(*table(figures, w1, bench), title), flush=True)
    return figures, w1, bench


def parse_args(argv: Sequence[str] | None = None) -> Sizes:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--tasks", type=int, help="tasks of the ceiling run")
    parser.add_argument("--lanes", type=int, help="connections (registered workers) driving the scripts")
    parser.add_argument("--batch", type=int, help="tasks per create/pop/claim/complete call")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    names = ("tasks", "lanes", "batch")
    chosen: dict[str, Any] = {k: v for k in names if (v := getattr(args, k)) is not None}
    for name, value in chosen.items():
        if value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    return Sizes(**{**sizes.__dict__, **chosen})


def main(argv: Sequence[str] | None = None) -> None:
    sizes = parse_args(argv)
    with rushpy.EmbeddedServer() as server:
        asyncio.run(run(server, sizes))


if __name__ == "__main__":
    main()
