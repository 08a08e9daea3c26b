"""Commands that look and change nothing: ``list``, ``status``, ``workers``, ``tasks``, ``task``, ``logs``."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import anyio

from rushpy.cli.common import add_connection_arguments, add_network_arguments, open_client, open_network
from rushpy.cli.output import Output
from rushpy.controller import Controller
from rushpy.errors import ConfigError
from rushpy.keys import DEFAULT_PREFIX
from rushpy.log_methods import format_record
from rushpy.models import TaskState
from rushpy.overview import LOG_LEVELS, condition_line, network_statuses, status_counts
from rushpy.table import ROW_FIELDS

__all__ = ["COMMANDS", "add_parsers"]

WORKER_COLUMNS = {
    "worker_id": "worker",
    "state": "state",
    "hostname": "host",
    "pid": "pid",
    "heartbeat_age": "beat age s",
    "n_finished": "done",
    "n_failed": "failed",
    "running": "running",
    "last_error": "last error",
}
"""Columns of ``rushpy workers`` (``heartbeat_age``: seconds since the last beat, while it lives)."""
TASK_COLUMNS = {
    "key": "key",
    "state": "state",
    "worker_id": "worker",
    "started_at": "started",
    "finished_at": "finished",
}
"""Columns ``rushpy tasks`` always shows; then up to :data:`DATA_COLUMNS` inputs and results."""
DATA_COLUMNS = 4
"""Inputs and results ``rushpy tasks`` shows at most (``--json`` has them all)."""
LIST_COLUMNS = {
    "network": "network",
    "n_tasks": "tasks",
    "n_queued_tasks": "queued",
    "n_running_tasks": "running",
    "n_finished_tasks": "finished",
    "n_failed_tasks": "failed",
    "n_running_workers": "workers running",
    "n_workers": "workers",
}
_STATES = [s.value for s in TaskState]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the commands of this module to ``rushpy``'s subparsers."""
    p = sub.add_parser("list", help="networks on the server, with their counts")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default: {DEFAULT_PREFIX})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_connection_arguments(p)
    p = sub.add_parser("status", help="task counts per state and per worker")
    add_network_arguments(p)
    p.add_argument("--watch", action="store_true", help="print again every --interval seconds until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between two looks (default 2)")
    p = sub.add_parser("workers", help="the workers of a network")
    add_network_arguments(p)
    p = sub.add_parser("tasks", help="the tasks of a network (newest last)")
    add_network_arguments(p)
    p.add_argument("--state", choices=_STATES, action="append", help="only tasks in this state (repeatable)")
    p.add_argument("--limit", type=int, default=50, help="show the last N tasks (default 50; 0: all)")
    p = sub.add_parser("task", help="one task: inputs, results, conditions with tracebacks")
    add_network_arguments(p)
    p.add_argument("key", help="the task's key")
    p = sub.add_parser("logs", help="the log records of a network's workers")
    add_network_arguments(p)
    p.add_argument("--worker", action="append", help="only this worker (repeatable)")
    p.add_argument("--level", choices=list(LOG_LEVELS), default="debug", help="lowest level shown")
    p.add_argument("--limit", type=int, default=100, help="show the last N records (default 100; 0: all)")
    p.add_argument("--follow", action="store_true", help="keep printing new records until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between two looks with --follow")


# -- list -------------------------------------------------------------------------------------

async def _list(options: argparse.Namespace) -> int:
    out = Output(options.json)
    async with open_client(options) as client:
        found = await network_statuses(client, options.prefix)
    rows = [{"network": network_id, **asdict(status)} for network_id, status in found]
    if out.as_json:
        out.json(rows)
    elif not rows:
        out.line(f"no networks with prefix {options.prefix!r} on this server")
    else:
        out.table(rows, LIST_COLUMNS)
    return 0


# -- status -----------------------------------------------------------------------------------
async def _status(options: argparse.Namespace) -> int:
    out = Output(options.json)
    if options.interval <= 0:
        raise ConfigError(f"invalid --interval {options.interval}: use a positive number of seconds")
    async with open_network(options) as rush:
        while True:
            if options.watch and not out.as_json and out.stream.isatty():
                out.clear()  # a terminal shows the latest look only
            await _print_status(rush, out)
            if not options.watch:
                return 0
            await anyio.sleep(options.interval)


async def _print_status(rush: Controller, out: Output) -> None:
    raw = await rush.status()
    status = asdict(raw)
    workers = await rush.worker_info()
    per_worker = [
        {
            "worker_id": w["worker_id"],
            "state": w["state"],
            "running": len(w.get("running") or []),
            "n_finished": w.get("n_finished"),
            "n_failed": w.get("n_failed"),
        }
        for w in workers
    ]
    if out.as_json:
        out.json({"network": rush.network_id, "counts": status, "workers": per_worker})
        return
    now = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    counts = status_counts(raw)
    tasks = dict(counts["tasks"])
    tasks = {"queued": tasks.pop("queued"), "of which priority": raw.n_queued_priority_tasks, **tasks}
    out.table([tasks], list(tasks), title=f"network {rush.network_id} at {now} UTC: tasks")
    out.table([counts["workers"]], list(counts["workers"]), title="workers")
    if per_worker:
        out.table(per_worker, list(per_worker[0]))


# -- workers ----------------------------------------------------------------------------------
async def _workers(options: argparse.Namespace) -> int:
    out = Output(options.json)
    async with open_network(options) as rush:
        rows = (await rush.worker_info()).rows
    now = dt.datetime.now(dt.UTC)
    for row in rows:
        beat = row.get("last_beat")
        row["heartbeat_age"] = (
            round((now - beat).total_seconds(), 1) if isinstance(beat, dt.datetime) else None
        )
        error = row.get("last_error")
        if isinstance(error, dict):
            row["last_error"] = f"{error.get('type')}: {error.get('message')}"
        running = row.get("running") or []
        row["running"] = len(running) if not out.as_json else running
    if out.as_json:
        out.json(rows)
    else:
        out.table(rows, WORKER_COLUMNS, title=f"{len(rows)} workers")
    return 0


# -- tasks ------------------------------------------------------------------------------------
async def _tasks(options: argparse.Namespace) -> int:
    out = Output(options.json)
    if options.limit < 0:
        raise ConfigError(f"invalid --limit {options.limit}: use 0 (all) or a positive number")
    async with open_network(options) as rush:
        table = await rush.fetch_tasks_with_state(options.state)
    rows = table.rows[-options.limit :] if options.limit else table.rows
    if out.as_json:
        out.json(rows)
        return 0
    # Inputs and results: the columns that are not task metadata.
    data = [c for c in table.columns if c not in TASK_COLUMNS and c not in ROW_FIELDS][:DATA_COLUMNS]
    for row in rows:
        if isinstance(row.get("condition"), dict):
            row["condition"] = condition_line(row["condition"])
    shown = f"last {len(rows)} of {len(table)}" if len(rows) < len(table) else f"{len(table)}"
    columns = {**TASK_COLUMNS, **{c: c for c in data}, "condition": "condition"}
    out.table(rows, columns, title=f"{shown} tasks")
    return 0


# -- task -------------------------------------------------------------------------------------
async def _task(options: argparse.Namespace) -> int:
    out = Output(options.json)
    async with open_network(options) as rush:
        row = await rush.fetch_task(options.key)
    if out.as_json:
        out.json(row)
        return 0
    history = row.pop("conditions", None) or []
    row.pop("condition", None)  # the last one of the history
    out.fields(row, title=f"task {options.key}")
    for i, condition in enumerate(history, 1):
        if isinstance(condition, dict):
            out.fields(condition, title=f"condition {i} of {len(history)}")
    return 0


# -- logs -------------------------------------------------------------------------------------
async def _logs(options: argparse.Namespace) -> int:
    out = Output(options.json)
    if options.limit < 0:
        raise ConfigError(f"invalid --limit {options.limit}: use 0 (all) or a positive number")
    lowest = LOG_LEVELS[options.level]
    async with open_network(options) as rush:
        # Every record so far (the last --limit of them shown), then only new ones:
        # read_new_log keeps a cursor per worker, so a record written late still comes once.
        rows = _at_least(await rush.read_new_log(options.worker), lowest)
        rows = rows[-options.limit :] if options.limit else rows
        if out.as_json and not options.follow:
            out.json(rows)
            return 0
        _print_logs(out, rows)
        while options.follow:
            await anyio.sleep(options.interval)
            _print_logs(out, _at_least(await rush.read_new_log(options.worker), lowest))
    return 0


def _at_least(table: Sequence[dict[str, Any]], lowest: int) -> list[dict[str, Any]]:
    return [row for row in table if LOG_LEVELS.get(str(row.get("level")), 0) >= lowest]


def _print_logs(out: Output, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if out.as_json:
            out.json(row)  # one line per record while following
        else:
            out.line(format_record(row))


COMMANDS = {
    "list": _list,
    "status": _status,
    "workers": _workers,
    "tasks": _tasks,
    "task": _task,
    "logs": _logs,
}
"""Each command's coroutine, by name."""
