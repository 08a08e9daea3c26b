"""saq: one ``python -m saq`` worker process per worker, each running one job at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import ModuleType

from benchmarks.peers.base import Adapter, load_app, python_argv

TIMEOUT = 120.0
#: saq's sweeper aborts a job caught between dequeue and "active" (a race at worker
#: start-up and every 60 s); with retries left it re-queues the job instead, as a
#: user wanting every result would configure it.
RETRIES = 3
#: Longest wait on one pub/sub subscription before the job is read again.
RACE_SLICE = 0.05
#: ``Queue.map`` polls job states (default every 0.5 s); a short poll keeps W1 about the framework.
POLL = 0.002


class SaqAdapter(Adapter):
    """saq is async-native: ``Queue.map`` for a batch, ``enqueue`` + ``Job.refresh`` (pub/sub) for one."""

    name = "saq"
    requires = ("saq",)

    def __init__(self) -> None:
        super().__init__()
        self.app: ModuleType | None = None

    async def setup(self, server_url: str) -> None:
        await super().setup(server_url)
        self.app = load_app("benchmarks.peers.saq_app", server_url)
        await self.app.queue.connect()

    async def start_workers(self, n: int) -> None:
        for _ in range(n):
            self.spawn(python_argv("-m", "saq", "benchmarks.peers.saq_app.settings", "--quiet"))
        await self.wait_ready(n)

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        assert self.app is not None
        # saq's job timeout defaults to 10 s: a long batch on a slow machine must not time out.
        ys = await self.app.queue.map(
            "evaluate", [{"x": x} for x in xs], timeout=TIMEOUT, poll_interval=POLL, retries=RETRIES
        )
        return [int(y) for y in ys]

    async def run_one(self, x: int, sleep: float) -> int:
        assert self.app is not None
        job = await self.app.queue.enqueue("evaluate", x=x, sleep=sleep, timeout=TIMEOUT, retries=RETRIES)
        assert job is not None, "saq refused the job (duplicate key)"
        # Event-driven: refresh(until_complete) listens on the job's pub/sub channel. A
        # completion published between its read of the job and its subscription is
        # missed (it then waits for its whole timeout), so wait in short slices that
        # each re-read the job first.
        async with asyncio.timeout(TIMEOUT):
            while True:
                with contextlib.suppress(TimeoutError):
                    await job.refresh(until_complete=RACE_SLICE)
                if job.completed:
                    break
        return int(job.result)

    async def teardown(self) -> None:
        try:
            await super().teardown()
        finally:
            if self.app is not None:
                await self.app.queue.disconnect()
                self.app = None
