"""The networks on a server: found by their keys' ``{network}`` hash tag."""

from __future__ import annotations

import re

from redis.asyncio import Redis

__all__ = ["find_networks"]

_ID = re.compile(r"^(?P<prefix>.+?):\{(?P<network>.+?)\}:")


async def find_networks(client: Redis, prefix: str) -> list[str]:
    """Ids of the networks with keys under ``prefix``, sorted.

    ``SCAN`` walks the keyspace in steps and never blocks the server as
    ``KEYS`` would; it costs one pass over every key of the server, so call it
    on request (a command, a page load), not in a loop. On a Redis Cluster it
    sees the keys of the node the client talks to.
    """
    ids: set[str] = set()
    async for raw in client.scan_iter(match=f"{prefix}:{{*}}:*", count=1000):
        found = _ID.match(raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))
        if found and found["prefix"] == prefix:
            ids.add(found["network"])
    return sorted(ids)
