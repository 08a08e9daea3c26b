"""taskiq-redis: ListQueueBroker and RedisAsyncResultBackend; one ``taskiq worker`` process per worker."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from benchmarks.peers.base import Adapter, load_app

TIMEOUT = 120.0
#: taskiq polls the result backend (default every 0.2 s); a short poll keeps W2 about the framework.
POLL = 0.002


class TaskiqAdapter(Adapter):
    """taskiq is async-native: ``kiq`` then ``wait_result``."""

    name = "taskiq"

    def __init__(self) -> None:
        super().__init__()
        self.app: ModuleType | None = None

    async def setup(self, server_url: str) -> None:
        await super().setup(server_url)
        self.app = load_app("benchmarks.peers.taskiq_app", server_url)
        await self.app.broker.startup()

    async def start_workers(self, n: int) -> None:
        cli = str(Path(sys.executable).with_name("taskiq"))
        for _ in range(n):
            self.spawn([
                cli, "worker", "benchmarks.peers.taskiq_app:broker",
                "--workers", "1", "--max-async-tasks", "1", "--log-level", "WARNING",
            ])  # fmt: skip
        await self.wait_ready(n)

    async def _result(self, task: object) -> int:
        result = await task.wait_result(check_interval=POLL, timeout=TIMEOUT)  # type: ignore[attr-defined]
        if result.is_err:
            raise AssertionError(f"taskiq task failed: {result.error!r}")
        return int(result.return_value)

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        assert self.app is not None
        tasks = [await self.app.evaluate_task.kiq(x) for x in xs]
        return list(await asyncio.gather(*(self._result(t) for t in tasks)))

    async def run_one(self, x: int, sleep: float) -> int:
        assert self.app is not None
        return await self._result(await self.app.evaluate_task.kiq(x, sleep))

    async def teardown(self) -> None:
        try:
            await super().teardown()
        finally:
            if self.app is not None:
                await self.app.broker.shutdown()
