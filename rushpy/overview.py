"""How the command line and the dashboard summarise a network for people: one wording for both.

Counts grouped for display, a failure as one line, a heartbeat's age, log
levels by rank, and the networks of a server with their counts (one round
trip each, without opening a controller per network).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from rushpy.keys import Keys
from rushpy.store import NetworkStatus, Store, find_networks

__all__ = ["LOG_LEVELS", "condition_line", "heartbeat_age", "network_statuses", "status_counts"]

LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
"""Log levels by rank, lowest first (a record is shown at its level and above)."""


def condition_line(condition: Any) -> str | None:
    """A failure (a condition, or a worker's last error) as ``Type: message``; ``None`` for none."""
    if isinstance(condition, Mapping):
        return f"{condition.get('type')}: {condition.get('message')}"
    return None


def heartbeat_age(now: dt.datetime, last_beat: Any) -> float | None:
    """Seconds since a worker's last beat, to a tenth (``None`` while it has no live heartbeat)."""
    return round((now - last_beat).total_seconds(), 1) if isinstance(last_beat, dt.datetime) else None


def status_counts(status: NetworkStatus) -> dict[str, dict[str, int]]:
    """Counts per task state and per worker state, as the views show them."""
    return {
        "tasks": {
            "queued": status.n_queued_tasks,
            "running": status.n_running_tasks,
            "finished": status.n_finished_tasks,
            "failed": status.n_failed_tasks,
            "all": status.n_tasks,
        },
        "workers": {
            "running": status.n_running_workers,
            "terminated": status.n_terminated_workers,
            "killed": status.n_killed_workers,
            "lost": status.n_lost_workers,
            "all": status.n_workers,
        },
    }


async def network_statuses(client: Redis, prefix: str) -> list[tuple[str, NetworkStatus]]:
    """Every network with keys under ``prefix`` (:func:`~rushpy.store.find_networks`) and its counts."""
    found: list[tuple[str, NetworkStatus]] = []
    for network_id in await find_networks(client, prefix):
        store = Store(client, Keys(network_id, prefix))
        if not found:
            await store.load_scripts()  # once per client: the scripts serve every network
        found.append((network_id, await store.reads.status()))
    return found
