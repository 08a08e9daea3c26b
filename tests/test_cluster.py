"""Redis Cluster: networks on different shards, the whole life cycle, and primary failovers.

The suite starts its own cluster (3 primaries, 3 replicas; tests/cluster.py).
Each network lives in one hash slot, so its clients follow that slot's
primary; a failover moves the slot to the replica, and the clients follow.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
import redis.asyncio
from redis.crc import key_slot

from rushpy import Controller, RedisConfig
from rushpy.acl import acl_setuser
from rushpy.connection import check_connection, create_client
from rushpy.connection.cluster import ClusterTCPConnection, ClusterTLSConnection
from rushpy.errors import ConfigError, ConnectionFailedError, PermissionDeniedError
from rushpy.events import EventListener
from rushpy.keys import Keys
from tests.acl_scenario import run_life_cycle
from tests.cluster import LocalCluster
from tests.helpers import eventually
from tests.test_crash_restart import finished_list, worker_states


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as running:
        yield running


def _config(cluster: LocalCluster) -> RedisConfig:
    # A failover takes a few seconds (node timeout 1.5 s, then an election): ride it out.
    return RedisConfig.from_url(cluster.url, reconnect_budget=30)


def _slot(network_id: str) -> int:
    return int(key_slot(f"{{{network_id}}}".encode()))


def _networks_on_every_primary(cluster: LocalCluster) -> list[str]:
    """One network id per primary (by the slot of its hash tag)."""
    found: dict[int, str] = {}
    while len(found) < 3:
        network_id = f"cl-{uuid.uuid4().hex[:10]}"
        found.setdefault(cluster.owner_port(_slot(network_id)), network_id)
    return list(found.values())


def _network_with_a_replica(cluster: LocalCluster) -> str:
    """A network id whose slot's primary still has a replica to fail over to."""
    while True:
        network_id = f"cl-{uuid.uuid4().hex[:10]}"
        try:
            cluster.replica_of(cluster.owner_port(_slot(network_id)))
        except RuntimeError:
            continue
        return network_id


def test_cluster_urls_name_every_seed_and_round_trip() -> None:
    config = RedisConfig.from_url("rediss+cluster://app:pw@10.0.0.1:7000,10.0.0.2:7001/0?reconnect_budget=30")
    assert config.cluster_nodes == ("10.0.0.1:7000", "10.0.0.2:7001")
    assert (config.scheme, config.host, config.port, config.reconnect_budget) == (
        "rediss",
        "10.0.0.1",
        7000,
        30,
    )
    assert str(config) == "rediss+cluster://app@10.0.0.1:7000,10.0.0.2:7001/0"  # no password
    assert RedisConfig.from_url(config.to_url(include_password=True, include_options=True)) == config
    for bad, match in [
        ("redis+cluster:///0", "no nodes"),
        ("redis+cluster://10.0.0.1,10.0.0.2:7000/0", "invalid cluster node '10.0.0.1'"),
        ("redis+cluster://10.0.0.1:7000/2", "database 0 only"),
    ]:
        with pytest.raises(ConfigError, match=match):
            RedisConfig.from_url(bad)


async def test_a_dead_seed_first_in_the_url_is_skipped(cluster: LocalCluster) -> None:
    """Even a connection check (one attempt, no retries) tries the other seeds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # nothing listens there once the socket is closed
    url = cluster.url.replace("redis+cluster://", f"redis+cluster://127.0.0.1:{dead},", 1)
    config = RedisConfig.from_url(url)
    await check_connection(config)
    async with Controller(f"cl-{uuid.uuid4().hex[:10]}", config=config) as rush:
        [key] = await rush.push_tasks([{"x": 1}])
        assert await rush.fetch_task(key) is not None
        await rush.reset()


async def test_the_life_cycle_runs_on_networks_on_every_shard(cluster: LocalCluster) -> None:
    """Three networks, one per primary, at once: each follows its own slot's primary."""
    networks = _networks_on_every_primary(cluster)
    seen: dict[str, dict[str, object]] = {}

    async def one(network_id: str) -> None:
        seen[network_id] = await run_life_cycle(_config(cluster), network_id)

    async with anyio.create_task_group() as group:
        for network_id in networks:
            group.start_soon(one, network_id)
    for network_id in networks:
        assert seen[network_id]["finished_later"] == [0, 2, 4, 6, 8, 20, 22, 24]
        assert seen[network_id]["imported"][0] == seen[network_id]["imported"][1]  # type: ignore[index]


async def test_a_user_limited_to_one_network_runs_it_on_the_cluster_through_a_failover(
    cluster: LocalCluster,
) -> None:
    """The rules of ``rushpy acl``, set on every node: the life cycle, then a killed primary, refuse nothing.

    Finding the new owner after the kill needs ``CLUSTER SLOTS`` (a redirect
    from the old primary cannot come: it is gone), which the rules allow.
    """
    network_id = _network_with_a_replica(cluster)
    password = uuid.uuid4().hex
    for node in cluster.nodes:
        with cluster.client(node) as client:
            client.execute_command(*acl_setuser("study", network_id, password=password, cluster=True).split())
            client.execute_command("ACL", "LOG", "RESET")
    config = RedisConfig.from_url(cluster.url, username="study", password=password, reconnect_budget=30)
    seen = await run_life_cycle(config, network_id)
    assert seen["finished_later"] == [0, 2, 4, 6, 8, 20, 22, 24]
    primary = cluster.owner_port(_slot(network_id))
    replica = cluster.replica_of(primary)
    async with Controller(network_id, config=config, shutdown_timeout=10) as rush:
        await rush.start_local_workers(2, fun="tests.funcs:sleepy")
        keys = await rush.push_tasks([{"x": i, "duration": 0.02} for i in range(60)], max_retries=2)
        cluster.node_on(primary).kill()
        await anyio.to_thread.run_sync(lambda: _until_owner(cluster, network_id, replica.port))
        assert (await rush.wait_for_tasks(keys, timeout=120))["y"] == list(range(60))
        await rush.stop_workers()
        await rush.reset(workers=True)
    for node in (n for n in cluster.nodes if n.running):
        with cluster.client(node) as client:
            refused = {entry[b"object"] for entry in client.execute_command("ACL", "LOG")}
            assert refused <= {b"config|get"}, f"refused on node {node.port}: {refused}"


# A killed primary stays down (its replica serves its slots); each test picks a shard with a replica.
@pytest.mark.parametrize("how", ["manual failover", "primary killed"])
async def test_a_primary_failover_loses_no_task_and_workers_carry_on(cluster: LocalCluster, how: str) -> None:
    network_id = _network_with_a_replica(cluster)
    primary = cluster.owner_port(_slot(network_id))
    replica = cluster.replica_of(primary)
    async with Controller(network_id, config=_config(cluster), shutdown_timeout=10) as rush:
        ids = await rush.start_local_workers(
            2, fun="tests.funcs:sleepy", heartbeat_period=1, heartbeat_expire=20
        )
        await rush.wait_for_workers(2, timeout=60)
        keys = await rush.push_tasks([{"x": i, "duration": 0.02} for i in range(150)], max_retries=2)

        async def some_finished() -> bool:
            return await rush.n_finished_tasks() >= 20

        await eventually(some_finished, "tasks finish", timeout=60)
        if how == "manual failover":
            with cluster.client(replica) as client:
                client.execute_command("CLUSTER", "FAILOVER")
        else:
            cluster.node_on(primary).kill()
        await anyio.to_thread.run_sync(lambda: _until_owner(cluster, network_id, replica.port))
        table = await rush.wait_for_tasks(keys, timeout=120)
        assert table["y"] == list(range(150))
        assert sorted(await finished_list(rush)) == sorted(keys), "every task recorded exactly once"
        assert await worker_states(rush) == dict.fromkeys(ids, "running")
        more = await rush.push_tasks([{"x": i, "duration": 0} for i in range(20)])
        assert (await rush.wait_for_tasks(more, timeout=60))["y"] == list(range(20))
        if how == "manual failover":
            # Back again while the workers are idle, blocked in BLMOVE on the primary being
            # demoted: their moves are cut short (UNBLOCKED) and must move to the new primary.
            with cluster.client(cluster.node_on(primary)) as client:
                client.execute_command("CLUSTER", "FAILOVER")
            await anyio.to_thread.run_sync(lambda: _until_owner(cluster, network_id, primary))
            last = await rush.push_tasks([{"x": i, "duration": 0} for i in range(10)])
            assert (await rush.wait_for_tasks(last, timeout=60))["y"] == list(range(10))
            assert await worker_states(rush) == dict.fromkeys(ids, "running")
        await rush.stop_workers()
        await rush.reset(workers=True)


async def test_announcements_use_the_sharded_channel_of_the_networks_shard(cluster: LocalCluster) -> None:
    """On a cluster the scripts SPUBLISH: heard by SSUBSCRIBE on the slot's owner, never broadcast."""
    network_id = _networks_on_every_primary(cluster)[0]
    owner = cluster.node_on(cluster.owner_port(_slot(network_id)))
    elsewhere = next(n for n in cluster.nodes if n.running and n.port != owner.port)
    channel = Keys(network_id).results
    async with (
        redis.asyncio.Redis(port=owner.port) as on_owner,
        redis.asyncio.Redis(port=elsewhere.port) as on_other,
    ):
        sharded, plain = on_owner.pubsub(), on_other.pubsub()
        await sharded.ssubscribe(channel)
        await plain.subscribe(channel)
        async with Controller(network_id, config=_config(cluster), shutdown_timeout=10) as rush:
            await rush.start_local_workers(1, fun="tests.funcs:sleepy")
            keys = await rush.push_tasks([{"x": 1, "duration": 0}])
            await rush.wait_for_tasks(keys, timeout=60)
            await rush.stop_workers()
            await rush.reset(workers=True)
        heard = [m async for m in _messages(sharded)]
        assert [m["data"].split(b"\n")[0] for m in heard if m["type"] == "smessage"] == [
            b"F 0 " + keys[0].encode()
        ]
        assert [m for m in [m async for m in _messages(plain)] if m["type"] == "message"] == []
        await sharded.aclose()
        await plain.aclose()


async def _messages(pubsub: redis.asyncio.client.PubSub) -> AsyncIterator[dict[str, object]]:
    while (message := await pubsub.get_message(timeout=0.5)) is not None:
        yield message


async def test_a_network_resharded_to_another_primary_mid_study_loses_nothing(cluster: LocalCluster) -> None:
    """A host joins or leaves: the network's slot migrates, keys a few at a time, while tasks run.

    Commands meet ``ASK`` and ``TRYAGAIN`` during the migration and ``MOVED``
    after it; a subscription on the old owner is ended by that node (its slot
    left) and is made again on the new one.
    """
    network_id = _networks_on_every_primary(cluster)[0]
    slot = _slot(network_id)
    source = cluster.owner_port(slot)
    target = next(port for port in sorted(set(cluster.primaries().values())) if port != source)
    config = _config(cluster)
    async with Controller(network_id, config=config, shutdown_timeout=10) as rush:
        ids = await rush.start_local_workers(2, fun="tests.funcs:sleepy")
        await rush.wait_for_workers(2, timeout=60)
        keys = await rush.push_tasks([{"x": i, "duration": 0.01} for i in range(200)], max_retries=2)

        async def some_finished() -> bool:
            return await rush.n_finished_tasks() >= 20

        await eventually(some_finished, "tasks finish", timeout=60)
        async with EventListener(config, [rush._keys.events]) as events:
            seen = events.counter(rush._keys.events)
            moved = await anyio.to_thread.run_sync(lambda: cluster.move_slot(slot, target, pause=0.005))
            assert moved > 50, "the network's keys moved with its slot"
            assert cluster.owner_port(slot) == target
            async with redis.asyncio.Redis(port=target) as new_owner:
                # The listener was moved over too: it hears a message published on the new owner.
                async def heard() -> bool:
                    await new_owner.spublish(rush._keys.events, b"ping")
                    return events.counter(rush._keys.events) != seen

                await eventually(heard, "the subscription follows the slot", timeout=30)
        table = await rush.wait_for_tasks(keys, timeout=120)
        assert table["y"] == list(range(200))
        assert sorted(await finished_list(rush)) == sorted(keys), "every task recorded exactly once"
        assert await worker_states(rush) == dict.fromkeys(ids, "running")
        more = await rush.push_tasks([{"x": i, "duration": 0} for i in range(20)])
        assert (await rush.wait_for_tasks(more, timeout=60))["y"] == list(range(20))
        await rush.stop_workers()
        await rush.reset(workers=True)


async def test_the_first_subscription_follows_a_redirect_at_once(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A seed that does not own the slot redirects SSUBSCRIBE: followed without a pause or a retry."""
    network_id = _networks_on_every_primary(cluster)[0]
    owner = cluster.owner_port(_slot(network_id))
    seeds = sorted((n.port for n in cluster.nodes if n.running), key=lambda port: port == owner)
    config = RedisConfig.from_url("redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in seeds) + "/0")
    caplog.set_level(logging.DEBUG, logger="rushpy.events")
    async with EventListener(config, [Keys(network_id).events]) as events:
        assert events.connected
    assert "subscription not made yet" not in caplog.text


async def test_a_first_subscription_rides_out_an_unreachable_owner_within_the_budget_only() -> None:
    """No node answers: the listener tries again with backoff, then gives up after the reconnect budget."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = RedisConfig.from_url(f"redis+cluster://127.0.0.1:{port}/0?reconnect_budget=1")
    started = time.monotonic()
    with anyio.fail_after(20), pytest.raises(ConnectionFailedError, match=f"127.0.0.1:{port}"):
        async with EventListener(config, [Keys("nowhere").events]):
            pass
    assert time.monotonic() - started >= 1  # it did not give up at the first refusal


async def test_when_no_seed_answers_the_seeds_are_tried_in_turn() -> None:
    """After a failover no seed names the owner (all down): connections try each seed in turn."""
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    client = create_client(
        RedisConfig.from_url(f"redis+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/0")
    )
    try:
        routing = client.connection_pool.connection_kwargs["routing"]
        routing.slot = 42
        tried = [await routing.address() for _ in range(3)]
        assert tried == [("127.0.0.1", ports[0]), ("127.0.0.1", ports[1]), ("127.0.0.1", ports[0])]
    finally:
        await client.aclose()


async def test_a_user_without_the_sharded_commands_is_told_to_add_cluster(cluster: LocalCluster) -> None:
    """Rules made without ``--cluster`` lack SSUBSCRIBE: refused at once, and the error names the fix."""
    network_id = _networks_on_every_primary(cluster)[0]
    password = uuid.uuid4().hex
    for node in (n for n in cluster.nodes if n.running):
        with cluster.client(node) as client:
            client.execute_command(*acl_setuser("plain", network_id, password=password).split())
    config = RedisConfig.from_url(cluster.url, username="plain", password=password, reconnect_budget=30)
    with anyio.fail_after(15), pytest.raises(PermissionDeniedError, match="--cluster") as caught:
        async with EventListener(config, [Keys(network_id).events]):
            pass
    assert password not in str(caught.value)


@pytest.mark.parametrize("endpoint", ["unknown-endpoint", "hostname"])
async def test_nodes_that_name_no_host_are_reached_where_they_were_asked(
    cluster: LocalCluster, endpoint: str
) -> None:
    """``cluster-preferred-endpoint-type``: ``unknown-endpoint`` gives no host in ``MOVED`` and
    ``CLUSTER SLOTS`` ("where you reached me"); ``hostname`` with none announced gives ``?``."""
    running = [n for n in cluster.nodes if n.running]
    for node in running:
        with cluster.client(node) as client:
            client.execute_command("CONFIG", "SET", "cluster-preferred-endpoint-type", endpoint)
    try:
        network_id = _networks_on_every_primary(cluster)[0]
        owner = cluster.owner_port(_slot(network_id))
        seeds = sorted((n.port for n in running), key=lambda port: port == owner)  # redirected first
        config = RedisConfig.from_url("redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in seeds) + "/0")
        async with Controller(network_id, config=config) as rush:
            [key] = await rush.push_tasks([{"x": 1}])
            assert (await rush.fetch_task(key) or {})["state"] == "queued"
            await rush.reset()
        client = create_client(config)
        try:
            routing = client.connection_pool.connection_kwargs["routing"]
            routing.slot = _slot(network_id)  # as after a failover: ask the seeds
            assert await routing.address() == ("127.0.0.1", owner)
        finally:
            await client.aclose()
    finally:
        for node in running:
            with cluster.client(node) as client:
                client.execute_command("CONFIG", "SET", "cluster-preferred-endpoint-type", "ip")


def _until_owner(cluster: LocalCluster, network_id: str, port: int) -> None:
    """Wait until the replica on ``port`` serves the network's slot and the cluster is healthy."""
    deadline = time.monotonic() + 60
    while cluster.owner_port(_slot(network_id)) != port:
        assert time.monotonic() < deadline, f"no failover to {port} within 60 s"
        time.sleep(0.05)
    cluster.wait_healthy(timeout=60)


def test_a_tls_cluster_url_makes_tls_connections_that_follow_the_slot() -> None:
    """``rediss+cluster://``: each connection is a TLS one with the same routing (no server needed)."""
    config = RedisConfig.from_url("rediss+cluster://127.0.0.1:7000,127.0.0.1:7001/0", ssl_cert_reqs="none")
    pool = create_client(config).connection_pool
    connection = pool.make_connection()
    assert isinstance(connection, ClusterTLSConnection)
    assert connection.routing.seeds == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    plain = create_client(RedisConfig.from_url("redis+cluster://127.0.0.1:7000/0")).connection_pool
    assert type(plain.make_connection()) is ClusterTCPConnection


async def test_during_a_slot_migration_ask_is_retried_on_the_owner_until_moved_names_the_new_one(
    cluster: LocalCluster,
) -> None:
    """A key already migrated answers ASK: the client waits on the owner (never bouncing to the
    importing node, which would answer MOVED back), then follows MOVED once the slot has moved."""
    network_id = _networks_on_every_primary(cluster)[0]
    slot = _slot(network_id)
    source = cluster.owner_port(slot)
    target = next(port for port in sorted(set(cluster.primaries().values())) if port != source)
    key = f"rush:{{{network_id}}}:probe"
    config = RedisConfig.from_url(f"redis+cluster://127.0.0.1:{source}/0?reconnect_budget=1")
    client = create_client(config)
    try:
        await client.set(key, b"1")  # learns the owner
        source_node, target_node = cluster.node_on(source), cluster.node_on(target)
        with cluster.client(target_node) as t, cluster.client(source_node) as s:
            t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(source_node))
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(target_node))
            s.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", key)
            before = int(t.info("stats")["total_connections_received"])
        with pytest.raises(ConnectionFailedError):
            await client.get(key)  # ASK until the budget runs out: the migration never ends here
        with cluster.client(target_node) as t:
            # One connection more: this look; the client never went there.
            assert int(t.info("stats")["total_connections_received"]) == before + 1
        routing = client.connection_pool.connection_kwargs["routing"]
        others = [n for n in cluster.nodes if n.running and n not in (source_node, target_node)]
        for node in (target_node, source_node, *others):  # as resharding ends a migration
            with cluster.client(node) as c:
                if c.execute_command("ROLE")[0] in (b"master", "master"):
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", cluster.node_id(target_node))
        assert await client.get(key) == b"1"  # MOVED: the new owner
        assert routing.owner == ("127.0.0.1", target)
        await client.delete(key)
    finally:
        await client.aclose()
        cluster.wait_healthy(timeout=60)
