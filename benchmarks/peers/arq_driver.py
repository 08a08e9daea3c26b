"""arq's producer and workers, run inside ``benchmarks/.venv-arq`` and driven over a pipe.

arq pins ``redis<6``, which rushpy's environment cannot hold, so the arq
adapter (:mod:`benchmarks.peers.arq_peer`) starts this module with the arq
environment's interpreter::

    BENCH_URL=URL benchmarks/.venv-arq/bin/python -m benchmarks.peers.arq_driver

Protocol: one JSON object per line each way. Requests carry an ``id`` and an
``op``: ``{"op": "start", "n": 2}`` starts ``n`` arq worker processes,
``{"op": "batch", "xs": [...]}`` enqueues one job per ``x`` and answers with
every result, ``{"op": "one", "x": 1, "sleep": 0.01}`` enqueues one job and
answers with its result. Answers are ``{"id": ..., "ok": value}`` or
``{"id": ..., "error": "text"}``, in completion order (requests run
concurrently, as W3 needs). End of input stops the workers and exits.

This module imports nothing from rushpy: it runs where rushpy's redis-py is absent.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from benchmarks.peers.arq_app import POLL

TIMEOUT = 120.0
#: Poll of a whole batch's results: thousands of jobs each polling every 2 ms would
#: flood the server and measure the flood; 10 ms adds at most 10 ms to a batch.
BATCH_POLL = 0.01


class Driver:
    """Holds the arq pool and the worker processes of one run."""

    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int) -> None:
        cli = str(Path(sys.executable).with_name("arq"))
        quiet = os.environ.get("BENCH_VERBOSE") is None
        out = subprocess.DEVNULL if quiet else None
        for _ in range(n):
            argv = [cli, "benchmarks.peers.arq_app.WorkerSettings"]
            self.procs.append(subprocess.Popen(argv, stdout=out, stderr=out))

    async def one(self, x: int, sleep: float) -> int:
        job = await self.pool.enqueue_job("evaluate", x, sleep)
        assert job is not None, "arq refused the job (duplicate id)"
        return int(await job.result(timeout=TIMEOUT, poll_delay=POLL))

    async def batch(self, xs: list[int]) -> list[int]:
        # arq has no batch enqueue: one enqueue_job (a WATCH/MULTI transaction) per job is its API.
        jobs = [await self.pool.enqueue_job("evaluate", x) for x in xs]
        results = await asyncio.gather(*(j.result(timeout=TIMEOUT, poll_delay=BATCH_POLL) for j in jobs if j))
        return [int(y) for y in results]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def handle(driver: Driver, request: dict[str, Any], write: Any) -> None:
    """Run one request and write its answer line."""
    try:
        op = request["op"]
        value: Any
        if op == "start":
            driver.start(int(request["n"]))
            value = None
        elif op == "batch":
            value = await driver.batch([int(x) for x in request["xs"]])
        elif op == "one":
            value = await driver.one(int(request["x"]), float(request["sleep"]))
        else:
            raise ValueError(f"unknown op {op!r}; use start, batch or one")
        answer = {"id": request["id"], "ok": value}
    except Exception as exc:  # the adapter re-raises it on its side
        answer = {"id": request.get("id"), "error": f"{type(exc).__name__}: {exc}"}
    write(answer)


async def serve(url: str) -> None:
    """Answer requests from stdin until it closes."""
    pool = await create_pool(RedisSettings.from_dsn(url))
    driver = Driver(pool)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def write(answer: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    pending: set[asyncio.Task[None]] = set()
    try:
        while line := await reader.readline():
            task = asyncio.create_task(handle(driver, json.loads(line), write))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        for task in pending:
            task.cancel()
        driver.stop()
        await pool.aclose()


if __name__ == "__main__":
    # The URL travels in BENCH_URL (arq_app reads it at import; the workers inherit it).
    asyncio.run(serve(os.environ["BENCH_URL"]))
