"""Asynchronous decentralized Bayesian optimisation (in the style of rush's ADBO) on Branin.

Every local worker runs `adbo` (a worker loop). It draws its own exploration
weight lambda once (exponential, so some workers explore and others exploit),
then repeats: read all results so far (everyone's, through the worker's
cached reads), fit a Gaussian process on them (on log y), propose the random
candidate with the lowest lower confidence bound mu - lambda * sigma,
evaluate it and record the result. The first few points of each worker are random. No worker waits for
another: that is what keeps utilisation high with many workers.

Needs the examples extra: pip install 'rushpy[examples]' (numpy, scikit-learn).

Run: python examples/adbo.py [--workers 4] [--evals 60]
     (uses $RUSHPY_REDIS_URL when it is set, else starts an embedded server)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import warnings
from typing import Any

import anyio.to_thread
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern

import rushpy

LOW = np.array([-5.0, 0.0])
HIGH = np.array([10.0, 15.0])
"""The search space of Branin (x1, x2)."""


def branin(x1: float, x2: float) -> float:
    """The Branin function (global minimum 0.397887 at three points)."""
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def propose(
    x: np.ndarray, y: np.ndarray, lam: float, rng: np.random.Generator, n_candidates: int
) -> np.ndarray:
    """The candidate with the lowest lower confidence bound of a GP fitted on ``(x, y)``."""
    kernel = ConstantKernel(1.0) * Matern(length_scale=[3.0, 3.0], nu=2.5)
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, alpha=1e-6, random_state=0)
    with warnings.catch_warnings():  # a few points rarely pin down the length scales
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Branin's values span orders of magnitude (all > 0): log(y) is far easier to model.
        gp.fit((x - LOW) / (HIGH - LOW), np.log(y))
    candidates = rng.uniform(LOW, HIGH, size=(n_candidates, 2))
    mu, sigma = gp.predict((candidates - LOW) / (HIGH - LOW), return_std=True)
    return candidates[int(np.argmin(mu - lam * sigma))]  # type: ignore[no-any-return]


async def adbo(
    worker: rushpy.Worker, n_evals: int, n_init: int = 3, lambda_mean: float = 1.0, n_candidates: int = 1000
) -> None:
    """The worker loop: propose by lower confidence bound until the network holds ``n_evals`` evaluations."""
    rng = np.random.default_rng()
    lam = float(rng.exponential(lambda_mean))  # this worker's exploration weight
    own = 0
    while not worker.terminated:
        status = await worker.status()
        if status.n_finished_tasks + status.n_running_tasks >= n_evals:
            return
        finished = await worker.fetch_finished_tasks()
        if own < n_init or len(finished) < 2:
            point = rng.uniform(LOW, HIGH)
        else:
            x = np.array([[row["x1"], row["x2"]] for row in finished])
            y = np.array([row["y"] for row in finished])
            # Fitting is CPU work: off the event loop, so the worker stays responsive.
            point = await anyio.to_thread.run_sync(propose, x, y, lam, rng, n_candidates)
        xs: dict[str, Any] = {"x1": float(point[0]), "x2": float(point[1])}
        [key] = await worker.push_running_tasks([xs], [{"lambda": lam}])
        await worker.finish_tasks([key], [{"y": branin(**xs)}])
        own += 1


async def run(config: rushpy.RedisConfig, network: str, n_workers: int, n_evals: int) -> rushpy.Table:
    async with rushpy.Controller(network, config=config) as rush:
        await rush.reset()
        started = time.perf_counter()
        await rush.start_local_workers(n_workers, worker_loop=adbo, n_evals=n_evals)
        for local in rush.local_workers.values():
            await asyncio.to_thread(local.process.wait)
        elapsed = time.perf_counter() - started
        results = await rush.fetch_finished_tasks()
        print(f"{len(results)} evaluations by {n_workers} workers in {elapsed:.1f} s\n")
        best = rushpy.Table(sorted(results, key=lambda row: row["y"]))
        print("top 5:")
        print(best.format(max_rows=5, columns=["x1", "x2", "y", "lambda", "worker_id"]))
        weights = {row["worker_id"]: row["lambda"] for row in results}
        print("\nexploration weight per worker:", {w: round(v, 3) for w, v in sorted(weights.items())})
        top = best[0]
        print(f"best y = {top['y']:.6f} at x = ({top['x1']:.4f}, {top['x2']:.4f}) (optimum 0.397887)")
        await rush.reset()
        return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="local workers (default 4)")
    parser.add_argument("--evals", type=int, default=60, help="evaluations in all (default 60)")
    parser.add_argument("--network", default="adbo", help="network id (default adbo)")
    options = parser.parse_args(argv)
    # Imported here, not at the top: worker processes import this file by path and
    # need only its functions.
    from _server import server_config  # noqa: PLC0415

    with server_config() as config:
        asyncio.run(run(config, options.network, options.workers, options.evals))


if __name__ == "__main__":
    main()
