"""The server the examples use: ``$RUSHPY_REDIS_URL`` (or ``$REDIS_URL``) when set, else an embedded one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import rushpy
from rushpy.config import configured_url


@contextmanager
def server_config() -> Iterator[rushpy.RedisConfig]:
    """Yield the configured server's settings, or start an embedded server for the block."""
    url = configured_url()
    if url:
        yield rushpy.RedisConfig.from_url(url)
        return
    with rushpy.EmbeddedServer() as server:
        yield server.config
