"""A full server (``maxmemory`` reached) costs time, never tasks; evicting servers are refused.

Every test starts its own server (``EmbeddedServer``) and fills it with
``CONFIG SET maxmemory`` below the memory in use (a ballast key holds the
memory), then frees it by deleting the ballast. The session ``server`` is left
alone. Durations are bounded with ``anyio.fail_after``, never asserted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio
from pydantic import SecretStr

from rushpy import (
    ConfigError,
    Controller,
    EmbeddedServer,
    RedisConfig,
    ServerError,
    ServerFullError,
    TaskTimeoutError,
    Worker,
    run_function,
)
from rushpy.connection import create_client
from tests.helpers import eventually, raw_client

BALLAST = "test-ballast"
BALLAST_BYTES = 8 * 1024 * 1024


@pytest.fixture
async def private() -> AsyncIterator[EmbeddedServer]:
    """A server of this test only: filling its memory disturbs no other test."""
    async with EmbeddedServer() as server:
        yield server


@pytest.fixture
async def admin(private: EmbeddedServer) -> AsyncIterator[redis.asyncio.Redis]:
    async with raw_client(private.config) as client:
        yield client


def _config(server: EmbeddedServer) -> RedisConfig:
    # Short socket timeout: blocking moves re-arm often, so they meet the full server.
    return server.config.model_copy(update={"socket_timeout": 1.0, "reconnect_budget": 5.0})


async def _fill(admin: redis.asyncio.Redis, headroom: int = -2 * 1024 * 1024) -> None:
    """Put the server over its limit: maxmemory = memory in use + ``headroom`` (negative: full)."""
    if not await admin.exists(BALLAST):
        # Built on the server (a tiny command): a large SET would leave a large
        # query buffer, counted in used_memory until the server trims it.
        await admin.setrange(BALLAST, BALLAST_BYTES - 1, b"x")
    used = int((await admin.info("memory"))["used_memory"])
    await admin.config_set("maxmemory", used + headroom)


async def _free(admin: redis.asyncio.Redis) -> None:
    await admin.delete(BALLAST)


async def _oom_replies(admin: redis.asyncio.Redis) -> int:
    """How many commands the server refused for lack of memory so far."""
    stats: dict[str, Any] = await admin.info("errorstats")
    entry = stats.get("errorstat_OOM") or {}
    return int(entry.get("count", 0)) if isinstance(entry, dict) else 0


async def _network_keys(admin: redis.asyncio.Redis, network_id: str) -> list[bytes]:
    return [k async for k in admin.scan_iter(match=f"*{{{network_id}}}*", count=1000)]


# -- the error ---------------------------------------------------------------------------------


async def test_an_oom_reply_is_a_server_full_error(private: EmbeddedServer, admin: Any) -> None:
    client = create_client(private.config)
    try:
        await _fill(admin)
        with pytest.raises(ServerFullError) as info:
            await client.set("k", b"v")
        assert isinstance(info.value, ServerError)
        message = str(info.value)
        assert "maxmemory" in message and "SET" in message and str(private.port) in message
        with pytest.raises(ServerFullError):  # pipelines too
            async with client.pipeline(transaction=False) as pipe:
                pipe.set("k", b"v")
                await pipe.execute()
        await _free(admin)
        await client.set("k", b"v")  # not sticky: fine again once memory is free
    finally:
        await client.aclose()


# -- pushes are all or nothing -----------------------------------------------------------------


async def test_a_push_that_runs_out_of_memory_midway_creates_nothing(
    private: EmbeddedServer, admin: Any
) -> None:
    network_id = f"oom-{uuid.uuid4().hex[:8]}"
    async with Controller(network_id, config=_config(private)) as rush:
        # Room for about one of the three chunks (1,000 tasks of ~1 KB each per chunk):
        # sent as separate script calls, the first chunk was created and the rest refused.
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory", used + 2 * 1024 * 1024)
        xss = [{"x": i, "pad": "p" * 1000} for i in range(3000)]
        with pytest.raises(ServerFullError, match="maxmemory"):
            await rush.push_tasks(xss)
        await admin.config_set("maxmemory", 0)
        assert (await rush.status()).n_tasks == 0
        # No task hash, no queue entry, nothing in the creation list: the push left no trace.
        assert await _network_keys(admin, network_id) == []
        # And the same push goes through once there is room.
        keys = await rush.push_tasks(xss)
        assert len(keys) == 3000 and (await rush.status()).n_queued_tasks == 3000
        await rush.reset()


async def test_a_push_refused_at_once_creates_nothing(private: EmbeddedServer, admin: Any) -> None:
    network_id = f"oom-{uuid.uuid4().hex[:8]}"
    async with Controller(network_id, config=_config(private)) as rush:
        await _fill(admin)
        with pytest.raises(ServerFullError):
            await rush.push_tasks([{"x": 1}])
        with pytest.raises(ServerFullError):
            await rush.push_tasks([{"x": i} for i in range(2500)])
        await _free(admin)
        assert (await rush.status()).n_tasks == 0
        assert await _network_keys(admin, network_id) == []


# -- workers wait for memory -------------------------------------------------------------------

_gates: list[anyio.Event] = []  # the task function waits on the last one


async def _gated_double(x: int) -> dict[str, int]:
    await _gates[-1].wait()
    return {"y": 2 * x}


async def test_workers_survive_a_full_server_and_finish_once_memory_is_freed(
    private: EmbeddedServer, admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gate = anyio.Event()
    _gates.append(gate)
    caplog.set_level(logging.WARNING, logger="rushpy")
    network_id = f"oom-{uuid.uuid4().hex[:8]}"
    config = _config(private)
    async with Controller(network_id, config=config) as rush:
        keys = await rush.push_tasks([{"x": i} for i in range(6)])
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def run_worker(worker_id: str) -> None:
                    async with Worker(network_id, config=config, worker_id=worker_id) as worker:
                        await run_function(worker, _gated_double, concurrency=2)

                tg.start_soon(run_worker, "early")
                await eventually(lambda: _n_running(rush, 2), "the first worker runs two tasks", timeout=20)
                await _fill(admin)
                refused = await _oom_replies(admin)
                # A worker that starts now cannot register; its results and pops are
                # refused too: everything waits and retries instead of crashing.
                tg.start_soon(run_worker, "late")
                gate.set()

                async def refused_often() -> bool:
                    return await _oom_replies(admin) >= refused + 6

                await eventually(refused_often, "the workers retried against the full server", timeout=20)
                await _free(admin)
                table = await rush.wait_for_tasks(keys, timeout=30)
                assert sorted(r["y"] for r in table.to_records()) == [0, 2, 4, 6, 8, 10]
                await eventually(
                    lambda: _registered(rush, {"early", "late"}), "the late worker registered", timeout=20
                )
                await rush.stop_workers(type="terminate")
        assert "maxmemory" in caplog.text  # the retries say why
        await rush.reset()


async def _n_running(rush: Controller, n: int) -> bool:
    return (await rush.status()).n_running_tasks == n


async def _registered(rush: Controller, ids: set[str]) -> bool:
    return ids <= {row["worker_id"] for row in (await rush.worker_info()).to_records()}


async def test_heartbeats_go_on_while_the_server_is_full(private: EmbeddedServer, admin: Any) -> None:
    # A refused beat would let the key expire: the full server would get healthy workers declared lost.
    network_id = f"oom-{uuid.uuid4().hex[:8]}"
    config = _config(private)
    async with Controller(network_id, config=config) as rush:
        async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as worker:
            await _fill(admin)
            for _ in range(10):  # several expiries long
                await anyio.sleep(0.1)
                assert await rush.detect_lost_workers() == []
            assert await admin.pttl(f"rush:{{{network_id}}}:worker:{worker.worker_id}:heartbeat") > 0
            await _free(admin)
            assert await rush.detect_lost_workers() == []
        await rush.reset()


# -- the server's eviction policy --------------------------------------------------------------


async def test_noeviction_connects_without_a_warning(
    private: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rushpy")
    async with Controller("policy", config=private.config):
        pass
    assert "maxmemory-policy" not in caplog.text


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl"])
async def test_a_volatile_policy_warns_with_what_to_set(
    private: EmbeddedServer, admin: Any, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    await admin.config_set("maxmemory-policy", policy)
    caplog.set_level(logging.WARNING, logger="rushpy")
    async with Controller("policy", config=private.config):
        pass
    assert policy in caplog.text
    assert "heartbeat" in caplog.text and "noeviction" in caplog.text


async def test_an_allkeys_policy_is_refused_unless_allowed(
    private: EmbeddedServer, admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await admin.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(ConfigError, match="allkeys-lru") as info:
        async with Controller("policy", config=private.config):
            pass
    message = str(info.value)
    assert "noeviction" in message and "allow_evicting_server=True" in message
    caplog.set_level(logging.WARNING, logger="rushpy")
    async with Controller("policy", config=private.config, allow_evicting_server=True) as rush:
        assert await rush.push_tasks([{"x": 1}])
        await rush.reset()
    assert "allkeys-lru" in caplog.text


async def test_a_refused_config_get_skips_the_check_quietly(
    private: EmbeddedServer, admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Managed servers often deny CONFIG; the check is then skipped, not fatal.
    await admin.config_set("maxmemory-policy", "allkeys-lru")
    await admin.execute_command("ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all", "-config")
    config = private.config.model_copy(update={"username": "app", "password": SecretStr("app-pw")})
    caplog.set_level(logging.DEBUG, logger="rushpy")
    async with Controller("policy", config=config) as rush:
        assert await rush.push_tasks([{"x": 1}])
        await rush.reset()
    assert "maxmemory-policy" in caplog.text  # the debug record says why it was skipped
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "policy" in r.getMessage()]


async def test_counts_snapshots_and_fetches_answer_while_the_server_is_full(
    private: EmbeddedServer, admin: Any
) -> None:
    # MULTI is refused on a full server even for reads; the state reads are one read-only script.
    network_id = f"full-reads-{uuid.uuid4().hex[:8]}"
    async with Controller(network_id, config=_config(private)) as rush:
        keys = await rush.push_tasks([{"x": i} for i in range(5)])
        await _fill(admin)
        refused_before = await _oom_replies(admin)
        with pytest.raises(ServerFullError):
            await rush.push_tasks([{"x": 99}])
        assert await _oom_replies(admin) > refused_before  # the server is full indeed
        with anyio.fail_after(20):
            status = await rush.status()
            assert (status.n_queued_tasks, status.n_tasks) == (5, 5)
            assert (await rush.tasks_with_state(["queued"]))["queued"] == keys
            assert (await rush.fetch_tasks())["x"] == list(range(5))
            with pytest.raises(TaskTimeoutError):
                await rush.wait_for_tasks(keys, timeout=0.5)
        await _free(admin)
