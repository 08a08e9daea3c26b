"""One value for every task: lists of length 1 for extras, results and conditions."""

from __future__ import annotations

import pytest

from rushpy import Controller, RedisConfig, TaskError, Worker


async def test_one_condition_fails_every_task(controller: Controller) -> None:
    keys = await controller.push_failed_tasks([{"x": 1}, {"x": 2}, {"x": 3}], [ValueError("bad input")])
    rows = await controller.fetch_failed_tasks()
    assert sorted(rows["key"]) == sorted(keys)
    assert {r["condition"]["message"] for r in rows} == {"bad input"}


async def test_one_result_and_extra_for_every_finished_task(controller: Controller) -> None:
    await controller.push_finished_tasks([{"x": 1}, {"x": 2}], [{"y": 0}], yss_extra=[{"note": "warm"}])
    rows = await controller.fetch_finished_tasks()
    assert rows["y"] == [0, 0]
    assert rows["note"] == ["warm", "warm"]


async def test_one_extra_for_every_queued_task(controller: Controller) -> None:
    await controller.push_tasks([{"x": 1}, {"x": 2}], xss_extra=[{"batch": 7}])
    assert (await controller.fetch_queued_tasks())["batch"] == [7, 7]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.push_tasks([{"x": 1}, {"x": 2}, {"x": 3}], xss_extra=[{"a": 1}, {"a": 2}]),
        lambda c: c.push_finished_tasks([{"x": 1}, {"x": 2}, {"x": 3}], [{"y": 1}, {"y": 2}]),
        lambda c: c.push_failed_tasks([{"x": 1}, {"x": 2}, {"x": 3}], ["a", "b"]),
        lambda c: c.push_failed_tasks([{"x": 1}], [None]),
    ],
)
async def test_other_lengths_raise_before_anything_is_written(controller: Controller, call: object) -> None:
    with pytest.raises(TaskError):
        await call(controller)  # type: ignore[operator]
    assert await controller.n_tasks() == 0


async def test_worker_fails_many_keys_with_one_condition(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    keys = await controller.push_tasks([{"x": i} for i in range(3)])
    async with Worker(network_id, config=config) as worker:
        tasks = await worker.pop_tasks(3, timeout=5)
        assert await worker.fail_tasks([t.key for t in tasks], ["out of budget"]) == [True] * 3
    rows = await controller.wait_for_tasks(keys, timeout=5)
    assert [r["condition"]["message"] for r in rows] == ["out of budget"] * 3
