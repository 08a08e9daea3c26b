"""rushpy benchmarks W1-W3 (see docs/performance.md).

Run from the repository root:  .venv/bin/python -m benchmarks.bench [--only W1,W2,W3]

- W1 throughput: 20,000 no-op tasks pushed at once, 2 local workers, from the
  first push to the last result fetched by the controller.
- W2 latency: 500 sequential single tasks, push to result seen by the
  controller; p50 and p99.
- W3 cache: time of fetch_new_tasks() returning 1 new result when 1,000 /
  10,000 / 100,000 results are already cached.

Every run starts its own embedded server (or uses $RUSHPY_REDIS_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import statistics
import time
import uuid

import rushpy
from benchmarks.funcs import async_noop, noop
from rushpy.config import configured_url


async def w1(config: rushpy.RedisConfig, n_tasks: int, fun: object) -> float:
    async with rushpy.Controller(f"bench-w1-{uuid.uuid4().hex[:8]}", config=config) as rush:
        await rush.start_local_workers(2, fun=fun)  # type: ignore[arg-type]
        await rush.wait_for_workers(2, timeout=60)
        xss = [{"x": i} for i in range(n_tasks)]
        started = time.perf_counter()
        await rush.push_tasks(xss)
        seen = 0
        while seen < n_tasks:
            seen += len(await rush.fetch_new_tasks(timeout=30))
        elapsed = time.perf_counter() - started
        status = await rush.status()
        assert status.n_finished_tasks == n_tasks, status
        await rush.reset()
    return n_tasks / elapsed


async def w2(config: rushpy.RedisConfig, n_tasks: int) -> list[float]:
    async with rushpy.Controller(f"bench-w2-{uuid.uuid4().hex[:8]}", config=config) as rush:
        await rush.start_local_workers(2, fun=noop)
        await rush.wait_for_workers(2, timeout=60)
        latencies = []
        for i in range(n_tasks + 20):
            started = time.perf_counter()
            await rush.push_tasks([{"x": i}])
            got = 0
            while not got:
                got = len(await rush.fetch_new_tasks(timeout=10))
            if i >= 20:  # the first tasks warm connections and caches
                latencies.append(time.perf_counter() - started)
        await rush.reset()
    return latencies


async def w3(config: rushpy.RedisConfig, cached: int, repeats: int = 200) -> list[float]:
    async with rushpy.Controller(f"bench-w3-{uuid.uuid4().hex[:8]}", config=config) as rush:
        for start in range(0, cached, 10_000):
            n = min(10_000, cached - start)
            await rush.push_finished_tasks([{"x": i} for i in range(n)], [{"y": i} for i in range(n)])
        assert len(await rush.fetch_new_tasks()) == cached
        times = []
        for i in range(repeats):
            await rush.push_finished_tasks([{"x": i}], [{"y": i}])
            started = time.perf_counter()
            new = await rush.fetch_new_tasks()
            times.append(time.perf_counter() - started)
            assert len(new) == 1
        await rush.reset()
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(config: rushpy.RedisConfig, only: set[str]) -> None:
    print(f"rushpy {rushpy.__version__}, Python {platform.python_version()}, {platform.machine()}")
    if "W1" in only:
        for label, fun in (("sync no-op", noop), ("async no-op", async_noop)):
            rates = [await w1(config, 20_000, fun) for _ in range(3)]
            print(
                f"W1 throughput ({label}): median {statistics.median(rates):,.0f} tasks/s "
                f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})"
            )
    if "W2" in only:
        lat = await w2(config, 500)
        print(
            f"W2 latency: p50 {pct(lat, 0.5) * 1e3:.3f} ms, p99 {pct(lat, 0.99) * 1e3:.3f} ms, "
            f"mean {statistics.mean(lat) * 1e3:.3f} ms"
        )
    if "W3" in only:
        for cached in (1_000, 10_000, 100_000):
            t = await w3(config, cached)
            print(
                f"W3 fetch_new_tasks with {cached:>7,} cached: median {statistics.median(t) * 1e3:.3f} ms, "
                f"p99 {pct(t, 0.99) * 1e3:.3f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="W1,W2,W3", help="comma-separated subset of W1,W2,W3")
    options = parser.parse_args()
    only = {w.strip().upper() for w in options.only.split(",")}
    url = configured_url()
    with contextlib.ExitStack() as stack:
        if url:
            config = rushpy.RedisConfig.from_url(url)
        else:
            config = stack.enter_context(rushpy.EmbeddedServer()).config
        asyncio.run(run(config, only))


if __name__ == "__main__":
    main()
