"""rq: ``Queue.enqueue_many`` in one pipeline; ``rq worker`` processes (one fork per job, rq's default)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from redis import Redis
from rq import Queue, Worker

from benchmarks.peers.base import Adapter
from benchmarks.peers.tasks import evaluate

TIMEOUT = 120


class RqAdapter(Adapter):
    """rq's client is blocking: calls run in threads; results wait with ``latest_result(timeout)``."""

    name = "rq"

    def __init__(self) -> None:
        super().__init__()
        self._conn: Redis | None = None
        self._queue: Queue | None = None

    @property
    def queue(self) -> Queue:
        assert self._queue is not None, "call setup() first"
        return self._queue

    async def setup(self, server_url: str) -> None:
        await super().setup(server_url)
        self._conn = Redis.from_url(server_url)
        self._queue = Queue("bench", connection=self._conn)

    async def start_workers(self, n: int) -> None:
        rq = str(Path(sys.executable).with_name("rq"))
        for _ in range(n):
            self.spawn([rq, "worker", "--url", self.url, "--quiet", "bench"])
        deadline = time.monotonic() + TIMEOUT
        while Worker.count(connection=self._conn) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rq: {n} workers not registered after {TIMEOUT} s")
            await asyncio.sleep(0.05)

    def _wait(self, job_ids: Sequence[str]) -> list[int]:
        ys = []
        for job_id in job_ids:
            job = self.queue.fetch_job(job_id)
            assert job is not None, f"rq lost job {job_id}"
            result = job.latest_result(timeout=TIMEOUT)
            assert result is not None and result.return_value is not None, f"rq job {job_id}: no result"
            ys.append(int(result.return_value))
        return ys

    def _run_batch(self, xs: Sequence[int]) -> list[int]:
        jobs = self.queue.enqueue_many([Queue.prepare_data(evaluate, (x,)) for x in xs])
        return self._wait([job.id for job in jobs])

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        return await asyncio.to_thread(self._run_batch, xs)

    def _run_one(self, x: int, sleep: float) -> int:
        job = self.queue.enqueue(evaluate, x, sleep)
        return self._wait([job.id])[0]

    async def run_one(self, x: int, sleep: float) -> int:
        return await asyncio.to_thread(self._run_one, x, sleep)

    async def teardown(self) -> None:
        try:
            await super().teardown()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
