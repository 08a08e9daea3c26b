"""The blocking API: threads, repeated use from plain code, plain iterators, plain-def worker loops."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import rushpy
from rushpy import RedisConfig
from rushpy.blocking import Controller, Worker, worker_loop


@worker_loop
def doubling_loop(worker: Worker, factor: int = 2) -> None:
    """A plain-def loop: pops the controller's tasks and finishes them until asked to stop."""
    while not worker.terminated:
        task = worker.pop_task(timeout=0.1)
        if task is not None:
            worker.finish_tasks([task.key], [{"y": task.xs["x"] * factor}])


@worker_loop
def proposing_loop(worker: Worker, n: int) -> None:
    """A plain-def loop in decentralized style: proposes its own tasks and reads the network."""
    keys = worker.push_running_tasks([{"x": i} for i in range(n)])
    worker.finish_tasks(keys, [{"y": i * i} for i in range(n)])
    assert worker.n_finished_tasks() >= n  # the read methods work blocking too


def test_many_threads_share_one_controller(config: RedisConfig, network_id: str) -> None:
    errors: list[BaseException] = []
    results: dict[int, list[float]] = {}

    with Controller(network_id, config=config) as rush:
        rush.start_local_workers(2, fun="tests.funcs:square")

        def client(i: int) -> None:
            try:
                keys = rush.push_tasks([{"x": 10 * i + j} for j in range(5)])
                rows = rush.wait_for_tasks(keys, timeout=60)
                results[i] = sorted(row["y"] for row in rows)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors
        assert results == {i: [float((10 * i + j) ** 2) for j in range(5)] for i in range(8)}
        assert rush.n_finished_tasks() == 40
        rush.reset(workers=True)


def test_open_and_close_repeatedly(config: RedisConfig, network_id: str) -> None:
    for round_ in range(4):  # each its own loop thread: nothing "attached to a different loop"
        rush = Controller(network_id, config=config)
        try:
            rush.push_tasks([{"x": round_}])
            assert rush.n_queued_tasks() == round_ + 1
            assert network_id in repr(rush)
            assert rush.network_id == network_id  # a plain attribute, forwarded
        finally:
            rush.close()
        rush.close()  # idempotent
    with Controller(network_id, config=config) as rush:
        rush.reset()


def test_as_completed_is_a_plain_iterator(config: RedisConfig, network_id: str) -> None:
    with Controller(network_id, config=config) as rush:
        rush.start_local_workers(1, fun="tests.funcs:square")
        keys = rush.push_tasks([{"x": i} for i in range(6)])
        rows = list(rush.as_completed(keys, timeout=60))
        assert sorted(row["key"] for row in rows) == sorted(keys)
        # Leaving early closes the generator on its loop; the controller stays usable.
        more = rush.push_tasks([{"x": i} for i in range(3)])
        for row in rush.as_completed(more, timeout=60):
            assert row["key"] in more
            break
        assert rush.wait_for_tasks(more, timeout=60) is not None
        assert rush.n_finished_tasks() == 9
        rush.reset(workers=True)


def test_plain_def_worker_loops_run_on_local_workers(config: RedisConfig, network_id: str) -> None:
    with Controller(network_id, config=config) as rush:
        rush.start_local_workers(1, worker_loop=proposing_loop, n=3)
        rows: list[dict[str, Any]] = []
        for _ in range(20):  # the loop's three results, as they come
            rows += list(rush.fetch_new_tasks(timeout=5))
            if len(rows) >= 3:
                break
        assert sorted(row["y"] for row in rows) == [0, 1, 4]
        rush.reset(workers=True)


def test_plain_def_loop_pops_tasks_until_terminated(config: RedisConfig, network_id: str) -> None:
    with Controller(network_id, config=config) as rush:
        rush.start_local_workers(2, worker_loop=doubling_loop, factor=3)
        keys = rush.push_tasks([{"x": i} for i in range(6)])
        rows = rush.wait_for_tasks(keys, timeout=60)
        assert sorted(row["y"] for row in rows) == [3 * i for i in range(6)]
        rush.stop_workers()  # the loops see `terminated` and return
        rush.reset(workers=True)


def test_standalone_blocking_worker(config: RedisConfig, network_id: str) -> None:
    with Controller(network_id, config=config) as rush, Worker(network_id, config=config) as worker:
        [key] = rush.push_tasks([{"x": 4}])
        task = worker.pop_task(timeout=10)
        assert task is not None
        assert task.key == key
        worker.finish_tasks([key], [{"y": 16}])
        assert rush.wait_for_tasks([key], timeout=10)[0]["y"] == 16
        rush.reset()


def test_errors_pass_through_unchanged(config: RedisConfig, network_id: str) -> None:
    with Controller(network_id, config=config) as rush:
        with pytest.raises(rushpy.UnknownTaskError):
            rush.fetch_task("no-such-key")
        with pytest.raises(AttributeError):
            rush._private_thing  # noqa: B018 - private names are not forwarded


async def test_works_where_an_event_loop_already_runs(config: RedisConfig, network_id: str) -> None:
    # A notebook cell: plain calls from a thread whose own loop is running.
    with Controller(network_id, config=config) as rush:
        rush.push_tasks([{"x": 1}])
        assert rush.n_queued_tasks() == 1
        rush.reset()
