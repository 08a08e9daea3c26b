"""Worker hosts on one machine: Linux network namespaces joined to the test's server by veth links.

Each host is a namespace of its own (``ip netns add``) with one veth pair: one
end in the namespace (``10.231.X.(4i+2)/30``), the other in the test's own
namespace (``10.231.X.(4i+1)/30``), where the test's server listens. A worker
started in a host reaches the server only over that link, so taking the link
down partitions that host alone, as a cut cable or a failed switch port would:
its packets are dropped, its connections hang rather than fail.

Everything is created by the lab and deleted when it closes; addresses are in
a private /24 chosen at random per lab and used only on these links, so no
traffic leaves the machine. Needs ``ip`` (iproute2) and the right to create
namespaces (root).
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Host", "NetnsLab"]

REPO = Path(__file__).resolve().parent.parent


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@dataclass
class Host:
    """One namespace: its name, the link's two ends and their addresses."""

    namespace: str
    outer_link: str
    inner_link: str
    server_address: str
    address: str


@dataclass
class NetnsLab:
    """``n_hosts`` namespaces, each linked to this one; use as a context manager."""

    n_hosts: int
    hosts: list[Host] = field(default_factory=list)

    def __enter__(self) -> NetnsLab:
        tag = uuid.uuid4().hex[:6]
        net = f"10.231.{random.randrange(1, 255)}"
        try:
            for i in range(self.n_hosts):
                host = Host(
                    f"rushpy-{tag}-{i}",
                    f"rph{tag}{i}",
                    f"rpn{tag}{i}",
                    f"{net}.{4 * i + 1}",
                    f"{net}.{4 * i + 2}",
                )
                _ip("netns", "add", host.namespace)
                self.hosts.append(host)
                _ip(
                    "link",
                    "add",
                    host.outer_link,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    host.inner_link,
                    "netns",
                    host.namespace,
                )
                _ip("addr", "add", f"{host.server_address}/30", "dev", host.outer_link)
                _ip("link", "set", host.outer_link, "up")
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/30", "dev", host.inner_link)
                _ip("-n", host.namespace, "link", "set", host.inner_link, "up")
                _ip("-n", host.namespace, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for host in self.hosts:
            # Deleting the namespace deletes its veth end, and with it the other end.
            subprocess.run(
                ["ip", "netns", "del", host.namespace], capture_output=True, timeout=30, check=False
            )
        self.hosts.clear()

    @property
    def server_addresses(self) -> list[str]:
        """The addresses the server must listen on (one per link, on this side)."""
        return [host.server_address for host in self.hosts]

    def partition(self, i: int) -> None:
        """Take host ``i``'s link down: its packets are dropped from now on."""
        _ip("link", "set", self.hosts[i].outer_link, "down")

    def restore(self, i: int) -> None:
        """Bring host ``i``'s link back."""
        _ip("link", "set", self.hosts[i].outer_link, "up")

    def spawn_worker(
        self, i: int, args: list[str], env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """``python -m rushpy.worker ARGS`` inside host ``i``, its output in ``log``.

        ``env`` is the worker's environment (``tests.helpers.worker_env``: server URL, ``tests`` importable).
        """
        command = [
            "ip",
            "netns",
            "exec",
            self.hosts[i].namespace,
            sys.executable,
            "-m",
            "rushpy.worker",
            *args,
        ]
        with open(log, "wb") as out:
            return subprocess.Popen(
                command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
