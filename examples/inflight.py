"""A controller-driven HPO loop that keeps N evaluations in flight, with an objective that sometimes raises.

The controller pushes N random configurations, then waits for results as a
stream: `fetch_new_tasks(timeout=..., states=("finished", "failed"))` returns
every task once, when it finished or failed for good (its row has `state`,
and `condition` for a failure). For each one it pushes a new configuration,
so N evaluations stay in flight until the budget is spent. A failed
evaluation is counted and replaced like a finished one: the loop never
waits for a result that will not come.

Run: python examples/inflight.py [--workers 4] [--in-flight 8] [--evals 100] [--failure-rate 0.2]
     (uses $RUSHPY_REDIS_URL when it is set, else starts an embedded server)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from typing import Any

import rushpy
from rushpy.progress import TaskProgress, progress_enabled

BOUNDS = {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}
"""The search space of Branin."""


async def objective(x1: float, x2: float, failure_rate: float = 0.2) -> dict[str, float]:
    """Branin with a random delay, raising for a share ``failure_rate`` of the calls (runs on the workers)."""
    await asyncio.sleep(random.uniform(0.005, 0.03))  # evaluations take different times
    if random.random() < failure_rate:
        raise RuntimeError(f"simulated failure at x1={x1:.3f}, x2={x2:.3f}")
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return {"y": a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s}


def sample(rng: random.Random, failure_rate: float) -> dict[str, Any]:
    """A random configuration of the search space."""
    return {**{k: rng.uniform(lo, hi) for k, (lo, hi) in BOUNDS.items()}, "failure_rate": failure_rate}


async def run(config: rushpy.RedisConfig, options: argparse.Namespace) -> dict[str, Any]:
    n_workers, in_flight, n_evals = options.workers, options.in_flight, options.evals
    failure_rate = options.failure_rate
    rng = random.Random()
    async with rushpy.Controller(options.network, config=config) as rush:
        await rush.reset()
        await rush.start_local_workers(n_workers, fun=objective)
        started = time.perf_counter()
        pushed = min(in_flight, n_evals)
        await rush.push_tasks([sample(rng, failure_rate) for _ in range(pushed)])
        finished: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        most_in_flight = 0
        # A bar with counts per state on a terminal (needs rich); quiet when piped.
        bar = TaskProgress("evaluations", total=n_evals) if progress_enabled(None) else None
        while len(finished) + len(failed) < n_evals:
            # Every task comes back exactly once, finished or failed for good.
            new = await rush.fetch_new_tasks(timeout=30, states=("finished", "failed"))
            if not len(new):
                raise RuntimeError("no result within 30 s: are the workers running?")
            for row in new:
                (finished if row["state"] == "finished" else failed).append(row)
            refill = min(len(new), n_evals - pushed)
            if refill:
                await rush.push_tasks([sample(rng, failure_rate) for _ in range(refill)])
                pushed += refill
            most_in_flight = max(most_in_flight, pushed - len(finished) - len(failed))
            if bar is not None:
                status = await rush.status()
                bar.update(
                    finished=len(finished),
                    failed=len(failed),
                    running=status.n_running_tasks,
                    queued=status.n_queued_tasks,
                )
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - started
        print(
            f"{n_evals} evaluations ({len(finished)} finished, {len(failed)} failed) in {elapsed:.1f} s, "
            f"at most {most_in_flight} in flight\n"
        )
        best = rushpy.Table(sorted(finished, key=lambda row: row["y"]))
        print("top 5:")
        print(best.format(max_rows=5, columns=["x1", "x2", "y", "worker_id"]))
        if failed:
            print(f"\na failure: {failed[0]['condition']['type']}: {failed[0]['condition']['message']}")
        top = best[0]
        print(f"best y = {top['y']:.6f} at x = ({top['x1']:.4f}, {top['x2']:.4f})")
        await rush.reset()
        return {"finished": len(finished), "failed": len(failed), "best": top["y"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="local workers (default 4)")
    parser.add_argument("--in-flight", type=int, default=8, help="evaluations kept in flight (default 8)")
    parser.add_argument("--evals", type=int, default=100, help="evaluations in all (default 100)")
    parser.add_argument("--failure-rate", type=float, default=0.2, help="share that raises (default 0.2)")
    parser.add_argument("--network", default="inflight", help="network id (default inflight)")
    options = parser.parse_args(argv)
    # Imported here, not at the top: worker processes import this file by path and
    # need only its functions.
    from _server import server_config  # noqa: PLC0415

    with server_config() as config:
        asyncio.run(run(config, options))


if __name__ == "__main__":
    main()
