"""dramatiq: RedisBroker and the Results middleware (Redis backend); one process, one thread per worker."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from benchmarks.peers.base import Adapter, load_app

TIMEOUT_MS = 120_000


class DramatiqAdapter(Adapter):
    """dramatiq's client is blocking: calls run in threads; results wait with ``get_result(block=True)``."""

    name = "dramatiq"

    def __init__(self) -> None:
        super().__init__()
        self.app: ModuleType | None = None

    async def setup(self, server_url: str) -> None:
        await super().setup(server_url)
        self.app = load_app("benchmarks.peers.dramatiq_app", server_url)

    async def start_workers(self, n: int) -> None:
        cli = str(Path(sys.executable).with_name("dramatiq"))
        for _ in range(n):
            self.spawn([cli, "benchmarks.peers.dramatiq_app", "--processes", "1", "--threads", "1"])
        await self.wait_ready(n)

    def _run_batch(self, xs: Sequence[int]) -> list[int]:
        assert self.app is not None
        messages = [self.app.evaluate_actor.send(x) for x in xs]
        return [int(m.get_result(block=True, timeout=TIMEOUT_MS)) for m in messages]

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        return await asyncio.to_thread(self._run_batch, xs)

    def _run_one(self, x: int, sleep: float) -> int:
        assert self.app is not None
        message = self.app.evaluate_actor.send(x, sleep)
        return int(message.get_result(block=True, timeout=TIMEOUT_MS))

    async def run_one(self, x: int, sleep: float) -> int:
        return await asyncio.to_thread(self._run_one, x, sleep)
