"""The floor: a hand-written LPUSH/BRPOP loop in redis-py asyncio, replies on per-task lists.

Run as a worker: ``python -m benchmarks.peers.handwritten URL``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Sequence

import redis.asyncio

from benchmarks.peers.base import Adapter, python_argv
from benchmarks.peers.tasks import aevaluate

QUEUE = "hw:queue"
READY = "hw:ready"
TIMEOUT = 120


class HandwrittenAdapter(Adapter):
    """LPUSH a JSON task to one list, workers BRPOP it and LPUSH the result to the task's reply list."""

    name = "handwritten"
    requires = ("redis",)

    def __init__(self) -> None:
        super().__init__()
        self._client: redis.asyncio.Redis | None = None

    @property
    def client(self) -> redis.asyncio.Redis:
        assert self._client is not None, "call setup() first"
        return self._client

    async def setup(self, server_url: str) -> None:
        await super().setup(server_url)
        self._client = redis.asyncio.Redis.from_url(server_url)

    async def start_workers(self, n: int) -> None:
        for _ in range(n):
            self.spawn(python_argv("-m", "benchmarks.peers.handwritten", self.url))
        # Each worker pushes a token once it is connected and about to BRPOP.
        for _ in range(n):
            if await self.client.brpop([READY], timeout=TIMEOUT) is None:
                raise TimeoutError(f"handwritten workers not ready within {TIMEOUT} s")

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        reply = f"hw:reply:{uuid.uuid4().hex}"
        # One pipeline, one round trip: the batch is pushed "at once".
        await self.client.lpush(QUEUE, *(json.dumps([x, 0.0, reply]) for x in xs))
        ys: list[int] = []
        while len(ys) < len(xs):
            got = await self.client.brpop([reply], timeout=TIMEOUT)
            if got is None:
                raise TimeoutError(f"{len(ys)} of {len(xs)} results after {TIMEOUT} s")
            ys.append(int(got[1]))
            # Drain whatever else has arrived in one more round trip.
            more = await self.client.rpop(reply, len(xs) - len(ys)) if len(ys) < len(xs) else None
            ys.extend(int(v) for v in more or ())
        return ys

    async def run_one(self, x: int, sleep: float) -> int:
        reply = f"hw:reply:{uuid.uuid4().hex}"
        await self.client.lpush(QUEUE, json.dumps([x, sleep, reply]))
        got = await self.client.brpop([reply], timeout=TIMEOUT)
        if got is None:
            raise TimeoutError(f"no result for x={x} after {TIMEOUT} s")
        return int(got[1])

    async def teardown(self) -> None:
        try:
            if self._client is not None:
                await self._client.aclose()
                self._client = None
        finally:
            await super().teardown()


async def work(url: str) -> None:
    """Worker loop: BRPOP a task, run it, LPUSH its result to the task's reply list."""
    client = redis.asyncio.Redis.from_url(url)
    await client.lpush(READY, "1")
    while True:
        _, raw = await client.brpop([QUEUE])  # type: ignore[misc]
        x, sleep, reply = json.loads(raw)
        await client.lpush(reply, await aevaluate(x, sleep))


if __name__ == "__main__":
    asyncio.run(work(sys.argv[1]))
