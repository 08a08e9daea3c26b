"""What persistence costs: W1 throughput and append-only-file bytes per task, AOF off and on.

Run from the repository root::

    .venv/bin/python -m benchmarks.persistence [--tasks 20000] [--repeats 3]

For each setting (no AOF; ``appendonly yes`` with ``appendfsync everysec``, the
setting docs/deployment.md recommends; ``appendfsync always``) it starts a
private embedded server, runs W1 (``--tasks`` no-op tasks pushed at once, two
local workers, until the controller has every result) ``--repeats`` times,
interleaved with the other settings, and prints the median tasks/s and the
append-only file's growth per task (before any rewrite).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from pathlib import Path

import rushpy
from benchmarks.funcs import async_noop

__all__ = ["SETTINGS", "main", "run_once"]

SETTINGS = {"off": None, "everysec": "everysec", "always": "always"}
"""Setting name -> ``appendfsync`` (``None``: no append-only file)."""


def _aof_bytes(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in data_dir.rglob("*.aof") if f.is_file())


async def run_once(fsync: str | None, n_tasks: int) -> tuple[float, float]:
    """(tasks/s, AOF bytes per task) of one W1 run on a fresh server with this ``appendfsync``."""
    extra = ["--appendfsync", fsync, "--auto-aof-rewrite-percentage", "0"] if fsync else []
    with rushpy.EmbeddedServer(appendonly=fsync is not None, extra_args=extra) as server:
        async with rushpy.Controller(f"aof-{uuid.uuid4().hex[:8]}", config=server.config) as rush:
            await rush.start_local_workers(2, fun=async_noop)
            await rush.wait_for_workers(2, timeout=60)
            before = _aof_bytes(server.data_dir)
            started = time.perf_counter()
            await rush.push_tasks([{"x": i} for i in range(n_tasks)])
            seen = 0
            while seen < n_tasks:
                seen += len(await rush.fetch_new_tasks(timeout=60))
            elapsed = time.perf_counter() - started
            await asyncio.sleep(1.2)  # everysec: the last second reaches the file
            grown = _aof_bytes(server.data_dir) - before
            await rush.stop_workers()
            await rush.reset(workers=True)
    return n_tasks / elapsed, grown / n_tasks


def main(argv: list[str] | None = None) -> None:
    """Print one line per setting: median tasks/s, ratio to no AOF, AOF bytes per task."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.persistence", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    sizes: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name, fsync in SETTINGS.items():
            rate, size = asyncio.run(run_once(fsync, args.tasks))
            rates[name].append(rate)
            sizes[name].append(size)
    base = statistics.median(rates["off"])
    for name in SETTINGS:
        rate = statistics.median(rates[name])
        print(
            f"{name:>9}: W1 {rate:>8,.0f} tasks/s ({rate / base:.2f} x no AOF), "
            f"AOF {statistics.median(sizes[name]):,.0f} bytes per task"
        )


if __name__ == "__main__":
    main()
