"""A server restarted without persistence: the controller says so instead of blaming the caller."""

from __future__ import annotations

import anyio
import pytest

from rushpy import Controller, EmbeddedServer, UnknownTaskError


async def test_wait_for_tasks_after_an_empty_restart_names_the_restart(network_id: str) -> None:
    with EmbeddedServer() as server:
        async with Controller(network_id, config=server.config) as rush:
            keys = await rush.push_tasks([{"x": i} for i in range(3)])
            # uptime_in_seconds is whole seconds: let the controller be older than the new server.
            await anyio.sleep(2.2)
            await anyio.to_thread.run_sync(server.restart)
            with pytest.raises(UnknownTaskError, match=r"restarted .* without the network's data") as info:
                await rush.wait_for_tasks(keys, timeout=5)
            assert "persistence" in str(info.value)
            assert "pass keys returned by push_tasks" not in str(info.value)


async def test_a_made_up_key_is_still_the_callers_mistake(controller: Controller) -> None:
    await controller.push_tasks([{"x": 1}])
    with pytest.raises(UnknownTaskError, match="pass keys returned by push_tasks"):
        await controller.wait_for_tasks(["no-such-key"], timeout=1)


async def test_a_made_up_key_on_an_empty_network_of_a_fresh_server(network_id: str) -> None:
    # A server started just before the controller opened did not restart since.
    with EmbeddedServer() as server:
        async with Controller(network_id, config=server.config) as rush:
            with pytest.raises(UnknownTaskError, match="pass keys returned by push_tasks"):
                await rush.wait_for_tasks(["no-such-key"], timeout=1)
