"""A hung server (process stopped with SIGSTOP: a silent partition) surfaces within a bound.

Every test starts its own server and stops it with ``SIGSTOP`` (always continued
in a ``finally``); the session ``server`` is left alone. A stopped server
accepts TCP connections (the kernel does) but never answers: only timeouts
notice it. Durations are bounded with ``anyio.fail_after`` (a generous bound that
fails a hang), never asserted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from rushpy import (
    ConfigError,
    ConnectionFailedError,
    Controller,
    EmbeddedServer,
    RedisConfig,
    TaskTimeoutError,
    Worker,
    WorkerTimeoutError,
)
from rushpy.connection import create_client
from rushpy.deadline import DEADLINE_GRACE, call_deadline
from rushpy.events import EventListener
from tests.helpers import Waiter, waiters

# Small settings: a hung server is noticed in about a second.
FAST = {"socket_timeout": 0.5, "reconnect_budget": 1.0, "health_check_interval": 0.3}
# Generous slack for a busy 2-core machine; a hang without the fixes lasts forever.
SLACK = 10.0


@pytest.fixture
async def private() -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer() as server:
        yield server


@contextmanager
def stopped(server: EmbeddedServer) -> Iterator[None]:
    """The server process is stopped inside the block, continued after it (always)."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def _config(server: EmbeddedServer, **changes: Any) -> RedisConfig:
    return server.config.model_copy(update={**FAST, **changes})


def _bound(config: RedisConfig) -> float:
    """The documented bound for a method without a timeout, plus slack."""
    return config.socket_timeout + config.reconnect_budget + 1.0 + SLACK


async def test_every_connection_has_a_socket_timeout_by_default(private: EmbeddedServer) -> None:
    config = RedisConfig()
    assert config.socket_timeout == 30.0 and config.health_check_interval > 0
    client = create_client(private.config)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 30.0
    # Settings a worker process needs travel in its URL.
    custom = _config(private)
    assert RedisConfig.from_url(custom.to_url(include_options=True)) == custom


async def test_entering_a_controller_fails_within_the_bound(private: EmbeddedServer) -> None:
    config = _config(private)
    with stopped(private):
        with anyio.fail_after(config.connect_timeout + _bound(config)):
            with pytest.raises(ConnectionFailedError, match=str(private.port)):
                async with Controller("hung", config=config):
                    pass


Call = Waiter


async def _push(rush: Controller, keys: list[str]) -> Any:
    return await rush.push_tasks([{"x": 1}])


async def _status(rush: Controller, keys: list[str]) -> Any:
    return await rush.status()


async def _fetch(rush: Controller, keys: list[str]) -> Any:
    return await rush.fetch_tasks()


@pytest.mark.parametrize("call", [_push, _status, _fetch], ids=["push_tasks", "status", "fetch_tasks"])
async def test_methods_without_a_timeout_fail_within_the_bound(private: EmbeddedServer, call: Call) -> None:
    config = _config(private)
    async with Controller(f"hung-{uuid.uuid4().hex[:6]}", config=config) as rush:
        keys = await rush.push_tasks([{"x": 0}])
        with stopped(private), anyio.fail_after(_bound(config)), pytest.raises(ConnectionFailedError):
            await call(rush, keys)
        # Continued: the same controller works again. (A push that raised may still
        # have been applied: the server read it before it stopped, or after.)
        assert (await rush.status()).n_tasks in (1, 2)
        await rush.reset()


@pytest.mark.parametrize("call", waiters(0.5))
async def test_methods_with_a_timeout_honour_it(private: EmbeddedServer, call: Waiter) -> None:
    # A long budget: without a bound of its own the call would take socket_timeout +
    # 30 s; only its own timeout (0.5 s) plus the grace (the socket timeout) ends it in time.
    config = private.config.model_copy(update={"socket_timeout": 1.0, "reconnect_budget": 30.0})
    async with Controller(f"hung-{uuid.uuid4().hex[:6]}", config=config) as rush:
        keys = await rush.push_tasks([{"x": 0}])  # no worker: nothing ends the wait early
        with stopped(private):
            with anyio.fail_after(0.5 + config.socket_timeout + SLACK):
                try:
                    result = await call(rush, keys)
                except (ConnectionFailedError, TaskTimeoutError, WorkerTimeoutError):
                    pass
                else:
                    assert not result  # nothing new: the normal timeout result
        assert (await rush.status()).n_tasks == 1
        await rush.reset()


async def test_a_deadline_bounds_only_its_own_task_and_only_unanswered_commands(
    private: EmbeddedServer,
) -> None:
    config = private.config.model_copy(update={"socket_timeout": 1.0, "reconnect_budget": 30.0})
    grace = min(config.socket_timeout, DEADLINE_GRACE)
    client = create_client(config)
    try:
        # Nested: the inner, later deadline does not lift the outer one.
        with call_deadline(0), call_deadline(60):
            # Past its deadline, a command that gets an answer still succeeds (the grace).
            assert await client.ping()
            with stopped(private):
                with anyio.fail_after(grace + SLACK):
                    with pytest.raises(ConnectionFailedError, match="timeout of 0 s"):
                        await client.ping()

                    async def other_task() -> None:
                        # Not bounded: a task started inside the block waits for its answer.
                        with anyio.move_on_after(grace + 1) as scope:
                            await client.ping()
                        assert scope.cancelled_caught

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(other_task)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_wait_without_timeout_notices_the_hang_through_the_listener(
    private: EmbeddedServer,
) -> None:
    # No command runs while it waits: only the subscription's health check can tell.
    config = _config(private)
    async with Controller(f"hung-{uuid.uuid4().hex[:6]}", config=config) as rush:
        keys = await rush.push_tasks([{"x": 0}])

        async def stop_soon() -> None:
            await anyio.sleep(0.3)  # let the wait reach its event wait first
            os.kill(private.pid or 0, signal.SIGSTOP)

        try:
            bound = config.health_check_interval + _bound(config)
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_soon)
                with (
                    anyio.fail_after(bound),
                    pytest.raises(ConnectionFailedError, match="event subscription"),
                ):
                    # Without lost-worker checks (they send commands every 0.5 s).
                    await rush.wait_for_tasks(keys, detect_lost_workers=False)
        finally:
            os.kill(private.pid or 0, signal.SIGCONT)
        assert (await rush.status()).n_tasks == 1
        await rush.reset()


async def test_the_listener_reconnects_after_a_hang(private: EmbeddedServer) -> None:
    config = _config(private)
    async with EventListener(config, ["chan"]) as events:
        seen = events.counter("chan")
        with stopped(private):
            with anyio.fail_after(_bound(config)):
                while events.connected:
                    await anyio.sleep(0.05)
        with anyio.fail_after(_bound(config)):
            assert await events.wait(["chan"], [seen], None)  # the reconnection bumps the counter
        assert events.connected


async def test_a_workers_timed_pop_honours_its_timeout(private: EmbeddedServer) -> None:
    # A long budget: unbounded, the pop would take socket_timeout + 30 s.
    config = private.config.model_copy(update={"socket_timeout": 1.0, "reconnect_budget": 30.0})
    async with Worker(f"hung-{uuid.uuid4().hex[:6]}", config=config) as worker:
        with (
            stopped(private),
            anyio.fail_after(0.5 + config.socket_timeout + SLACK),
            contextlib.suppress(ConnectionFailedError),
        ):
            assert await worker.pop_task(timeout=0.5) is None


async def test_a_workers_pop_without_timeout_fails_within_the_bound(private: EmbeddedServer) -> None:
    config = _config(private)
    network_id = f"hung-{uuid.uuid4().hex[:6]}"
    async with Controller(network_id, config=config) as rush, Worker(network_id, config=config) as worker:
        with stopped(private), anyio.fail_after(_bound(config)), pytest.raises(ConnectionFailedError):
            await worker.pop_task(timeout=None)
        # Continued: the worker pops and finishes a task again.
        keys = await rush.push_tasks([{"x": 3}])
        with anyio.fail_after(30):
            task = await worker.pop_task(timeout=20)
        assert task is not None and task.key == keys[0]
        assert await worker.finish_tasks([task.key], [{"y": 9}]) == [True]
        table = await rush.wait_for_tasks(keys, timeout=20)
        assert table.to_records()[0]["y"] == 9
        await rush.reset()


@pytest.mark.parametrize("timeout", ["soon", float("nan"), -1, True])
async def test_an_invalid_timeout_is_refused_by_the_method_not_the_deadline(
    controller: Controller, timeout: Any
) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        await controller.wait_for_tasks(await controller.push_tasks([{"x": 1}]), timeout=timeout)
    with pytest.raises(ConfigError, match="timeout"):
        await controller.wait_for_new_tasks(timeout=timeout)
