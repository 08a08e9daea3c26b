"""The pub/sub EventListener: counters, waiting, reconnection, outages and ownership."""

from __future__ import annotations

import logging

import anyio
import pytest

from rushpy import ConnectionFailedError, EmbeddedServer, RedisConfig
from rushpy.connection import create_client
from rushpy.events import EventListener
from tests.helpers import eventually

CHANNEL = "rushpy-test-events"


async def _publish(config: RedisConfig, channel: str, payload: bytes) -> None:
    client = create_client(config)
    try:
        await client.publish(channel, payload)
    finally:
        await client.aclose()


async def test_message_bumps_counter_and_wakes_waiter(config: RedisConfig, network_id: str) -> None:
    channel = f"{CHANNEL}-{network_id}"
    received: list[tuple[str, bytes]] = []
    async with EventListener(config, [channel], lambda c, d: received.append((c, d))) as events:
        assert events.connected
        seen = events.counter(channel)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_publish, config, channel, b"hello")
            with anyio.fail_after(30):
                assert await events.wait([channel], [seen], None)
        assert events.counter(channel) == seen + 1
        assert received == [(channel, b"hello")]
        # Already moved: returns at once, even with a zero timeout.
        assert await events.wait([channel], [seen], 0)


async def test_wait_times_out(config: RedisConfig, network_id: str) -> None:
    channel = f"{CHANNEL}-{network_id}"
    async with EventListener(config, [channel]) as events:
        seen = events.counter(channel)
        assert not await events.wait([channel], [seen], 0)
        assert not await events.wait([channel], [seen], 0.05)


async def test_faulty_callback_is_logged_and_waiters_still_wake(
    config: RedisConfig, network_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel = f"{CHANNEL}-{network_id}"

    def broken(channel: str, data: bytes) -> None:
        raise RuntimeError("callback bug")

    caplog.set_level(logging.ERROR)
    async with EventListener(config, [channel], broken) as events:
        for payload in (b"1", b"2"):
            seen = events.counter(channel)
            await _publish(config, channel, payload)
            with anyio.fail_after(30):
                assert await events.wait([channel], [seen], None)
        assert events.connected
    assert "event callback failed" in caplog.text


async def test_dropped_subscription_is_noticed_and_bumps_counters(
    config: RedisConfig, network_id: str
) -> None:
    # A message published while the subscription is down is missed; the listener
    # must say so (bump), not reconnect silently.
    channel = f"{CHANNEL}-{network_id}"
    async with EventListener(config, [channel]) as events:
        seen = events.counter(channel)
        killer = create_client(config)
        try:
            await killer.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        finally:
            await killer.aclose()
        with anyio.fail_after(30):
            assert await events.wait([channel], [seen], None)
        await eventually(lambda: events.connected, "the subscription is restored")
        # And it still receives messages after the reconnection.
        seen = events.counter(channel)
        await _publish(config, channel, b"after")
        with anyio.fail_after(30):
            assert await events.wait([channel], [seen], None)


async def test_outage_past_the_budget_raises_connection_failed() -> None:
    async with EmbeddedServer(password="secret-pw") as server:
        config = server.config.model_copy(update={"reconnect_budget": 0.5})
        async with EventListener(config, [CHANNEL]) as events:
            seen = events.counter(CHANNEL)
            server.kill()
            with anyio.fail_after(20), pytest.raises(ConnectionFailedError) as info:
                await events.wait([CHANNEL], [seen], 120)
            assert not events.connected
            # Still down: a new wait raises at once instead of sleeping its timeout.
            with anyio.fail_after(20), pytest.raises(ConnectionFailedError):
                await events.wait([CHANNEL], [events.counter(CHANNEL)], 120)
    message = str(info.value)
    assert f"127.0.0.1:{server.port}" in message
    assert "reconnect budget of 0.5 s" in message
    assert "secret-pw" not in message


async def test_restart_within_the_budget_wakes_waiters_without_error() -> None:
    async with EmbeddedServer() as server:
        config = server.config.model_copy(update={"reconnect_budget": 60})
        async with EventListener(config, [CHANNEL]) as events:
            seen = events.counter(CHANNEL)
            await anyio.to_thread.run_sync(server.restart)
            with anyio.fail_after(30):
                assert await events.wait([CHANNEL], [seen], None)
            await eventually(lambda: events.connected, "the subscription is restored")


async def test_unreachable_server_fails_at_start() -> None:
    async with EmbeddedServer() as server:
        config = server.config
    with pytest.raises(ConnectionFailedError, match=str(config.port)):
        async with EventListener(config, [CHANNEL]):
            pytest.fail("entered without a server")


# -- ownership ---------------------------------------------------------------------------------


async def test_body_error_propagates_unwrapped(config: RedisConfig) -> None:
    with pytest.raises(ValueError, match="from the body"):
        async with EventListener(config, [CHANNEL]):
            raise ValueError("from the body")


async def test_cancellation_of_the_owner_is_not_swallowed(config: RedisConfig) -> None:
    with anyio.move_on_after(0.2) as scope:
        async with EventListener(config, [CHANNEL]) as events:
            await events.wait([CHANNEL], [events.counter(CHANNEL)], None)
    assert scope.cancelled_caught


async def test_start_in_an_owners_task_group_and_close(config: RedisConfig, network_id: str) -> None:
    channel = f"{CHANNEL}-{network_id}"
    events = EventListener(config, [channel])
    async with anyio.create_task_group() as tg:
        await events.start(tg)
        assert events.connected
        with pytest.raises(RuntimeError, match="twice"):
            await events.start(tg)
        seen = events.counter(channel)
        await _publish(config, channel, b"x")
        with anyio.fail_after(30):
            assert await events.wait([channel], [seen], None)
        await events.close()
        assert not events.connected
        await events.close()  # idempotent
    # The group ended by itself: close() stopped the reading task.


async def test_close_without_start(config: RedisConfig) -> None:
    events = EventListener(config, [CHANNEL])
    await events.close()
    assert not events.connected


async def test_a_channel_subscribed_while_running_is_counted_from_its_confirmation(
    config: RedisConfig, network_id: str
) -> None:
    """subscribe() returns once the server confirmed: a message published right after is never missed."""
    first, later = f"{CHANNEL}-{network_id}", f"{CHANNEL}-{network_id}-later"
    received: list[tuple[str, bytes]] = []
    async with EventListener(config, [first], lambda c, d: received.append((c, d))) as events:
        assert not events.listens_to(later)
        for _ in range(20):  # each round: a fresh channel, a message right after
            name = f"{later}-{len(received)}"
            await events.subscribe(name)
            await events.subscribe(name)  # again: nothing to do
            seen = events.counter(name)
            await _publish(config, name, b"x")
            with anyio.fail_after(10):
                assert await events.wait([name], [seen], None)
        assert events.listens_to(later + "-0")
        assert [d for _, d in received] == [b"x"] * 20


async def test_a_channel_subscribed_during_an_outage_joins_the_reconnection() -> None:
    async with EmbeddedServer() as server:
        config = server.config.model_copy(update={"reconnect_budget": 60})
        async with EventListener(config, [CHANNEL]) as events:
            server.kill()
            await eventually(lambda: not events.connected, "the outage is noticed")
            await events.subscribe("rushpy-test-added")  # returns at once: nothing to confirm now
            await anyio.to_thread.run_sync(server.start)
            await eventually(lambda: events.connected, "the subscription is restored")
            seen = events.counter("rushpy-test-added")
            await _publish(config, "rushpy-test-added", b"after")
            with anyio.fail_after(30):
                assert await events.wait(["rushpy-test-added"], [seen], None)


async def test_a_subscription_the_server_does_not_confirm_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal

    import rushpy.events

    monkeypatch.setattr(rushpy.events, "SUBSCRIBE_TIMEOUT", 0.3)
    async with EmbeddedServer() as server, EventListener(server.config, [CHANNEL]) as events:
        os.kill(server.pid or 0, signal.SIGSTOP)
        try:
            with anyio.fail_after(20), pytest.raises(ConnectionFailedError, match="did not confirm"):
                await events.subscribe("rushpy-test-unconfirmed")
        finally:
            os.kill(server.pid or 0, signal.SIGCONT)


async def test_a_subscription_whose_command_cannot_be_sent_is_connection_failed(
    config: RedisConfig, network_id: str
) -> None:
    """The connection breaks as SUBSCRIBE goes out: ConnectionFailedError naming the server, no raw error."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    async with EventListener(config, [f"{CHANNEL}-{network_id}"]) as events:
        pubsub = events._subscription.pubsub
        assert pubsub is not None

        async def broken(*channels: str) -> None:
            raise RedisConnectionError("Connection reset by peer")

        pubsub.subscribe = broken  # type: ignore[method-assign]
        with pytest.raises(ConnectionFailedError, match=f"127.0.0.1:{config.port}"):
            await events.subscribe(f"{CHANNEL}-{network_id}-broken")
