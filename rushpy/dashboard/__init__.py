"""A live web dashboard of rushpy networks: ``rushpy dashboard`` (the ``dashboard`` extra).

One page shows, for one network at a time (a chooser lists every network on
the server): counts per state and throughput over time, the workers, a task
table filtered by state and worker with each task's detail (inputs, results,
extras, every condition with its traceback), for numeric results the
optimisation history (each result over finish time, the best so far, the
inputs against the result), and the log tail. It updates live through
server-sent events, keeps working while the Redis server restarts or the
network is reset, and reads only bounded pages, so it stays responsive with
100,000 tasks. It is read-only unless started with a token
(``RUSHPY_DASHBOARD_TOKEN``), which the page must send to stop workers,
cancel or retry tasks. Assets ship in the package: no build step, no CDN.

Run it with :func:`serve` or ``rushpy dashboard [--network ID] [--host 127.0.0.1] [--port 8080]``;
embed the app in another ASGI server with :func:`~rushpy.dashboard.app.create_app`.
"""

from __future__ import annotations

from rushpy.config import RedisConfig
from rushpy.dashboard.app import create_app
from rushpy.keys import DEFAULT_PREFIX

__all__ = ["ENV_TOKEN", "create_app", "serve"]

ENV_TOKEN = "RUSHPY_DASHBOARD_TOKEN"  # noqa: S105 (the variable's name, not a token)
"""Environment variable holding the token that enables actions (never a command-line flag)."""


def serve(
    config: RedisConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    network: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    token: str | None = None,
) -> None:
    """Serve the dashboard until interrupted (uvicorn).

    Args:
        config: The Redis server.
        host: Address to listen on (default loopback only: the page shows task
            data; put it behind an authenticating proxy to share it).
        port: TCP port.
        network: The network shown first.
        prefix: The networks' key prefix.
        token: Enables actions for requests that send it (default: read-only).

    """
    import uvicorn  # noqa: PLC0415 - the dashboard extra

    app = create_app(config, network=network, prefix=prefix, token=token)
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
