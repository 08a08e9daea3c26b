"""huey: RedisHuey with BLPOP result notification; one consumer process with one thread per worker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import ModuleType

from benchmarks.peers.base import Adapter, load_app, python_argv

TIMEOUT = 120


class HueyAdapter(Adapter):
    """huey's client is blocking: calls run in threads so that W3's slots overlap."""

    name = "huey"

    def __init__(self) -> None:
        super().__init__()
        self.app: ModuleType | None = None

    async def setup(self, server_url: str) -> None:
        await super().setup(server_url)
        self.app = load_app("benchmarks.peers.huey_app", server_url)

    async def start_workers(self, n: int) -> None:
        for _ in range(n):
            app = "benchmarks.peers.huey_app.huey"
            self.spawn(python_argv("-m", "huey.bin.huey_consumer", app, "-w", "1", "-k", "thread"))
        await self.wait_ready(n)

    def _run_batch(self, xs: Sequence[int]) -> list[int]:
        assert self.app is not None
        # huey has no batch enqueue: one LPUSH per task is its API.
        results = [self.app.evaluate_task(x) for x in xs]
        return [int(r.get(blocking=True, timeout=TIMEOUT)) for r in results]

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        return await asyncio.to_thread(self._run_batch, xs)

    def _run_one(self, x: int, sleep: float) -> int:
        assert self.app is not None
        return int(self.app.evaluate_task(x, sleep).get(blocking=True, timeout=TIMEOUT))

    async def run_one(self, x: int, sleep: float) -> int:
        return await asyncio.to_thread(self._run_one, x, sleep)
