"""Least privilege: a user limited to one network runs its whole life cycle and nothing else."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio
import redis.exceptions

from rushpy import Controller, EmbeddedServer, PermissionDeniedError, RedisConfig, ServerError
from rushpy.acl import ACL_CLUSTER_COMMANDS, ACL_COMMANDS, acl_rules, acl_setuser
from rushpy.errors import ConfigError
from tests.acl_scenario import run_life_cycle
from tests.helpers import raw_client

PASSWORD = "s3cret-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def acl_server() -> Iterator[EmbeddedServer]:
    """A server of this module's own: its users are not the rest of the suite's business."""
    with EmbeddedServer() as srv:
        yield srv


@pytest.fixture
async def admin(acl_server: EmbeddedServer) -> AsyncIterator[redis.asyncio.Redis]:
    async with raw_client(acl_server.config) as client:
        yield client


async def _limited(admin: redis.asyncio.Redis, acl_server: EmbeddedServer, network_id: str) -> RedisConfig:
    """A user limited to ``network_id``, created from the rules as printed, and its config."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    command = acl_setuser(user, network_id, password=PASSWORD)
    assert await admin.execute_command(*command.split()) in (b"OK", "OK", True)
    base = acl_server.config
    return RedisConfig(host=base.host, port=base.port, username=user, password=PASSWORD)


def test_rules_limit_keys_and_channels_to_the_network_and_hash_the_password() -> None:
    rules = acl_rules("study-1", prefix="lab", password=PASSWORD)
    assert rules[:2] == ["reset", "on"]
    assert "~lab:{study-1}:*" in rules and "&lab:{study-1}:*" in rules and "-@all" in rules
    assert "#" + hashlib.sha256(PASSWORD.encode()).hexdigest() in rules
    assert all(PASSWORD not in rule for rule in rules)
    assert [r[1:] for r in rules if r.startswith("+")] == list(ACL_COMMANDS)
    assert not {"+config|get", "+info", "+keys", "+scan", "+flushall", "+acl"} & set(rules)
    no_password = acl_rules("study-1")
    assert not [r for r in no_password if r[0] in "#>" or r == "nopass"]  # cannot log in until one is set
    assert acl_setuser("alice", "study-1", aclfile=True).startswith("user alice on ~rush:{study-1}:* ")
    # On a cluster the sharded pub/sub commands join (a Redis 6 server knows none of them).
    on_cluster = acl_rules("study-1", prefix="lab", password=PASSWORD, cluster=True)
    assert on_cluster == rules + [f"+{command}" for command in ACL_CLUSTER_COMMANDS]
    assert not {"+spublish", "+ssubscribe"} & set(rules)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: acl_rules("bad{id}"), "invalid network id"),
        (lambda: acl_rules("ok", prefix="a b"), "invalid key prefix"),
        (lambda: acl_rules("ok", password=""), "password is empty"),
        (lambda: acl_setuser("two words", "ok"), "invalid ACL user name"),
    ],
)
def test_bad_input_is_refused_by_name(call: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call()  # type: ignore[operator]


async def test_a_limited_user_runs_the_whole_life_cycle(
    admin: redis.asyncio.Redis, acl_server: EmbeddedServer
) -> None:
    network_id = f"acl-{uuid.uuid4().hex[:10]}"
    config = await _limited(admin, acl_server, network_id)
    await admin.execute_command("ACL", "LOG", "RESET")
    seen = await run_life_cycle(config, network_id)
    refused = {entry["object"] for entry in await admin.acl_log()}
    # Nothing was refused along the way but the eviction-policy check, which is skipped for this user.
    assert refused <= {"config|get"}
    assert seen["finished"] == [0, 2, 4, 6, 8]
    assert seen["finished_later"] == [0, 2, 4, 6, 8, 20, 22, 24] and seen["large"] == [200_000]
    assert seen["failed"] == 5 and seen["after_reset"] == 0
    before, after = seen["imported"]
    assert before == after > 10
    assert await admin.exists(f"rush:{{{network_id}}}:tasks") == 0  # reset at the end, as the user


async def test_a_limited_user_cannot_touch_another_network(
    admin: redis.asyncio.Redis, acl_server: EmbeddedServer
) -> None:
    mine, other = f"acl-{uuid.uuid4().hex[:10]}", f"acl-{uuid.uuid4().hex[:10]}"
    async with Controller(other, config=acl_server.config) as owner:
        [key] = await owner.push_tasks([{"x": 1}])
        config = await _limited(admin, acl_server, mine)
        with pytest.raises(ServerError, match="rushpy acl NETWORK --user USER") as caught:
            async with Controller(other, config=config) as intruder:
                await intruder.fetch_task(key)
        assert PASSWORD not in str(caught.value)
        async with raw_client(config) as raw:
            for attempt in (
                raw.get(f"rush:{{{other}}}:tasks"),
                raw.set(f"rush:{{{other}}}:terminate", b"1"),
                raw.delete(f"rush:{{{other}}}:queued"),
                raw.publish(f"rush:{{{other}}}:events", b"R"),
                raw.config_get("requirepass"),
                raw.keys("*"),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await attempt
            pubsub = raw.pubsub()
            with pytest.raises(redis.exceptions.NoPermissionError):
                await pubsub.subscribe(f"rush:{{{other}}}:results")
                await pubsub.get_message(timeout=1)
            await pubsub.aclose()
        assert (await owner.fetch_task(key) or {})["state"] == "queued"  # untouched
        await owner.reset()


def _cli(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RUSHPY_ACL_PASSWORD"}
    env |= {"RUSHPY_ACL_PASSWORD": password} if password else {}
    command = [sys.executable, "-m", "rushpy", "acl", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_cli_prints_the_rules_with_the_password_hashed() -> None:
    done = _cli("study-1", "--user", "alice", password=PASSWORD)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == acl_setuser("alice", "study-1", password=PASSWORD)
    assert PASSWORD not in done.stdout + done.stderr
    bare = _cli("study-1", "--user", "alice", "--aclfile")
    assert bare.returncode == 0 and bare.stdout.strip() == acl_setuser("alice", "study-1", aclfile=True)
    assert "RUSHPY_ACL_PASSWORD" in bare.stderr  # says how to add a password
    on_cluster = _cli("study-1", "--cluster")
    assert on_cluster.returncode == 0
    assert on_cluster.stdout.strip() == acl_setuser("rushpy", "study-1", cluster=True)
    bad = _cli("bad{id}")
    assert bad.returncode != 0 and "invalid network id" in bad.stderr


async def test_a_command_a_script_may_not_run_names_the_rules_too(
    admin: redis.asyncio.Redis, acl_server: EmbeddedServer
) -> None:
    """A script's command refused to the user is worded differently by the server; same error, same hint."""
    network_id = f"acl-{uuid.uuid4().hex[:10]}"
    user = f"u-{uuid.uuid4().hex[:8]}"
    rules = [rule for rule in acl_setuser(user, network_id, password=PASSWORD).split() if rule != "+hset"]
    await admin.execute_command(*rules)
    base = acl_server.config
    config = RedisConfig(host=base.host, port=base.port, username=user, password=PASSWORD)
    async with Controller(network_id, config=config) as rush:
        with pytest.raises(PermissionDeniedError, match="rushpy acl NETWORK --user USER"):
            await rush.push_tasks([{"x": 1}])  # create.lua writes the task with HSET
