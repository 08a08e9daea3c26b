"""Many rushpy workers as coroutines in one process (W4's 64-worker run).

Run by :mod:`benchmarks.scale`, one process per share of the workers::

    python -m benchmarks.many_workers URL NETWORK_ID N_WORKERS

Each process enters ``N_WORKERS`` :class:`rushpy.Worker` objects (each its own
registration and connection pool) and runs
:func:`rushpy.worker.runner.run_function` for each in one task group, with an
async no-op, until the controller terminates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import anyio

import rushpy
from benchmarks.funcs import async_noop
from rushpy.worker.runner import run_function


async def serve(url: str, network_id: str, n_workers: int) -> None:
    """Run ``n_workers`` workers of ``network_id`` until every one is terminated."""
    async with contextlib.AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(rushpy.Worker(network_id, config=url)) for _ in range(n_workers)
        ]
        async with anyio.create_task_group() as group:
            for worker in workers:
                group.start_soon(run_function, worker, async_noop)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], int(sys.argv[3])))
