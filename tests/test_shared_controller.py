"""One Controller shared by many coroutines, as the request handlers of a web service share it."""

from __future__ import annotations

import functools

import anyio

from rushpy import Controller, RedisConfig, Worker, run_function
from tests import funcs


async def test_many_handlers_push_and_wait_on_one_controller(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    n_handlers, per_handler = 20, 10
    answers: dict[int, list[int]] = {}
    streamed: list[str] = []
    pushed: list[str] = []

    async def handler(h: int) -> None:
        keys = await controller.push_tasks([{"x": h * 100 + i} for i in range(per_handler)])
        pushed.extend(keys)
        rows = await controller.wait_for_tasks(keys, timeout=30)
        assert [r["key"] for r in rows] == keys  # in the order asked, whatever the finish order
        answers[h] = [r["y"] for r in rows]
        assert (await controller.status()).n_tasks >= per_handler

    async def stream(done: anyio.Event) -> None:
        while not done.is_set() or len(streamed) < n_handlers * per_handler:
            streamed.extend(r["key"] for r in await controller.fetch_new_tasks(timeout=0.1))

    with anyio.fail_after(60):
        async with Worker(network_id, config=config) as worker, anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(run_function, worker, funcs.async_square, concurrency=4))
            done = anyio.Event()
            async with anyio.create_task_group() as streams:
                for _ in range(3):
                    streams.start_soon(stream, done)
                async with anyio.create_task_group() as handlers:
                    for h in range(n_handlers):
                        handlers.start_soon(handler, h)
                done.set()
            worker.set_terminated()
    assert answers == {h: [(h * 100 + i) ** 2 for i in range(per_handler)] for h in range(n_handlers)}
    # Every result reached exactly one of the streaming readers.
    assert sorted(streamed) == sorted(pushed)
