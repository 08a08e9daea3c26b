"""Seeds and random streams: derived per-task seeds, ``seed``/``rng`` parameters, worker streams."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import numpy as np
import pytest
import redis.asyncio

from rushpy import ConfigError, Controller, RedisConfig, Worker, WorkerFunctionError, run_function
from rushpy.functions import injected_parameters
from rushpy.keys import Keys
from rushpy.seeds import check_root_seed, make_rng, task_seed, worker_seed
from rushpy.task_methods import next_seed

# -- functions run by workers (importable as tests.test_seeds:...) ------------------------------


def draw(i: int, seed: int | None, rng: Any) -> dict[str, Any]:
    """Plain function (thread, or child process with a timeout): echoes its stream."""
    return {"seed": seed, "u": float(rng.random()), "n": int(rng.integers(0, 1 << 30))}


async def draw_async(i: int, seed: int | None, rng: Any) -> dict[str, Any]:
    await anyio.sleep(0.001 * (i % 3))  # finish out of order
    return {"seed": seed, "u": float(rng.random())}


def seed_only(x: int, seed: int | None) -> dict[str, Any]:
    return {"got": seed}


def named(x: int, seed: Any, rng: Any) -> dict[str, Any]:
    return {"got": seed, "r": rng if type(rng) is int else type(rng).__name__}


def positional_only(seed: int, /) -> dict[str, Any]:
    return {}


def takes_kwargs(**kwargs: Any) -> dict[str, Any]:
    return {"names": sorted(kwargs)}


def expected(seed: int) -> float:
    return float(np.random.default_rng(seed).random())


async def with_worker(
    config: RedisConfig,
    network_id: str,
    fun: Callable[..., Any],
    body: Callable[[Worker], Awaitable[Any]],
    concurrency: int = 1,
) -> Any:
    """Run ``body(worker)`` while an in-process worker runs ``fun``; stop it after (bounded)."""
    out: dict[str, Any] = {}
    with anyio.fail_after(30):
        async with Worker(network_id, config=config) as worker, anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_function(worker, fun, concurrency=concurrency))
            out["value"] = await body(worker)
            worker.set_terminated()
    return out["value"]


# -- derivation -------------------------------------------------------------------------------


def test_task_seeds_are_stable_and_distinct() -> None:
    # Fixed values: the derivation is documented and must never change between releases.
    assert task_seed(0, 0) == 2660812947711445440
    assert task_seed(42, 0) == 2002339945020690447
    assert task_seed(42, 1) == 1262740920470183513
    assert worker_seed(42, "w-1") == 12077031994199624032
    seeds = {task_seed(7, i) for i in range(1000)}
    assert len(seeds) == 1000
    assert all(0 <= s < 2**64 for s in seeds)
    assert worker_seed(7, "0") != task_seed(7, 0)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "1", True])
def test_invalid_root_seed(bad: Any) -> None:
    with pytest.raises(ConfigError, match="seed="):
        check_root_seed(bad)
    with pytest.raises(ConfigError, match="seed="):
        Controller("net", seed=bad)


def test_injected_parameters() -> None:
    assert injected_parameters(draw) == {"seed", "rng"}
    assert injected_parameters(seed_only) == {"seed"}
    assert injected_parameters(takes_kwargs) == frozenset()  # **kwargs alone does not count
    assert injected_parameters(positional_only) == frozenset()  # cannot be passed by name
    assert injected_parameters(print) == frozenset()  # no readable signature


def test_make_rng_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy now raises ImportError
    with pytest.raises(WorkerFunctionError, match="pip install numpy"):
        make_rng(1)


# -- the headline property ------------------------------------------------------------------------


async def test_twenty_seeded_tasks_same_results_on_one_and_four_workers(
    config: RedisConfig, network_id: str
) -> None:
    xss = [{"i": i} for i in range(20)]
    # One in-process worker, one task at a time, pushed while it runs.
    async with Controller(f"{network_id}-a", config=config, seed=2024) as one:
        try:

            async def run_one(_: Worker) -> Any:
                keys = await one.push_tasks(xss)
                return await one.wait_for_tasks(keys, timeout=30)

            table_one = await with_worker(config, f"{network_id}-a", draw, run_one)
        finally:
            await one.reset()
    # Four worker processes, tasks pushed before they start: they race for them.
    async with Controller(f"{network_id}-b", config=config, seed=2024, shutdown_timeout=5) as four:
        try:
            keys = await four.push_tasks(xss)
            await four.start_local_workers(4, fun=draw, concurrency=2)
            table_four = await four.wait_for_tasks(keys, timeout=60)
        finally:
            await four.reset()
    assert set(table_one["state"]) == set(table_four["state"]) == {"finished"}
    assert table_one["seed"] == table_four["seed"] == [task_seed(2024, i) for i in range(20)]
    assert table_one["u"] == table_four["u"] == [expected(task_seed(2024, i)) for i in range(20)]
    assert table_one["n"] == table_four["n"]
    assert len(set(table_one["u"])) == 20


async def test_async_function_and_child_process_get_the_same_streams(
    config: RedisConfig, network_id: str
) -> None:
    async with Controller(network_id, config=config, seed=5) as rush:
        try:

            async def body(_: Worker) -> Any:
                keys = await rush.push_tasks([{"i": i} for i in range(6)])
                return await rush.wait_for_tasks(keys, timeout=30)

            table = await with_worker(config, network_id, draw_async, body, concurrency=3)
            assert table["u"] == [expected(task_seed(5, i)) for i in range(6)]

            # A plain function with a timeout runs in a child process, which builds rng itself.
            async def in_child(_: Worker) -> Any:
                keys = await rush.push_tasks([{"i": i} for i in range(2)], timeouts=30)
                return await rush.wait_for_tasks(keys, timeout=60)

            child_table = await with_worker(config, network_id, draw, in_child)
            assert child_table["seed"] == [task_seed(5, i) for i in range(6, 8)]
            assert child_table["u"] == [expected(task_seed(5, i)) for i in range(6, 8)]
        finally:
            await rush.reset()


# -- explicit seeds, indices, conflicts --------------------------------------------------------------


async def test_explicit_seeds_override_and_indices_are_never_reused(
    config: RedisConfig, network_id: str
) -> None:
    async with Controller(network_id, config=config, seed=1) as first:
        try:
            keys = await first.push_tasks([{"x": 0}, {"x": 1}], seeds=[99, None])
            async with Controller(network_id, config=config, seed=1) as second:
                keys += await second.push_tasks([{"x": 2}, {"x": 3}])
            keys += await first.push_priority_tasks([{"x": 4}], priority=[None])
            table = await first.fetch_tasks(keys)
            by_x = dict(zip(table["x"], table["seed"], strict=True))
            # Index 0 went to the task with the explicit seed; no index is handed out twice.
            assert by_x == {
                0: 99,
                1: task_seed(1, 1),
                2: task_seed(1, 2),
                3: task_seed(1, 3),
                4: task_seed(1, 4),
            }
        finally:
            await first.reset()


async def test_a_network_keeps_one_root_seed(config: RedisConfig, network_id: str) -> None:
    async with Controller(network_id, config=config, seed=1) as rush:
        try:
            with pytest.raises(ConfigError, match="root seed"):
                async with Controller(network_id, config=config, seed=2):
                    pass
            # A controller without a seed may join; its tasks have no seed.
            async with Controller(network_id, config=config) as plain:
                (key,) = await plain.push_tasks([{"x": 1}])
                assert "seed" not in (await plain.fetch_tasks([key])).columns
            await rush.reset()  # a new study: the counter starts again, the root is kept
            (key,) = await rush.push_tasks([{"x": 1}])
            assert (await rush.fetch_tasks([key]))["seed"] == [task_seed(1, 0)]
        finally:
            await rush.reset()


async def test_retry_with_next_seed_moves_a_derived_seed(config: RedisConfig, network_id: str) -> None:
    async with Controller(network_id, config=config, seed=3) as rush:
        try:
            (key,) = await rush.push_tasks([{"x": 1}])
            await rush.cancel_tasks([key])
            assert await rush.retry_tasks([key], next_seed=True) == [key]
            assert (await rush.fetch_tasks([key]))["seed"] == [next_seed(task_seed(3, 0))]
        finally:
            await rush.reset()


# -- what a function gets without a seed, or with clashing inputs -------------------------------------


async def test_without_seed_the_function_gets_none_and_a_fresh_generator(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async def body(_: Worker) -> Any:
        keys = await controller.push_tasks([{"i": 0}, {"i": 1}])
        return await controller.wait_for_tasks(keys, timeout=30)

    table = await with_worker(config, network_id, draw, body)
    assert table["seed"] == [None, None]
    assert table["u"][0] != table["u"][1]  # fresh entropy per task


async def test_inputs_named_seed_or_rng_win(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async def body(_: Worker) -> Any:
        keys = await controller.push_tasks([{"x": 1, "seed": 12}, {"x": 2}], seeds=[34, 56])
        keys += await controller.push_tasks([{"x": 3, "rng": 7}])
        # In the child process too (a plain function with a timeout).
        keys += await controller.push_tasks([{"x": 4, "rng": 8}, {"x": 5}], seeds=[None, 9], timeouts=30)
        return await controller.wait_for_tasks(keys, timeout=60)

    table = await with_worker(config, network_id, named, body)
    assert table["got"] == [12, 56, None, None, 9]
    assert table["r"] == ["Generator", "Generator", 7, 8, "Generator"]


async def test_rng_without_numpy_fails_the_task_clearly(
    controller: Controller, config: RedisConfig, network_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)

    async def body(_: Worker) -> Any:
        keys = await controller.push_tasks([{"i": 0}], seeds=[1])
        return await controller.wait_for_tasks(keys, timeout=30)

    table = await with_worker(config, network_id, draw, body)
    assert table["state"] == ["failed"]
    assert table["condition"][0]["type"] == "WorkerFunctionError"
    assert "pip install numpy" in table["condition"][0]["message"]


# -- worker streams (worker loops) ----------------------------------------------------------------------


async def test_worker_seed_and_rng(config: RedisConfig, network_id: str) -> None:
    async with Controller(network_id, config=config, seed=11) as rush:
        try:
            async with Worker(network_id, config=config, worker_id="loop-1") as worker:
                assert worker.seed == worker_seed(11, "loop-1")
                rng = worker.rng()
                assert worker.rng() is rng  # one stream per worker
                assert float(rng.random()) == expected(worker_seed(11, "loop-1"))
            async with Worker(network_id, config=config, worker_id="loop-2") as other:
                assert other.seed not in (None, worker_seed(11, "loop-1"))
        finally:
            await rush.reset()


async def test_worker_without_root_seed(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    async with Worker(network_id, config=config) as worker:
        assert worker.seed is None
        assert worker.rng() is worker.rng()
    await raw.set(Keys(network_id).seed, "not a number")  # damaged: no stream rather than a crash
    async with Worker(network_id, config=config) as worker:
        assert worker.seed is None
