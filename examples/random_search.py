"""Asynchronous decentralized random search on Branin: every worker samples, evaluates and records.

No controller-side loop: each of the local workers runs `search` (a worker
loop), which reads how many evaluations the network holds (everyone's
results, through the worker's cached reads), proposes a random point,
evaluates it and records the result, until the shared budget is spent.

Run: python examples/random_search.py [--workers 4] [--evals 200]
     (uses $RUSHPY_REDIS_URL when it is set, else starts an embedded server)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time

import rushpy

BOUNDS = {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}
"""The search space of Branin."""


def branin(x1: float, x2: float) -> float:
    """The Branin function (global minimum 0.397887 at three points)."""
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


async def search(worker: rushpy.Worker, n_evals: int, cost: float = 0.01) -> None:
    """The worker loop: sample, evaluate, record, until the network holds ``n_evals`` evaluations."""
    rng = random.Random()  # a search, not cryptography
    while not worker.terminated:
        # Finished and running tasks of every worker count against the budget.
        status = await worker.status()
        if status.n_finished_tasks + status.n_running_tasks >= n_evals:
            return
        xs = {name: rng.uniform(low, high) for name, (low, high) in BOUNDS.items()}
        [key] = await worker.push_running_tasks([xs])
        await asyncio.sleep(cost)  # stands in for an expensive evaluation
        await worker.finish_tasks([key], [{"y": branin(**xs)}])


async def run(config: rushpy.RedisConfig, network: str, n_workers: int, n_evals: int) -> rushpy.Table:
    async with rushpy.Controller(network, config=config) as rush:
        await rush.reset()
        started = time.perf_counter()
        await rush.start_local_workers(n_workers, worker_loop=search, n_evals=n_evals)
        # The workers stop by themselves once the budget is spent: wait for their processes.
        for local in rush.local_workers.values():
            await asyncio.to_thread(local.process.wait)
        elapsed = time.perf_counter() - started
        results = await rush.fetch_finished_tasks()
        print(f"{len(results)} evaluations by {n_workers} workers in {elapsed:.1f} s\n")
        best = rushpy.Table(sorted(results, key=lambda row: row["y"]))
        print("top 5:")
        print(best.format(max_rows=5, columns=["x1", "x2", "y", "worker_id"]))
        top = best[0]
        print(f"\nbest y = {top['y']:.6f} at x = ({top['x1']:.4f}, {top['x2']:.4f})")
        await rush.reset()
        return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="local workers (default 4)")
    parser.add_argument("--evals", type=int, default=200, help="evaluations in all (default 200)")
    parser.add_argument("--network", default="random-search", help="network id (default random-search)")
    options = parser.parse_args(argv)
    # Imported here, not at the top: worker processes import this file by path and
    # need only its functions.
    from _server import server_config  # noqa: PLC0415

    with server_config() as config:
        asyncio.run(run(config, options.network, options.workers, options.evals))


if __name__ == "__main__":
    main()
