"""A local Redis Cluster for the tests: 3 primaries with one replica each, on loopback.

Six ``redis-server --cluster-enabled yes`` processes (rushpy's
:class:`~rushpy.EmbeddedServer`, each with its own data directory and free
port) joined by ``redis-cli --cluster create``. A short node timeout makes an
automatic failover take a few seconds.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import redis

from rushpy import EmbeddedServer

__all__ = ["LocalCluster"]

NODE_TIMEOUT_MS = 1500


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """``n`` ports free with their cluster-bus port (+10000), below 55536 as Redis requires."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randrange(20000, 45000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


@dataclass
class LocalCluster:
    """Six nodes; use as a context manager. ``url`` is the ``redis+cluster://`` URL of all of them."""

    nodes: list[EmbeddedServer] = field(default_factory=list)
    _stack: ExitStack = field(default_factory=ExitStack)

    def __enter__(self) -> LocalCluster:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("the cluster tests need redis-cli (Debian: redis-tools; .ci/run installs it)")
        try:
            for port in _free_ports(6):
                server = EmbeddedServer(
                    port=port,
                    extra_args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(NODE_TIMEOUT_MS),
                        # Replicas sync at once (the default waits 5 s): a replica that never
                        # synced cannot take over from its primary.
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
                self.nodes.append(self._stack.enter_context(server))
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            done = subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
            self.wait_healthy()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes) + "/0"

    def client(self, node: EmbeddedServer) -> redis.Redis:
        """A plain client of one node (for cluster commands)."""
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)

    def wait_healthy(self, timeout: float = 30) -> None:
        """Wait until every running node reports ``cluster_state:ok``, agrees on 3 primaries, and every
        replica has synced."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._ok(node) for node in self.nodes if node.running):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the local cluster did not become healthy")
            time.sleep(0.1)

    def _ok(self, node: EmbeddedServer) -> bool:
        with self.client(node) as c:
            info = c.execute_command("CLUSTER", "INFO")
            role = c.execute_command("ROLE")
        text = info.decode() if isinstance(info, bytes) else str(info)
        # A replica counts once it has synced with its primary (it could not take over before).
        synced = role[0] not in (b"slave", "slave") or role[3] in (b"connected", "connected")
        return "cluster_state:ok" in text and len(set(self.primaries(node).values())) == 3 and synced

    def primaries(self, via: EmbeddedServer | None = None) -> dict[int, int]:
        """Port of the primary per slot range start, as ``via`` (default: any running node) sees it.

        A resharded cluster has more ranges than primaries: count the primaries by their ports.
        """
        node = via or next(n for n in self.nodes if n.running)
        with self.client(node) as c:
            ranges = c.execute_command("CLUSTER", "SLOTS")
        out: dict[int, int] = {}
        for entry in ranges:
            out[int(entry[0])] = int(entry[2][1])
        return out

    def owner_port(self, slot: int) -> int:
        """Port of the primary that owns ``slot`` now."""
        node = next(n for n in self.nodes if n.running)
        with self.client(node) as c:
            for entry in c.execute_command("CLUSTER", "SLOTS"):
                if int(entry[0]) <= slot <= int(entry[1]):
                    return int(entry[2][1])
        raise RuntimeError(f"no node owns slot {slot}")

    def node_on(self, port: int) -> EmbeddedServer:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def replica_of(self, port: int) -> EmbeddedServer:
        """A replica of the primary on ``port``."""
        primary = self.node_on(port)
        with self.client(primary) as c:
            my_id = c.execute_command("CLUSTER", "MYID")
        my_id = my_id.decode() if isinstance(my_id, bytes) else my_id
        for node in self.nodes:
            if node.running and node.port != port:
                with self.client(node) as c:
                    role = c.execute_command("ROLE")
                    if role[0] in (b"slave", "slave") and int(role[2]) == port:
                        return node
        raise RuntimeError(f"no replica of {port} ({my_id})")

    def node_id(self, node: EmbeddedServer) -> str:
        """The cluster id of ``node``."""
        with self.client(node) as c:
            raw = c.execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def move_slot(self, slot: int, to_port: int, *, batch: int = 5, pause: float = 0.0) -> int:
        """Migrate ``slot`` and its keys to the primary on ``to_port``, as resharding does.

        The steps of ``redis-cli --cluster reshard`` for one slot: mark it
        importing on the target and migrating on the source, ``MIGRATE`` its
        keys ``batch`` at a time (``pause`` seconds apart, so clients meet the
        slot half moved), then give it to the target on every primary.
        Returns the number of keys moved.
        """
        source, target = self.node_on(self.owner_port(slot)), self.node_on(to_port)
        source_id, target_id = self.node_id(source), self.node_id(target)
        with self.client(target) as t, self.client(source) as s:
            t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            moved = 0
            while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
                s.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
                time.sleep(pause)
            t.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.nodes:
            if node.running and node not in (source, target):
                with self.client(node) as c:
                    if c.execute_command("ROLE")[0] in (b"master", "master"):
                        c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved
