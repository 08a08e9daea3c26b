"""Key names: grammar, hash tag, prefix, validation, and the SCAN pattern on a real network."""

from __future__ import annotations

import fnmatch
import re
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from rushpy import ConfigError, Controller, RedisConfig
from rushpy.connection import create_client
from rushpy.keys import DEFAULT_PREFIX, Keys
from tests.funcs import fail_on_odd

KEY_GRAMMAR = re.compile(r"^(?P<prefix>[^:{}]+):\{(?P<net>[^{}]+)\}:(?P<kind>[a-z_]+)(:[^{}]+)?$")


def every_key(keys: Keys, worker_id: str = "w-1", task_key: str = "t-1") -> list[str]:
    """Every key name the Keys object can build."""
    return [
        keys.queued,
        keys.running,
        keys.finished,
        keys.failed,
        keys.failed_log,
        keys.all_tasks,
        keys.task(task_key),
        *keys.tasks(["t-2", "t-3"]),
        keys.workers,
        keys.running_workers,
        keys.terminated_workers,
        keys.killed_workers,
        keys.lost_workers,
        keys.worker(worker_id),
        keys.priority_queue(worker_id),
        keys.pending(worker_id),
        keys.worker_running(worker_id),
        keys.terminate_signal(worker_id),
        keys.kill_signal(worker_id),
        keys.log(worker_id),
        keys.start_args,
        keys.terminate_all,
        keys.events,
        keys.results,
        keys.worker_events,
    ]


def test_default_prefix_and_base() -> None:
    keys = Keys("net-1")
    assert DEFAULT_PREFIX == "rush"
    assert keys.prefix == "rush"
    assert keys.base == "rush:{net-1}"
    assert keys.pattern == "rush:{net-1}:*"


def test_grammar() -> None:
    keys = Keys("net-1")
    assert keys.queued == "rush:{net-1}:queued"
    assert keys.running == "rush:{net-1}:running"
    assert keys.finished == "rush:{net-1}:finished"
    assert keys.failed == "rush:{net-1}:failed"
    assert keys.failed_log == "rush:{net-1}:failed_log"
    assert keys.all_tasks == "rush:{net-1}:tasks"
    assert keys.task("abc") == "rush:{net-1}:task:abc"
    assert keys.tasks(["a", "b"]) == ["rush:{net-1}:task:a", "rush:{net-1}:task:b"]
    assert keys.tasks([]) == []
    assert keys.workers == "rush:{net-1}:workers"
    assert keys.running_workers == "rush:{net-1}:running_workers"
    assert keys.worker("w1") == "rush:{net-1}:worker:w1"
    assert keys.priority_queue("w1") == "rush:{net-1}:worker:w1:queued"
    assert keys.pending("w1") == "rush:{net-1}:worker:w1:pending"
    assert keys.worker_running("w1") == "rush:{net-1}:worker:w1:running"
    assert keys.terminate_signal("w1") == "rush:{net-1}:worker:w1:terminate"
    assert keys.kill_signal("w1") == "rush:{net-1}:worker:w1:kill"
    assert keys.log("w1") == "rush:{net-1}:worker:w1:log"
    assert keys.start_args == "rush:{net-1}:start_args"
    assert keys.terminate_all == "rush:{net-1}:terminate"
    assert keys.events == "rush:{net-1}:events"
    assert keys.worker_events == "rush:{net-1}:worker_events"


def test_every_key_follows_grammar_and_shares_one_slot() -> None:
    keys = Keys("Net_2.x-y")
    names = every_key(keys)
    assert len(set(names)) == len(names), "two facets share a key name"
    slots = {key_slot(name.encode()) for name in names}
    assert slots == {key_slot(b"Net_2.x-y")}
    for name in names:
        match = KEY_GRAMMAR.match(name)
        assert match is not None, name
        assert match["prefix"] == "rush"
        assert match["net"] == "Net_2.x-y"
        assert fnmatch.fnmatchcase(name, keys.pattern), name


def test_custom_prefix() -> None:
    keys = Keys("net", prefix="myapp")
    assert keys.base == "myapp:{net}"
    assert keys.pattern == "myapp:{net}:*"
    for name in every_key(keys):
        assert name.startswith("myapp:{net}:")
        assert fnmatch.fnmatchcase(name, keys.pattern)
        assert not fnmatch.fnmatchcase(name, Keys("net").pattern)


def test_pattern_does_not_match_other_networks() -> None:
    ours = Keys("net")
    for other in (Keys("net2"), Keys("ne"), Keys("net.a"), Keys("xnet"), Keys("net", prefix="other")):
        for name in every_key(other):
            assert not fnmatch.fnmatchcase(name, ours.pattern), name


def test_keys_are_frozen_and_hashable() -> None:
    keys = Keys("net")
    with pytest.raises(AttributeError):
        keys.network_id = "other"  # type: ignore[misc]
    assert Keys("net") == keys
    assert hash(Keys("net")) == hash(keys)
    assert Keys("net") != Keys("net", prefix="p")


@pytest.mark.parametrize("network_id", ["", "a{b}", "a}", "{", "a:b", "a b", "-x", "x" * 129, "net\n"])
def test_invalid_network_id(network_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        Keys(network_id)
    assert "network id" in str(info.value)
    assert repr(network_id) in str(info.value)


@pytest.mark.parametrize("prefix", ["", "a:b", "{p}", "p p"])
def test_invalid_prefix(prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        Keys("net", prefix=prefix)
    assert "key prefix" in str(info.value)
    assert repr(prefix) in str(info.value)


def test_non_string_network_id() -> None:
    with pytest.raises(ConfigError, match="network id"):
        Keys(None)  # type: ignore[arg-type]


# -- on a real network --------------------------------------------------------------------


@pytest.fixture
async def redis_client(config: RedisConfig) -> AsyncIterator[Redis]:
    client = create_client(config)
    try:
        yield client
    finally:
        await client.aclose()


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name


async def _keys_mentioning(client: Redis, network_id: str) -> set[str]:
    # Every key that carries the network id anywhere, whatever its shape.
    return {_text(k) for k in await client.keys(f"*{network_id}*")}


async def _both_views(client: Redis, network_id: str, pattern: str) -> tuple[set[str], set[str]]:
    """Keys mentioning the id and keys matching the pattern, read atomically (MULTI)."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.keys(f"*{network_id}*")
        pipe.keys(pattern)
        mentioning, matching = await pipe.execute()
    return {k.decode() for k in mentioning}, {k.decode() for k in matching}


async def _run_network(rush: Controller) -> tuple[list[str], list[str]]:
    """Exercise every part of a network; return (worker ids, task keys)."""
    worker_ids = await rush.start_local_workers(1, fun=fail_on_odd)
    await rush.wait_for_workers(1, timeout=30)
    keys = await rush.push_tasks([{"x": i} for i in range(6)], [{"note": i} for i in range(6)])
    keys += await rush.push_priority_tasks([{"x": 10}, {"x": 11}], priority=[worker_ids[0], None])
    keys += await rush.push_finished_tasks([{"x": 100}], [{"y": 100}])
    keys += await rush.push_failed_tasks([{"x": 101}], ["broken"])
    table = await rush.wait_for_tasks(keys, timeout=30)
    assert set(table["state"]) == {"finished", "failed"}
    return worker_ids, keys


async def test_every_key_of_a_network_matches_pattern(
    controller: Controller, redis_client: Redis, network_id: str
) -> None:
    keys = Keys(network_id)
    worker_ids, task_keys = await _run_network(controller)
    # The queue drains into a few keys; leave some queued work for the queue keys.
    await controller.push_tasks([{"x": 0}])
    await controller.stop_workers(type="terminate")

    found, matched = await _both_views(redis_client, network_id, keys.pattern)
    assert keys.task(task_keys[-1]) in found  # a failed task keeps its hash
    assert keys.rows in found  # finished tasks are rows of one hash
    assert keys.worker(worker_ids[0]) in found
    assert keys.finished in found
    assert keys.failed in found
    assert keys.failed_log in found
    for name in found:
        assert name.startswith(f"rush:{{{network_id}}}:"), name
        assert KEY_GRAMMAR.match(name), name
        assert key_slot(name.encode()) == key_slot(network_id.encode()), name

    # The server's glob matching with the pattern finds exactly the network's keys.
    assert matched == found


async def test_custom_prefix_network_keys(config: RedisConfig, redis_client: Redis) -> None:
    network_id = f"test-{uuid.uuid4().hex[:12]}"
    keys = Keys(network_id, prefix="myapp")
    async with Controller(network_id, config=config, prefix="myapp", shutdown_timeout=5) as rush:
        try:
            await _run_network(rush)
            found, matched = await _both_views(redis_client, network_id, keys.pattern)
            assert found
            assert all(name.startswith(f"myapp:{{{network_id}}}:") for name in found), found
            assert matched == found
        finally:
            await rush.reset(workers=True)
    # reset() removes the whole network.
    assert await _keys_mentioning(redis_client, network_id) == set()


async def test_networks_do_not_share_keys(config: RedisConfig, redis_client: Redis) -> None:
    base = f"test-{uuid.uuid4().hex[:12]}"
    ids = [base, base + "x", base + ".a"]
    controllers = [Controller(nid, config=config, shutdown_timeout=5) for nid in ids]
    async with controllers[0] as a, controllers[1] as b, controllers[2] as c:
        try:
            for rush in (a, b, c):
                await rush.push_tasks([{"x": 1}, {"x": 2}])
            matched = {_text(k) for k in await redis_client.keys(Keys(base).pattern)}
            assert matched
            assert all(name.startswith(f"rush:{{{base}}}:") for name in matched)
            assert await a.n_queued_tasks() == 2
        finally:
            for rush in (a, b, c):
                await rush.reset(workers=True)


# -- task keys (issue 11: memory per task) ----------------------------------------------------


def test_task_keys_are_16_url_safe_characters_of_12_random_bytes() -> None:
    from rushpy.keys import TASK_KEY_BYTES, TASK_KEY_CHARS, key_from_bytes, key_to_bytes, new_task_keys

    keys = new_task_keys(4000)
    assert TASK_KEY_CHARS == 16
    assert len(set(keys)) == 4000
    for key in keys:
        # URL- and shell-safe, no padding, and exactly the 96 random bits.
        assert re.fullmatch(r"[A-Za-z0-9_.]{16}", key), key
        assert len(key_to_bytes(key)) == TASK_KEY_BYTES
        assert key_from_bytes(key_to_bytes(key)) == key
    # 4,000 keys have ~250 that base64url would start with "-": none starts so here.
    assert key_from_bytes(bytes([0xF8]) + bytes(11)).startswith(".")
    assert new_task_keys(0) == []


async def test_pushed_tasks_get_short_keys(config: RedisConfig) -> None:
    async with Controller(f"test-{uuid.uuid4().hex[:12]}", config=config) as rush:
        keys = await rush.push_tasks([{"x": i} for i in range(3)])
        assert all(re.fullmatch(r"[A-Za-z0-9_.]{16}", key) for key in keys), keys
        assert (await rush.fetch_tasks(keys))["key"] == keys
        await rush.reset()
