"""arq, run in its own virtual environment (it pins redis < 6) and driven over a pipe.

The adapter starts :mod:`benchmarks.peers.arq_driver` with the interpreter of
``benchmarks/.venv-arq`` (created on first use, or by
``.venv/bin/python -m benchmarks.peers.arq_env``); the driver holds arq's
producer pool and starts arq's worker processes. Each ``run_one``/``run_batch``
is one JSON line each way, so the pipe adds well under a millisecond to W2
(the other peers' producers run in the driver process itself).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Sequence
from typing import Any

from benchmarks.peers import arq_env
from benchmarks.peers.base import ROOT, Adapter

TIMEOUT = 120.0


class ArqError(RuntimeError):
    """The arq driver reported an error or went away."""


class ArqAdapter(Adapter):
    """arq: ``enqueue_job`` then ``Job.result`` (polled), inside the arq environment."""

    name = "arq"
    requires = ()

    def __init__(self) -> None:
        super().__init__()
        self._proc: asyncio.subprocess.Process | None = None
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._reader: asyncio.Task[None] | None = None

    async def setup(self, server_url: str) -> None:
        await super().setup(server_url)
        python = await asyncio.to_thread(arq_env.ensure)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_URL": server_url}
        self._proc = await asyncio.create_subprocess_exec(
            str(python), "-m", "benchmarks.peers.arq_driver",
            cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # a batch's answer is one long line
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read_answers())

    async def _read_answers(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            answer = json.loads(line)
            future = self._answers.pop(answer["id"], None)
            if future is None or future.done():
                continue
            if "error" in answer:
                future.set_exception(ArqError(answer["error"]))
            else:
                future.set_result(answer["ok"])
        # The driver exited: nothing pending will ever be answered.
        for future in self._answers.values():
            if not future.done():
                future.set_exception(ArqError(f"the arq driver exited with code {self._proc.returncode}"))
        self._answers.clear()

    async def _call(self, op: str, **args: Any) -> Any:
        assert self._proc is not None and self._proc.stdin is not None, "call setup() first"
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[request_id] = future
        self._proc.stdin.write(json.dumps({"id": request_id, "op": op, **args}).encode() + b"\n")
        await self._proc.stdin.drain()
        async with asyncio.timeout(TIMEOUT):
            return await future

    async def start_workers(self, n: int) -> None:
        await self._call("start", n=n)
        await self.wait_ready(n)

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        return [int(y) for y in await self._call("batch", xs=list(xs))]

    async def run_one(self, x: int, sleep: float) -> int:
        return int(await self._call("one", x=x, sleep=sleep))

    async def teardown(self) -> None:
        try:
            if self._proc is not None:
                assert self._proc.stdin is not None
                # End of input: the driver stops its workers and exits.
                self._proc.stdin.close()
                try:
                    async with asyncio.timeout(20):
                        await self._proc.wait()
                except TimeoutError:
                    self._proc.kill()
                    await self._proc.wait()
            if self._reader is not None:
                await self._reader
        finally:
            self._proc = None
            self._reader = None
            await super().teardown()
