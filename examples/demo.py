"""rushpy demo: an embedded server, 2 local workers, 100 tasks, a table of results.

Run: python examples/demo.py   (uses $RUSHPY_REDIS_URL instead when it is set)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import rushpy
from rushpy.config import configured_url


def branin(x1: float, x2: float) -> dict[str, float]:
    """The Branin function, a classic optimisation benchmark (runs on the workers)."""
    time.sleep(0.01)  # stands in for an expensive evaluation, e.g. training a model
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    y = a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s
    return {"y": y}


async def run(config: rushpy.RedisConfig) -> None:
    async with rushpy.Controller("demo", config=config) as rush:
        await rush.reset()
        worker_ids = await rush.start_local_workers(2, fun=branin)
        await rush.wait_for_workers(2, timeout=60)
        print(f"workers up: {', '.join(worker_ids)}")

        grid = [(-5 + 15 * i / 9, 15 * j / 9) for i in range(10) for j in range(10)]
        started = time.perf_counter()
        keys = await rush.push_tasks([{"x1": x1, "x2": x2} for x1, x2 in grid])
        results = await rush.wait_for_tasks(keys, timeout=60)
        elapsed = time.perf_counter() - started
        print(f"{len(results)} tasks finished in {elapsed * 1000:.1f} ms\n")

        best = sorted(results, key=lambda row: row["y"])
        print(rushpy.Table(best).format(max_rows=10, columns=["x1", "x2", "y", "worker_id"]))
        per_worker = {w: results["worker_id"].count(w) for w in worker_ids}
        print(f"\ntasks per worker: {per_worker}")
        print(f"status: {await rush.status()}")
        await rush.stop_workers("terminate")


def main() -> None:
    url = configured_url()
    with contextlib.ExitStack() as stack:
        if url:
            config = rushpy.RedisConfig.from_url(url)
            print(f"using the server at {config}")
        else:
            server = stack.enter_context(rushpy.EmbeddedServer())
            config = server.config
            print(f"started an embedded server at {server.url}")
        asyncio.run(run(config))


if __name__ == "__main__":
    main()
