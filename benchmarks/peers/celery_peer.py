"""celery: Redis broker and result backend; ``celery worker -P solo`` (one task at a time) per worker."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from benchmarks.peers.base import Adapter, load_app

TIMEOUT = 120


class CeleryAdapter(Adapter):
    """celery's client is blocking: calls run in threads; results wait with ``AsyncResult.get``."""

    name = "celery"

    def __init__(self) -> None:
        super().__init__()
        self.app: ModuleType | None = None

    async def setup(self, server_url: str) -> None:
        await super().setup(server_url)
        self.app = load_app("benchmarks.peers.celery_app", server_url)

    async def start_workers(self, n: int) -> None:
        cli = str(Path(sys.executable).with_name("celery"))
        for i in range(n):
            self.spawn([
                cli, "-A", "benchmarks.peers.celery_app", "worker", "-P", "solo", "-l", "warning",
                "-n", f"bench{i}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
            ])  # fmt: skip
        await self.wait_ready(n)

    def _run_batch(self, xs: Sequence[int]) -> list[int]:
        assert self.app is not None
        results = [self.app.evaluate_task.delay(x) for x in xs]
        return [int(r.get(timeout=TIMEOUT)) for r in results]

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        return await asyncio.to_thread(self._run_batch, xs)

    def _run_one(self, x: int, sleep: float) -> int:
        assert self.app is not None
        return int(self.app.evaluate_task.delay(x, sleep).get(timeout=TIMEOUT))

    async def run_one(self, x: int, sleep: float) -> int:
        return await asyncio.to_thread(self._run_one, x, sleep)
