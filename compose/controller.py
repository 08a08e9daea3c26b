"""The compose controller example: waits for workers, pushes a grid of tasks, prints the best result.

It starts no workers: the ``worker`` service provides them (scale it with
``docker compose up --scale worker=N``). The server comes from
``$RUSHPY_REDIS_URL`` and ``$RUSHPY_REDIS_PASSWORD`` (never a flag).

Run: python compose/controller.py [--network demo] [--workers 2] [--tasks 100] [--timeout 600]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

import rushpy


async def run(options: argparse.Namespace) -> None:
    """Wait for the workers, push the grid, wait for every result and print a summary."""
    config = rushpy.RedisConfig.from_env()
    async with rushpy.Controller(options.network, config=config) as rush:
        workers = await rush.wait_for_workers(options.workers, timeout=options.timeout)
        print(f"{len(workers)} workers up", flush=True)
        side = max(2, int(options.tasks**0.5))
        grid = itertools.product(range(side), range(side))
        xss = [{"x1": -5 + 15 * i / (side - 1), "x2": 15 * j / (side - 1)} for i, j in grid]
        keys = await rush.push_tasks(xss[: options.tasks])
        results = await rush.wait_for_tasks(keys, timeout=options.timeout)
        by_worker = sorted({row["worker_id"] for row in results})
        best = min(results, key=lambda row: row["y"])
        print(f"{len(results)} tasks finished by {len(by_worker)} workers")
        print(f"best y = {best['y']:.6f} at x = ({best['x1']:.4f}, {best['x2']:.4f})")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="demo", help="network id (default demo)")
    parser.add_argument("--workers", type=int, default=2, help="workers to wait for (default 2)")
    parser.add_argument("--tasks", type=int, default=100, help="tasks to push (default 100)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait (default 600)")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
