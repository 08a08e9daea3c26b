"""Controller options that reach its components: the task size limit."""

from __future__ import annotations

import pytest

from rushpy import ConfigError, Controller, RedisConfig, TaskError, Worker


async def test_max_task_bytes_reaches_the_store(config: RedisConfig, network_id: str) -> None:
    async with Controller(network_id, config=config, max_task_bytes=1000) as rush:
        with pytest.raises(TaskError, match="max_task_bytes=1,000"):
            await rush.push_tasks([{"x": "a" * 2000}])
        assert await rush.n_tasks() == 0
        assert len(await rush.push_tasks([{"x": "a" * 100}])) == 1
        await rush.reset()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64M"])
def test_invalid_max_task_bytes_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_task_bytes"):
        Controller("net", config="redis://localhost:1", max_task_bytes=bad)  # type: ignore[arg-type]


async def test_an_error_in_the_block_comes_out_unwrapped(config: RedisConfig, network_id: str) -> None:
    """The controller's task group never wraps the caller's exception in an ExceptionGroup."""
    with pytest.raises(KeyError, match="boom"):
        async with Controller(network_id, config=config, detect_lost_every=0.05):
            raise KeyError("boom")


@pytest.mark.parametrize(
    "call",
    [
        lambda c, w: c.wait_for_tasks([], timeout=-1),
        lambda c, w: c.wait_for_new_tasks(timeout=-1),
        lambda c, w: c.fetch_new_tasks(timeout=float("nan")),
        lambda c, w: c.wait_for_workers(1, timeout="soon"),
        lambda c, w: w.pop_tasks(1, timeout=-0.5),
        lambda c, w: w.pop_tasks(0),
        lambda c, w: w.wait_for_tasks([], timeout=-1),
    ],
)
async def test_a_bad_duration_or_count_is_a_config_error_everywhere(
    controller: Controller, config: RedisConfig, network_id: str, call: object
) -> None:
    """The same mistake raises the same error class, on the controller and on a worker."""
    async with Worker(network_id, config=config) as worker:
        with pytest.raises(ConfigError):
            await call(controller, worker)  # type: ignore[operator]


def test_worker_script_carries_the_reconnect_budget_but_never_the_password() -> None:
    config = RedisConfig.from_url("redis://user:s3cret@db.example:6379/0", reconnect_budget=45)
    script = Controller("net", config=config).worker_script("tests.funcs:square")
    assert "--url 'redis://user@db.example:6379/0?reconnect_budget=45'" in script
    assert "s3cret" not in script
    assert "reconnect_budget" not in str(config)


async def test_a_bad_worker_option_stores_no_start_arguments(controller: Controller) -> None:
    """Start arguments are validated whole before they are stored or any process starts."""
    with pytest.raises(ConfigError, match="log_level"):
        await controller.start_local_workers(1, fun="tests.funcs:square", log_level=5)  # type: ignore[arg-type]
    assert await controller._store.workers.get_start_args() is None
    assert controller.local_workers == {}
