"""The dashboard served for a test: uvicorn in a thread on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from rushpy import RedisConfig
from rushpy.dashboard import create_app

__all__ = ["running_dashboard"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_dashboard(config: RedisConfig, **options: Any) -> Iterator[str]:
    """Serve ``create_app(config, **options)``; yields its base URL and stops it afterwards."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, **options),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            # Open event streams (a page still showing) would hold a graceful shutdown forever.
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
