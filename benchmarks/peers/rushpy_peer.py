"""rushpy through its public API: a Controller, local worker processes, the result stream."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

import rushpy
from benchmarks.peers.base import Adapter
from benchmarks.peers.tasks import rush_aevaluate, rush_evaluate

#: Generous bound on any wait: a stuck peer fails the run instead of hanging it.
TIMEOUT = 120.0


class RushpyAdapter(Adapter):
    """rushpy: ``push_tasks`` + ``fetch_new_tasks`` (W1), ``as_completed`` on one key (W2, W3).

    Workers run an ``async def`` function, as the hand-written loop and the
    async-native peers do; ``rushpy-sync`` runs the plain function (in a
    worker thread), as the sync peers (huey, dramatiq, rq, celery) do.
    """

    name = "rushpy"
    requires = ("rushpy",)
    fun: Any = staticmethod(rush_aevaluate)

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.AsyncExitStack()
        self._rush: rushpy.Controller | None = None

    @property
    def rush(self) -> rushpy.Controller:
        assert self._rush is not None, "call setup() first"
        return self._rush

    async def setup(self, server_url: str) -> None:
        await super().setup(server_url)
        controller = rushpy.Controller(f"bench-{uuid.uuid4().hex[:8]}", config=server_url)
        self._rush = await self._stack.enter_async_context(controller)

    async def start_workers(self, n: int) -> None:
        await self.rush.start_local_workers(n, fun=self.fun)
        await self.rush.wait_for_workers(n, timeout=TIMEOUT)

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        await self.rush.push_tasks([{"x": x} for x in xs])
        ys: list[int] = []
        while len(ys) < len(xs):
            new = await self.rush.fetch_new_tasks(timeout=TIMEOUT)
            ys.extend(new["y"] if len(new) else ())  # one column: decodes only the outputs
        return ys

    async def run_one(self, x: int, sleep: float) -> int:
        keys = await self.rush.push_tasks([{"x": x, "sleep": sleep}])
        async for row in self.rush.as_completed(keys, timeout=TIMEOUT):
            return int(row["y"])
        raise AssertionError(f"task {keys[0]} closed without a row")

    async def teardown(self) -> None:
        try:
            if self._rush is not None:
                await self.rush.stop_workers()
                await self.rush.reset()
        finally:
            await self._stack.aclose()
            self._rush = None
            await super().teardown()


class RushpySyncAdapter(RushpyAdapter):
    """rushpy with a plain (blocking) function, run in a worker thread."""

    name = "rushpy-sync"
    fun: Any = staticmethod(rush_evaluate)
