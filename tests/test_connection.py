"""Connection problems reach users as ConnectionFailedError, within the reconnect budget.

Every test starts its own server (or a non-Redis service) so that it can stop it;
the session `server` fixture is left alone. Durations are bounded with
`anyio.fail_after` (a generous bound that fails a hang), never asserted.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from pydantic import SecretStr
from redis.exceptions import NoScriptError, ResponseError

from rushpy import ConnectionFailedError, Controller, EmbeddedServer, RedisConfig, ServerError
from rushpy.connection import check_connection, create_client
from tests.helpers import Waiter, waiters

BUDGET = 1.0
# Bound for "raised within the budget": budget + reconnect backoff + slack for a busy machine.
BOUND = BUDGET + 15


def _with_budget(server: EmbeddedServer, budget: float = BUDGET, **changes: Any) -> RedisConfig:
    return server.config.model_copy(update={"reconnect_budget": budget, **changes})


# -- a service that is not Redis -----------------------------------------------------------------


@pytest.fixture
def http_port() -> Iterator[int]:
    """A plain TCP server that answers every connection with an HTTP error page."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n\r\n"
                        b"<html><body>not redis</body></html>"
                    )
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


async def test_http_service_on_the_port_is_connection_failed(http_port: int) -> None:
    config = RedisConfig(port=http_port, reconnect_budget=30)
    with anyio.fail_after(20):  # a protocol error is not retried for the budget
        with pytest.raises(ConnectionFailedError, match="does not speak the Redis protocol") as info:
            await check_connection(config)
        assert str(http_port) in str(info.value)
        client = create_client(config)
        try:
            with pytest.raises(ConnectionFailedError, match="does not speak the Redis protocol"):
                await client.get("k")
        finally:
            await client.aclose()
        with pytest.raises(ConnectionFailedError, match="does not speak the Redis protocol"):
            async with Controller("net", config=config):
                pass


# -- commands ----------------------------------------------------------------------------------


async def test_command_to_a_dead_server_raises_after_the_budget() -> None:
    async with EmbeddedServer(password="pw-not-in-messages") as server:
        config = _with_budget(server)
        client = create_client(config)
        try:
            await client.set("k", b"v")
            server.kill()
            with anyio.fail_after(BOUND), pytest.raises(ConnectionFailedError) as info:
                await client.get("k")
        finally:
            await client.aclose()
    message = str(info.value)
    assert f"127.0.0.1:{server.port}" in message
    assert "reconnect budget of 1 s" in message
    assert "pw-not-in-messages" not in message
    assert "reconnect_budget" in message


async def test_pipeline_to_a_dead_server_raises_connection_failed() -> None:
    async with EmbeddedServer() as server:
        client = create_client(_with_budget(server))
        try:
            await client.ping()
            server.kill()
            with anyio.fail_after(BOUND), pytest.raises(ConnectionFailedError, match="reconnect budget"):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.get("a")
                    pipe.get("b")
                    await pipe.execute()
        finally:
            await client.aclose()


async def test_command_rides_out_a_restart_within_the_budget() -> None:
    async with EmbeddedServer() as server:
        client = create_client(_with_budget(server, budget=30))
        try:
            await client.set("k", b"v")
            await anyio.to_thread.run_sync(server.restart)
            # The pooled connection is dead: the command is sent again on a fresh one.
            assert await client.get("k") is None
        finally:
            await client.aclose()


async def test_zero_budget_fails_at_the_first_error() -> None:
    async with EmbeddedServer() as server:
        client = create_client(_with_budget(server, budget=0))
        try:
            await client.set("k", b"v")
            await anyio.to_thread.run_sync(server.restart)
            with pytest.raises(ConnectionFailedError):
                await client.get("k")
        finally:
            await client.aclose()


async def test_retries_cap_fails_before_the_budget() -> None:
    async with EmbeddedServer() as server:
        client = create_client(_with_budget(server, budget=300), retries=0)
        try:
            await client.ping()
            server.kill()
            with anyio.fail_after(30), pytest.raises(ConnectionFailedError):
                await client.get("k")
        finally:
            await client.aclose()


async def test_wrong_password_is_not_retried() -> None:
    async with EmbeddedServer(password="right") as server:
        config = _with_budget(server, budget=300, password=SecretStr("wrong"))
        client = create_client(config)
        try:
            with anyio.fail_after(30), pytest.raises(ConnectionFailedError, match="refused the credentials"):
                await client.get("k")
        finally:
            await client.aclose()
        with pytest.raises(ConnectionFailedError, match="refused the credentials") as info:
            await check_connection(config)
        assert "wrong" not in str(info.value)


async def test_error_replies_are_server_errors_except_noscript(config: RedisConfig) -> None:
    # Error replies become ServerError naming the command; NoScriptError stays
    # redis-py's, because the store answers it by loading its scripts again.
    client = create_client(config)
    try:
        with pytest.raises(ServerError, match="NO-SUCH-COMMAND") as info:
            await client.execute_command("NO-SUCH-COMMAND")
        assert isinstance(info.value.__cause__, ResponseError)
        with pytest.raises(ServerError, match="pipelined"):
            async with client.pipeline(transaction=False) as pipe:
                pipe.execute_command("NO-SUCH-COMMAND")
                await pipe.execute()
        with pytest.raises(NoScriptError):
            await client.evalsha("0" * 40, 0)
        with pytest.raises(NoScriptError):
            async with client.pipeline(transaction=False) as pipe:
                pipe.evalsha("0" * 40, 0)
                await pipe.execute()
    finally:
        await client.aclose()


async def test_check_connection_names_an_unreachable_server() -> None:
    async with EmbeddedServer() as server:
        config = server.config
    with pytest.raises(
        ConnectionFailedError, match=rf"cannot reach Redis at .*:{config.port}.*EmbeddedServer"
    ):
        await check_connection(config)


# -- waiting methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("waiter", waiters(120))
async def test_waiting_method_raises_once_the_budget_is_spent(waiter: Waiter) -> None:
    async with EmbeddedServer() as server:
        config = _with_budget(server)
        async with Controller("conn-test", config=config) as rush:
            keys = await rush.push_tasks([{"x": 1}])  # no worker: the wait cannot end by itself

            async def kill_soon() -> None:
                await anyio.sleep(0.3)  # let the waiter reach its wait first
                server.kill()

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_soon)
                # Far below the waiters' own timeout of 120 s.
                with anyio.fail_after(BOUND), pytest.raises(ConnectionFailedError) as info:
                    await waiter(rush, keys)
    assert str(server.port) in str(info.value)
    assert "reconnect" in str(info.value)


async def test_an_error_reply_to_a_plain_command_is_a_server_error(controller: Controller) -> None:
    """A key of the wrong type (hand-written data) raises ServerError, not redis' ResponseError."""
    await controller._store.client.set(controller._keys.running, b"not a set")
    with pytest.raises(ServerError, match="WRONGTYPE") as info:
        await controller.fetch_running_tasks()
    assert not isinstance(info.value, ResponseError)
    with pytest.raises(ServerError, match="WRONGTYPE"):
        await controller.status()  # a pipeline


async def test_commands_are_written_in_the_calling_task(
    config: RedisConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No asyncio.wait_for per write (it ran each write in a new task, one loop turn later)."""
    import redis.asyncio.connection

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a write went through asyncio.wait_for")

    client = create_client(config)
    try:
        await client.ping()  # connected before the patch: the fast path needs a connection
        monkeypatch.setattr(redis.asyncio.connection.asyncio, "wait_for", refuse)
        assert await client.set("rushpy-test-write", b"x" * 100)
        async with client.pipeline(transaction=False) as pipe:
            pipe.get("rushpy-test-write")
            pipe.delete("rushpy-test-write")
            assert await pipe.execute() == [b"x" * 100, 1]
    finally:
        monkeypatch.undo()
        await client.aclose()


async def test_a_write_to_a_server_that_went_away_is_a_connection_error() -> None:
    with EmbeddedServer() as server:
        client = create_client(server.config.model_copy(update={"reconnect_budget": 0.0}))
        await client.ping()
        server.stop()
        with pytest.raises(ConnectionFailedError):
            for _ in range(3):  # the first write may still land in the kernel's buffer
                await client.ping()
        await client.aclose()
