"""``redis+cluster://`` URLs: a Redis Cluster named by some of its nodes.

``redis+cluster://[user@]host:port,host:port/0`` (``rediss+cluster://`` with
TLS) names seed nodes of a cluster; any one that answers is enough to find
the others. rushpy keeps every key of a network in one hash slot (the
``{network}`` hash tag), so a network's clients talk to one node: the primary
that owns that slot (:mod:`rushpy.connection.cluster`).
"""

from __future__ import annotations

from rushpy.errors import ConfigError

__all__ = ["CLUSTER_SCHEMES", "join_cluster_url", "split_cluster_url"]

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""Cluster URL schemes and the scheme of one node's URL."""


def _parts(rest: str) -> tuple[str, str, str]:
    """``auth@``, the host list and the path-and-query of a URL after its ``scheme://``.

    The hosts run from after the credentials (up to the last ``@``) to the path or query.
    """
    at = rest.rfind("@")
    auth, hosts = rest[: at + 1], rest[at + 1 :]
    end = min((i for i in (hosts.find("/"), hosts.find("?")) if i >= 0), default=len(hosts))
    return auth, hosts[:end], hosts[end:]


def split_cluster_url(url: str) -> tuple[str, tuple[str, ...]] | None:
    """``(the URL of the first seed node, every seed as "host:port")``; ``None`` if ``url`` names no cluster.

    Raises:
        ConfigError: a cluster URL without seeds, or with a seed that is not ``host:port``.

    """
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    if plain is None or not sep:
        return None
    auth, netloc, tail = _parts(rest)
    seeds = tuple(seed.strip() for seed in netloc.split(",") if seed.strip())
    if not seeds:
        raise ConfigError(
            f"invalid cluster URL {scheme}://...: no nodes; e.g. redis+cluster://10.0.0.1:7000,10.0.0.2:7000/0"
        )
    for seed in seeds:
        host, colon, port = seed.rpartition(":")
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(
                f"invalid cluster node {seed!r} in a {scheme}:// URL: give every node as host:port, "
                "comma-separated, e.g. redis+cluster://10.0.0.1:7000,10.0.0.2:7000/0"
            )
    return f"{plain}://{auth}{seeds[0]}{tail}", seeds


def join_cluster_url(node_url: str, seeds: tuple[str, ...]) -> str:
    """The cluster URL of ``seeds`` from the URL of one node (``redis://auth@host:port/db?...``)."""
    scheme, _, rest = node_url.partition("://")
    auth, _, tail = _parts(rest)
    return f"{scheme}+cluster://{auth}{','.join(seeds)}{tail}"
